"""What every claim test does after computing its result: the settings it records, the
golden regression for the committed fixtures, and the verdict policy.

Verdict policy (the same for every claim):
- committed tiny fixtures: where `fixtures/golden/` holds the expected verdict and numbers for
  the setting (the CI settings always do: tests/test_goldens.py), the test asserts they
  reproduce (regression), whatever the verdict; `--update-golden` rewrites them. Other
  settings of the tiny fixtures follow the rule below;
- other models: 'supported' passes; 'not supported' fails with the numbers in the message;
  'untestable' (the model never learned its rare tokens) is recorded and reported as an
  expected failure (xfail) with the numbers - neither a pass nor a fail.

It also holds the pure parsing/resolution of the claim options declared in the root
conftest (`--routing-layers`, `--routing-rows`, `--routing-scope`, `--eval-rows`,
`--common-budget`), so they are unit-testable without a model (tests/test_claim_options.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from harness.data.rarity import RaritySpec
from harness.data.tokenizer import fixtures_dir
from harness.errors import BadInputError
from harness.stats.precondition import LearnedPrecondition
from harness.stats.result import TestResult

GOLDEN_RTOL = 1e-3
GOLDEN_ATOL = 1e-5


def settings_for(prep, rarity: RaritySpec, **extra) -> dict:
    info = prep.facade.info()
    return {"rarity": {"q": rarity.q, "which": rarity.which, "elbow": rarity.elbow},
            "eval": dict(prep.spec.__dict__), "n_pos": prep.n_pos,
            "frequency": prep.freq_note, "dtype": str(info.get("dtype")),
            "processing": info.get("processing"), "device": str(info.get("device")), **extra}


def golden_path(claim: str, model_name: str, seed: int, rarity: RaritySpec) -> Path:
    return (fixtures_dir() / "golden" / claim /
            f"{model_name}-seed{seed}-{rarity.which}-q{rarity.q:g}.json")


def _numbers(result: TestResult) -> dict[str, float]:
    return {k: getattr(result, k) for k in ("statistic", "p_value", "effect", "ci_low", "ci_high")}


def check_verdict(request, result: TestResult, *, claim: str, model_name: str, seed: int,
                  rarity: RaritySpec) -> None:
    """Apply the verdict policy above (call after record_claim). Goldens were written for the
    default evaluation set: with --eval-rows / --common-budget the generic policy applies."""
    config = request.config
    overridden = any(config.getoption(o, default=None) is not None
                     for o in ("--eval-rows", "--common-budget"))
    if model_name.startswith("tiny-") and not overridden:
        path = golden_path(claim, model_name, seed, rarity)
        if request.config.getoption("--update-golden"):
            path.parent.mkdir(parents=True, exist_ok=True)
            numbers = {k: (None if _missing(v) else v) for k, v in _numbers(result).items()}
            path.write_text(json.dumps({"verdict": result.verdict, **numbers}, indent=2) + "\n")
            return
        if path.is_file():
            _assert_golden(result, json.loads(path.read_text()))
            return
    if result.verdict == "untestable":
        pytest.xfail(f"untestable on {model_name}: {result.details.get('message', result)}")
    assert result.supported, f"claim not supported on {model_name}: {result}\n" \
                             f"{result.details.get('message', '')}"


def _assert_golden(result: TestResult, golden: dict) -> None:
    """Verdict equal, numbers within GOLDEN_RTOL/ATOL (NaN only where the golden has none)."""
    assert result.verdict == golden["verdict"], (
        f"verdict changed: {result.verdict!r} != golden {golden['verdict']!r}\n{result}")
    for key, want in _numbers(result).items():
        ref = golden[key]
        if _missing(ref) or _missing(want):
            assert _missing(ref) and _missing(want), f"{key}: {want} vs golden {ref}"
            continue
        assert want == pytest.approx(ref, rel=GOLDEN_RTOL, abs=GOLDEN_ATOL), (
            f"{key} = {want} differs from golden {ref}\n{result}")


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def apply_precondition(result: TestResult, pre: LearnedPrecondition) -> TestResult:
    """An unlearned model makes any claim 'untestable'; its numbers stay in the result."""
    details = {**result.details, "precondition": pre.to_dict()}
    if pre.ok:
        return dataclasses.replace(result, details=details)
    details["message"] = (f"{pre.message}. Numbers shown for information only; without the "
                          f"precondition the verdict would be {result.verdict!r}"
                          + (f" ({result.details['message']})" if result.details.get("message") else ""))
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
    --update-golden, overwrites) those goldens: `bos-single-query`, `bos-rows4-last2`."""
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
