"""What every claim test does after computing its result: the settings it records, the
golden regression for the committed fixtures, and the verdict policy.

Verdict policy (the same for every claim):
- committed tiny fixtures: where `fixtures/golden/` holds the expected verdict and numbers for
  the setting (the CI settings always do: tests/test_goldens.py), the test asserts they
  reproduce (regression), whatever the verdict; `python -m harness.goldens` rewrites them. Other
  settings of the tiny fixtures follow the rule below;
- other models (harness.verdicts.pytest_outcome): 'supported' passes; 'refuted' fails with
  the numbers in the message; 'inconclusive' (the data cannot decide) and 'untestable' (the
  model never learned its rare tokens) are recorded and reported as expected failures (xfail)
  with the reason and the numbers - neither a pass nor a fail;
- under --verdicts-only (what `rarebench run` passes) nothing is asserted: the verdict is
  recorded as a result, and a golden comparison is noted in the recorded details
  (`details['golden'] = {'matches': ..., 'diff': ...}`), so only an exception fails a test.

It also holds the pure parsing/resolution of the claim options declared in the root
conftest (`--routing-layers`, `--routing-rows`, `--routing-scope`, `--eval-rows`,
`--common-budget`), so they are unit-testable without a model (tests/test_claim_options.py).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from harness import goldens
from harness.data.rarity import RaritySpec
from harness.data.tokenizer import fixtures_dir
from harness.errors import BadInputError
from harness.stats.precondition import LearnedPrecondition
from harness.stats.result import TestResult
from harness.verdicts import pytest_outcome



def settings_for(prep, rarity: RaritySpec, **extra) -> dict:
    info = prep.facade.info()
    return {"rarity": {"q": rarity.q, "which": rarity.which, "elbow": rarity.elbow,
                       "ties": rarity.ties},
            "eval": dict(prep.spec.__dict__), "n_pos": prep.n_pos,
            "frequency": prep.freq_note, "dtype": str(info.get("dtype")),
            "processing": info.get("processing"), "device": str(info.get("device")), **extra}


def claim_eval_spec(model_name: str, *, seed: int = 0, quick: bool = False,
                    which: tuple[str, ...] = ("target",), qs: tuple[float, ...] = (15.0, 50.0),
                    eval_rows=None, common_budget=None, mu_over: str = "all"):
    """The EvalSpec every claim case of a (model, seed) shares under the given options (the
    claims' `prepared` fixture and the golden generator both call this, so they agree)."""
    from harness import pipeline

    spec = pipeline.default_spec_for(model_name, quick=quick, cover_q=max(qs),
                                     cover_which=tuple(which))
    overrides = parse_eval_overrides(eval_rows, common_budget)
    return pipeline.EvalSpec(**{**spec.__dict__, **overrides, "seed": spec.seed + seed,
                                "mu_over": mu_over})


def golden_path(claim: str, model_name: str, seed: int, rarity: RaritySpec) -> Path:
    return (fixtures_dir() / "golden" / claim /
            f"{model_name}-seed{seed}-{rarity.tag}.json")


def golden_applies(config, model_name: str, seed: int, spec) -> bool:
    """A golden holds only for the exact settings that made it: a committed fixture, the CI
    evaluation set (rows, positions, mu, seed: `spec` equal to the default claim spec) and
    the full permutation/bootstrap counts (no --quick) and CI's --power-reps. Rarity and
    claim variants are part of
    the golden's file name. Anything else follows the generic verdict policy."""
    from harness.claimset import CI_POWER_REPS

    if not model_name.startswith("tiny-") or config.getoption("--quick"):
        return False
    if config.getoption("--power-reps", default=CI_POWER_REPS) != CI_POWER_REPS:
        return False
    return spec == claim_eval_spec(model_name, seed=seed)


def check_verdict(request, result: TestResult, *, claim: str, model_name: str, seed: int,
                  rarity: RaritySpec, spec=None, pinned: tuple[str, ...] = ()) -> None:
    """Apply the verdict policy above (call after record_claim). `spec` is the case's
    EvalSpec (goldens apply only to the settings that made them, see golden_applies);
    `pinned` names the detail values the golden pins besides the main numbers."""
    # imported here: a module-level import would load the plugin before pytest can rewrite it
    from harness.report.plugin import annotate_claim, verdicts_only

    config = request.config
    if golden_applies(config, model_name, seed, spec):
        path = golden_path(claim, model_name, seed, rarity)
        if path.is_file():
            golden = json.loads(path.read_text())
            if verdicts_only(config):  # `rarebench run`: note the comparison, do not assert it
                diffs = goldens.mismatches(result, golden, pinned)
                annotate_claim(request, golden={"matches": not diffs, "diff": diffs,
                                                "path": str(path)},
                               caveat=(f"differs from the committed golden {path.name}: "
                                       + "; ".join(diffs)) if diffs else None)
                return
            _assert_golden(result, golden, pinned)
            return
    if verdicts_only(config):
        return  # a verdict is a result (recorded by record_claim), not a test outcome
    outcome = pytest_outcome(result.verdict)  # supported pass, refuted fail, else xfail
    if outcome == "xfail":
        pytest.xfail(f"{result.verdict} on {model_name}: {result.details.get('message', result)}")
    assert outcome == "pass", f"claim refuted on {model_name}: {result}\n" \
                              f"{result.details.get('message', '')}"


def _assert_golden(result: TestResult, golden: dict, pinned: tuple[str, ...] = ()) -> None:
    """Verdict equal, every pinned number within the golden's own tolerance (harness.goldens:
    derived from measured numeric noise); regenerate with `python -m harness.goldens`."""
    diffs = goldens.mismatches(result, golden, pinned)
    assert not diffs, ("differs from golden (regenerate with `python -m harness.goldens` only "
                       "after a deliberate change):\n  " + "\n  ".join(diffs) + f"\n{result}")


def apply_precondition(result: TestResult, pre: LearnedPrecondition) -> TestResult:
    """An unlearned model makes any claim 'untestable'; its numbers stay in the result, and
    so does the verdict the rule would give without the precondition
    (`details['verdict_without_precondition']`, pinned by the goldens)."""
    details = {**result.details, "precondition": pre.to_dict(),
               "verdict_without_precondition": result.verdict}
    if pre.ok:
        return dataclasses.replace(result, details=details)
    would = result.details.get("message") or result.details.get("decision", {}).get("reason")
    details["message"] = (f"{pre.message}. Numbers shown for information only; without the "
                          f"precondition the verdict would be {result.verdict!r}"
                          + (f" ({would})" if would else ""))
    if details.get("decision"):
        details["decision"] = {**details["decision"], "verdict": "untestable",
                               "reason": details["message"]}
    return dataclasses.replace(result, verdict="untestable", details=details)


# -- claim options (root conftest) -----------------------------------------------------------
ROUTING_SCOPES = ("all-positions", "single-query")
DEFAULT_ROUTING_SCOPE = "all-positions"
ROUTING_LAST_K = 6  # deep models on CPU: the last 6 layers, as the paper did for GPT-2 XL
ROUTING_DEEP_LAYERS = 2 * ROUTING_LAST_K  # "deep" = more layers than this
MIN_EVAL_ROWS = 4  # EvalSpec's minimum (split-half needs rows)


def is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def _positive_int(option: str, value, allowed: str) -> int:
    try:
        k = int(str(value).strip())
    except ValueError:
        k = None
    if k is None or k < 1:
        raise BadInputError(f"{option}: got {value!r}; use {allowed}")
    return k


def parse_routing_layers(text) -> str | int:
    """--routing-layers: 'auto', 'all' or a positive int k (the last k layers)."""
    value = str(text).strip().lower()
    if value in ("auto", "all"):
        return value
    return _positive_int("--routing-layers", text, "'auto', 'all' or a positive integer k "
                                                   "(ablate the heads of the last k layers)")


def resolve_routing_layers(option, n_layers: int, device: str) -> int | None:
    """`last_k_layers` for head ablation: None = every layer, else k < n_layers.

    'auto': every layer on CUDA; on CPU every layer of models with <= 12 layers and the last 6
    layers of deeper ones. 'all': every layer. k: the last k layers (every layer if k >= n_layers).
    """
    choice = parse_routing_layers(option)
    if choice == "all":
        return None
    if choice == "auto":
        if is_cuda(device) or n_layers <= ROUTING_DEEP_LAYERS:
            return None
        return ROUTING_LAST_K
    return None if choice >= n_layers else choice


def layers_label(last_k: int | None) -> str:
    """The `layers` entry of the recorded settings: 'all' or 'last k'."""
    return "all" if last_k is None else f"last {last_k}"


def parse_routing_rows(text) -> str | int:
    """--routing-rows: 'auto' or a positive int."""
    value = str(text).strip().lower()
    if value == "auto":
        return value
    return _positive_int("--routing-rows", text, "'auto' or a positive integer (rows ablated)")


def resolve_routing_rows(option, n_rows_available: int, deep: bool, quick: bool,
                         device: str) -> int:
    """Rows whose positions get the head ablation, capped at `n_rows_available`.

    'auto': on CUDA every row of the evaluation set; on CPU 12 (8 with --quick) for deep models
    (> 12 layers) and 64 (32 with --quick) otherwise. An int: that many rows.
    """
    choice = parse_routing_rows(option)
    if choice == "auto":
        if is_cuda(device):
            return n_rows_available
        choice = (8 if quick else 12) if deep else (32 if quick else 64)
    return min(n_rows_available, choice)


def routing_variant(mode: str, scope: str, n_rows: int, last_k: int | None,
                    default_rows: int, default_last_k: int | None) -> str:
    """Claim 3's golden key under its claim: `<mode>` for the default options (all-positions,
    the CPU 'auto' rows and layers), else suffixed so another setting never meets (or, with
    the golden generator, overwrites) those goldens: `bos-single-query`, `bos-rows4-last2`."""
    variant = mode if scope == DEFAULT_ROUTING_SCOPE else f"{mode}-{scope}"
    if (n_rows, last_k) != (default_rows, default_last_k):
        variant += f"-rows{n_rows}-{layers_label(last_k).replace(' ', '')}"
    return variant


def parse_routing_scopes(text) -> list[str]:
    """--routing-scope: comma list of 'all-positions' and/or 'single-query' (in order, unique)."""
    scopes = list(dict.fromkeys(s.strip() for s in str(text).split(",") if s.strip()))
    unknown = [s for s in scopes if s not in ROUTING_SCOPES]
    if unknown or not scopes:
        raise BadInputError(f"--routing-scope: got {text!r}; use a comma list of "
                            f"{', '.join(ROUTING_SCOPES)}")
    return scopes


ROUTING_MODES = ("bos", "zero", "mean")  # claim 3's head ablations (claims/test_no_routing.py)


def parse_routing_modes(text) -> list[str]:
    """--routing-modes: comma list of bos, zero, mean (in this order, unique)."""
    modes = {s.strip() for s in str(text).split(",") if s.strip()}
    unknown = sorted(modes - set(ROUTING_MODES))
    if unknown or not modes:
        raise BadInputError(f"--routing-modes: got {text!r}; use a comma list of "
                            f"{', '.join(ROUTING_MODES)}")
    return [m for m in ROUTING_MODES if m in modes]


def parse_power_reps(text) -> int:
    """--power-reps: a positive integer (own-data power replicates; as the root conftest's)."""
    return _positive_int("--power-reps", text, "a positive integer")


def parse_eval_overrides(eval_rows=None, common_budget=None) -> dict[str, int]:
    """--eval-rows / --common-budget -> EvalSpec overrides ({} for the defaults)."""
    out: dict[str, int] = {}
    if eval_rows is not None:
        n = _positive_int("--eval-rows", eval_rows, f"an integer >= {MIN_EVAL_ROWS}")
        if n < MIN_EVAL_ROWS:
            raise BadInputError(f"--eval-rows: got {eval_rows!r}; use an integer >= "
                                f"{MIN_EVAL_ROWS} (split-half reliability needs rows)")
        out["n_rows"] = n
    if common_budget is not None:
        out["common_budget"] = _positive_int("--common-budget", common_budget,
                                             "a positive integer (sampled common positions)")
    return out


def first_result(out):
    """The TestResult of a claim's compute() output (result, analysis), or None (no case)."""
    return None if out is None else out[0]


def plateau_crossfit(prep, rarity: RaritySpec, seed: int, min_rare: int):
    """Claim 2's cross-fit of the plateau group (selected on one row half, measured on the
    other, with its selection null), as claims 4 and 5 build on it; None when fewer than
    `min_rare` rare positions or 4 rows hold them. Memoised on the Prepared, so the selection
    null is computed once per (rarity, seed) however many claims use it."""
    from harness import pipeline
    from harness.analyses.clustering import crossfit_analysis
    from harness.analyses.regimes import plateau_neurons

    rare, common = prep.masks(rarity)
    inf = prep.influence
    if rare.sum() < min_rare or np.unique(inf.row[rare]).size < 4:
        return None
    key = ("plateau_crossfit", rarity.tag, seed)
    if key not in prep.extras:
        prep.extras[key] = crossfit_analysis(
            pipeline.final_activations(prep), inf.delta, inf.row, rare, common,
            lambda mask: plateau_neurons(inf.delta, mask, sign="boost", method="fixed"),
            sign="boost", n_selection=200, n_matched=2, n_random=2, n_boot=2, legacy=None,
            graph_stats=False, seed=seed)
    return prep.extras[key]
