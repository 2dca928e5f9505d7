"""The Python API: run the claim suite, read its results, list the claims, load a model.

    >>> import harness
    >>> df = harness.run_claims(models="tiny-gpt2", claims="dual-regimes", quick=True)
    >>> df[["model", "claim", "rarity", "verdict", "effect", "ci_low", "ci_high", "p"]]
    >>> harness.read_results("reports/example/results.json").groupby("claim").verdict.value_counts()

`run_claims` runs exactly what `rarebench run` runs (it builds that command's arguments and
calls its entry, harness.report.cli.run_command, which calls pytest on claims/), writes the
same reports/<run-id>/REPORT.md and results.json, and returns the results as a DataFrame.
`read_results` turns any results.json (schema 1 or 2; version 1 is upgraded on load) into the
same DataFrame. One row per claim result; the run's skips and errors, its settings and paths
are in `df.attrs`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from harness.errors import BadInputError

if TYPE_CHECKING:  # pandas is imported only when a function here is called
    import pandas as pd

__all__ = ["run_claims", "read_results", "results_frame", "list_claims", "load_model",
           "run_argv", "COLUMNS"]

# DataFrame columns, in order (details/settings/figures hold the full record's dicts)
COLUMNS = ["model", "claim", "rarity", "seed", "variant", "verdict", "effect", "ci_low",
           "ci_high", "p", "q", "power", "power_se", "fpr", "mde80", "sesoi", "direction",
           "alpha", "effect_name", "rarity_which", "rarity_q", "revision", "test_outcome",
           "wall_time_s", "run_id", "nodeid", "message", "settings", "details", "figures"]

# `rarebench run` options that run_claims passes through as keyword arguments (name -> flag)
_OPTIONS = {"groups": "--groups", "eval_rows": "--eval-rows",
            "common_budget": "--common-budget", "routing_layers": "--routing-layers",
            "routing_rows": "--routing-rows", "routing_modes": "--routing-modes",
            "routing_scope": "--routing-scope", "power_reps": "--power-reps",
            "rarity_ties": "--rarity-ties", "mu_over": "--mu-over",
            "device": "--device", "cache_dir": "--cache-dir", "keyword": "-k",
            "run_id": "--run-id"}


def _comma(value: Any) -> str:
    """'a,b', ['a', 'b'], 50, (15, 50) -> 'a,b' / '50' / '15,50'."""
    if isinstance(value, (str, bytes)):
        return str(value)
    if isinstance(value, Iterable):
        return ",".join(str(v) for v in value)
    return str(value)


def _claim_keyword(claims: Any) -> str:
    """-k expression selecting the named claims ('dual-regimes', 'claim 2', 3, ...)."""
    from harness.report.schema import claim_key

    known = list(list_claims(as_frame=False))
    names = [c.strip() for c in _comma(claims).split(",") if c.strip()]
    keys = [claim_key(n) for n in names]
    unknown = [n for n, k in zip(names, keys) if k not in known]
    if not keys or unknown:
        raise BadInputError(f"claims: unknown {', '.join(unknown) or '(none given)'}; known: "
                            f"{', '.join(known)}")
    return " or ".join("test_" + k.replace("-", "_") for k in dict.fromkeys(keys))


def run_argv(models: Any = None, claims: Any = None, rarity_which: Any = None,
             rarity_q: Any = None, seeds: Any = None, out: str | Path = "reports",
             quick: bool = False, **options: Any) -> list[str]:
    """The `rarebench run` arguments that run_claims(...) with these arguments runs.

    Lists are joined with commas; None leaves `rarebench run`'s default. `claims` (claim keys,
    numbers or names) becomes a -k expression, and-ed with `keyword=` when both are given.
    Other keyword options: the `rarebench run` flags with '_' for '-' (groups, eval_rows,
    common_budget, routing_layers, routing_rows, routing_modes, routing_scope, power_reps,
    rarity_ties, mu_over, device, cache_dir, keyword, run_id).
    """
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise BadInputError(f"run_claims: unknown option(s) {', '.join(unknown)}; known: "
                            f"{', '.join(sorted(_OPTIONS))}")
    argv = ["run", "--out", str(out)]
    for flag, value in (("--models", models), ("--rarity-which", rarity_which),
                        ("--rarity-q", rarity_q), ("--seeds", seeds)):
        if value is not None:
            argv += [flag, _comma(value)]
    keyword = options.pop("keyword", None)
    if claims is not None:
        selected = _claim_keyword(claims)
        keyword = f"({selected}) and ({keyword})" if keyword else selected
    if keyword:
        argv += ["-k", keyword]
    for name, value in options.items():
        if value is not None:
            argv += [_OPTIONS[name], _comma(value)]
    if quick:
        argv.append("--quick")
    return argv


def run_claims(models: Any = None, claims: Any = None, rarity_which: Any = None,
               rarity_q: Any = None, seeds: Any = None, out: str | Path = "reports",
               quick: bool = False, **options: Any) -> "pd.DataFrame":
    """Run the claim suite as `rarebench run` does and return its results as a DataFrame.

    models: names (list or comma string; default: `rarebench run`'s, the offline fixtures
    plus smollm2-135m when installed); claims: claim keys/numbers (default all); rarity_which
    ('target', 'current', 'both'), rarity_q (percentiles), seeds; out: the report directory
    (the run writes out/<run-id>/REPORT.md and results.json); quick: fewer resamples; other
    `rarebench run` options as keywords (see run_argv). Bad input raises
    harness.errors.BadInputError before anything runs. A claim test that errored does not
    raise: it is listed in df.attrs['errors'] (and df.attrs['exit_code'] is 1, as for the
    command); Ctrl-C or SIGTERM raises KeyboardInterrupt (the run's results.json then holds the
    claims that finished, marked interrupted).
    """
    from harness.cli import build_parser
    from harness.report.cli import run_command
    from harness.report.runinfo import new_run_id

    options = dict(options)
    options["run_id"] = options.get("run_id") or new_run_id()
    argv = run_argv(models, claims, rarity_which, rarity_q, seeds, out, quick, **options)
    args = build_parser().parse_args(argv)
    rc = run_command(args)
    run_dir = Path(args.out).resolve() / args.run_id
    if rc in (130, 143):  # Ctrl-C / SIGTERM: stop the caller too
        raise KeyboardInterrupt(f"run {args.run_id} interrupted; read the finished claims with "
                                f"read_results({str(run_dir / 'results.json')!r})")
    path = run_dir / "results.json"
    if not path.is_file():
        raise BadInputError(f"run {args.run_id} wrote no results.json in {run_dir} "
                            f"(exit code {rc}): no claim test ran")
    df = read_results(path)
    df.attrs["exit_code"] = rc
    df.attrs["argv"] = ["rarebench", *argv]
    return df


def read_results(path: str | Path) -> "pd.DataFrame":
    """A results.json (schema 1 or 2) as a DataFrame, one row per claim result (COLUMNS).

    df.attrs: run_id, schema_version, upgraded_from (1 for an upgraded file), settings,
    interrupted (a run stopped by Ctrl-C/SIGTERM: only the finished claims), skipped, errors,
    results_path, report_path (REPORT.md beside it, if any)."""
    from harness.report.schema import load_results

    path = Path(path)
    df = results_frame(load_results(path))
    df.attrs["results_path"] = str(path)
    report = path.parent / "REPORT.md"
    df.attrs["report_path"] = str(report) if report.is_file() else None
    return df


def results_frame(results: dict[str, Any]) -> "pd.DataFrame":
    """The DataFrame of a loaded results dict (harness.report.schema.load_results)."""
    import pandas as pd

    from harness.report.render import _calibration, _rarity, _variant
    from harness.report.schema import upgrade, validate

    results = upgrade(validate(results))
    rows = [_row(rec, results.get("run_id"), _calibration, _rarity, _variant)
            for rec in results["claims"]]
    df = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("seed",):
        df[col] = df[col].astype("Int64")
    for col in ("effect", "ci_low", "ci_high", "p", "q", "power", "power_se", "fpr", "mde80",
                "sesoi", "alpha", "rarity_q", "wall_time_s"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df.attrs.update({"run_id": results.get("run_id"),
                     "schema_version": results.get("schema_version"),
                     "upgraded_from": results.get("upgraded_from"),
                     "settings": results.get("settings") or {},
                     "interrupted": bool(results.get("interrupted")),
                     "skipped": list(results.get("skipped") or []),
                     "errors": list(results.get("errors") or [])})
    return df


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def _claim_direction(key: Any) -> str | None:
    """'exists'/'absent' of a registered claim (a version-1 record does not store it)."""
    try:
        spec = list_claims(as_frame=False).get(key)
    except BadInputError:  # no claims/ directory (an installed wheel)
        return None
    return spec.direction if spec is not None else None


def _row(rec: dict, run_id: str | None, calibration, rarity, variant) -> dict[str, Any]:
    res = rec.get("result") or {}
    details = res.get("details") or {}
    settings = rec.get("settings") or {}
    decision = details.get("decision") if isinstance(details.get("decision"), dict) else {}
    spec = settings.get("rarity") if isinstance(settings.get("rarity"), dict) else settings
    own = details.get("own_power") if isinstance(details.get("own_power"), dict) else {}
    label = rarity(settings)
    var = variant(settings)
    return {
        "model": rec.get("model"), "claim": rec.get("claim"),
        "rarity": None if label == "-" else label, "seed": rec.get("seed"),
        "variant": None if var == "-" else var, "verdict": res.get("verdict"),
        "effect": _num(res.get("effect")), "ci_low": _num(res.get("ci_low")),
        "ci_high": _num(res.get("ci_high")), "p": _num(res.get("p_value")),
        "q": _num(rec.get("q_value")),
        "power": calibration(rec, "power"), "power_se": _num(own.get("power_se")),
        "fpr": calibration(rec, "fpr"), "mde80": calibration(rec, "mde80"),
        "sesoi": _num(decision.get("sesoi")),
        "direction": decision.get("direction") or _claim_direction(rec.get("claim")),
        "alpha": _num(res.get("alpha", details.get("alpha"))),
        "effect_name": res.get("effect_name"),
        "rarity_which": spec.get("which", spec.get("rarity_which")),
        "rarity_q": _num(spec.get("q", spec.get("rarity_q"))),
        "revision": rec.get("revision"), "test_outcome": rec.get("test_outcome"),
        "wall_time_s": _num(rec.get("wall_time_s")), "run_id": run_id,
        "nodeid": rec.get("nodeid"),
        "message": details.get("message") or decision.get("reason") or decision.get("message"),
        "settings": settings, "details": details, "figures": rec.get("figures") or {},
    }


def list_claims(as_frame: bool = True) -> "pd.DataFrame | dict":
    """The registered claims (claims/test_*.py): key, number, title, hypothesis, direction
    ('exists' or 'absent'), the effect measure, the SESOI (value, measure, why) as a DataFrame
    indexed by key; as_frame=False gives {key: ClaimSpec}."""
    from harness.claimset import specs

    found = specs()
    if not as_frame:
        return found
    import pandas as pd

    rows = [{"key": s.key, "number": s.number, "title": s.title, "direction": s.direction,
             "effect": s.effect, "sesoi": s.sesoi.value, "sesoi_measure": s.sesoi.measure,
             "sesoi_why": s.sesoi.why, "hypothesis": s.hypothesis} for s in found.values()]
    return pd.DataFrame(rows).set_index("key")


def load_model(name: str, device: str = "cpu", **kwargs: Any):
    """A model facade (harness.models.facade.ModelFacade) by registry name ('tiny-gpt2',
    'pythia-70m@step1000', a local HF directory, ...); kwargs: dtype, step, processing
    (harness.models.loading.load_model). Unknown names raise UnknownModelError, weights not
    on disk MissingWeightsError/MissingPackageError."""
    from harness.models.loading import load_model as _load

    return _load(name, device=device, **kwargs)
