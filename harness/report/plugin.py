"""pytest plugin: collects every claim result of a run and writes the report at session end.

Claim tests call the `record_claim` fixture with a `TestResult`; skips (e.g. missing weights)
and errors of tests under `claims/` are picked up from pytest's own reports. At session end,
if any claim test ran or was skipped, `reports/<run-id>/` gets REPORT.md, REPORT.html (the
same, one self-contained file), results.json (docs/RESULTS_SCHEMA.md) and the PNG figures.
State lives in `config.stash`, so one pytest process (or a pytester run inside it) is one
run; xdist is not required.

Two run options serve `rarebench run` (harness/report/cli.py), which passes both:
- `--progress`: one line per claim case as it finishes (model, claim and variant, rarity,
  verdict, its time, elapsed time and an estimate of the time left), and one line when a model
  has been prepared (loaded, influence computed) with its time; pytest's own per-test dots
  are left out for claim tests (ClaimProgress below).
- `--verdicts-only`: verdicts and golden comparisons are recorded, not asserted
  (harness.claimkit.check_verdict), so a claim test fails only when the tool raised.
"""

from __future__ import annotations

import re
import shutil
import signal
import time
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import pytest

from harness.errors import BadInputError
from harness.report import runinfo
from harness.report.runinfo import parse_rarity_q, parse_rarity_which
from harness.report.schema import CLAIMS, claim_key, empty_results, to_jsonable, write_results
from harness.stats.result import TestResult


class RunRecorder:
    """Accumulates results.json content for one pytest session."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.enabled = not config.getoption("--no-report")
        self.run_id = config.getoption("--run-id") or runinfo.new_run_id()
        report_dir = Path(config.getoption("--report-dir"))
        if not report_dir.is_absolute():
            report_dir = config.rootpath / report_dir
        self.run_dir = report_dir / self.run_id
        self.claims_seen = False
        self.results = empty_results(self.run_id, _run_settings(config), manifest={})
        self.results["started_utc"] = runinfo.utc_now()
        self._outcome: dict[str, str] = {}
        self._params_by_nodeid: dict[str, dict] = {}
        self.report_path: Path | None = None
        self.cases_total = 0
        self.cases_finished = 0
        self.interrupted_by: int | None = None  # the signal that stopped the session
        self.t0 = time.perf_counter()
        self.setup_s: dict[str, float] = {}  # nodeid -> setup seconds (model preparation)
        self.call_s: dict[str, float] = {}   # nodeid -> call seconds (the claim's analysis)

    # -- recording -------------------------------------------------------------------------
    def add_claim(self, item: pytest.Item, result: TestResult, *, model: str, claim: str | None,
                  seed: int | None, settings: dict | None, figures: dict | None,
                  calibration: Any, wall_time_s: float | None,
                  revision: str | None) -> None:
        if not isinstance(result, TestResult):
            raise TypeError(f"record_claim expects a harness.stats.result.TestResult, "
                            f"got {type(result).__name__}")
        params = _params(item)
        self.results["claims"].append(to_jsonable({
            "nodeid": item.nodeid,
            "claim": claim_key(claim) if claim else _claim_of(item.nodeid),
            "model": model,
            "revision": revision,
            "seed": seed if seed is not None else params.get("seed"),
            "settings": settings or {},
            "result": result.to_dict(),
            "calibration": _calibration_dict(calibration),
            "figures": self._keep_figures(item, figures or {}),
            "wall_time_s": wall_time_s,
            "test_outcome": None,
        }))

    def records_of(self, nodeid: str) -> list[dict]:
        return [r for r in self.results["claims"] if r["nodeid"] == nodeid]

    def _keep_figures(self, item: pytest.Item, figures: dict) -> dict[str, str]:
        """Copy figures into the run dir (unless already there); store paths relative to it."""
        kept = {}
        for name, path in figures.items():
            src = Path(path)
            if not src.is_file():
                raise FileNotFoundError(f"record_claim: figure {name!r} not found at {src}")
            if not self.enabled:
                kept[str(name)] = str(src)
                continue
            try:
                rel = src.resolve().relative_to(self.run_dir.resolve())
            except ValueError:
                dest = self.figure_dir(item) / src.name
                shutil.copyfile(src, dest)
                rel = dest.relative_to(self.run_dir)
            kept[str(name)] = rel.as_posix()
        return kept

    def figure_dir(self, item: pytest.Item) -> Path:
        path = self.run_dir / "figures" / _safe_name(item.nodeid)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add_report(self, report: pytest.TestReport) -> None:
        if not _is_claim_nodeid(report.nodeid):
            return
        self.claims_seen = True
        mine = self.records_of(report.nodeid)
        if report.when in ("setup", "call"):
            (self.setup_s if report.when == "setup" else self.call_s)[report.nodeid] = float(
                report.duration)
        if report.when == "call" and (report.passed or report.failed):
            for rec in mine:
                rec["test_outcome"] = "failed" if report.failed else "passed"
                if rec["wall_time_s"] is None:
                    rec["wall_time_s"] = round(report.duration, 3)
        if report.skipped and report.nodeid not in self._outcome:
            self._outcome[report.nodeid] = "skipped"
            self.results["skipped"].append(self._test_entry(report, _skip_reason(report)))
        elif report.failed and (report.when != "call" or not mine):
            self._outcome[report.nodeid] = "error"
            entry = self._test_entry(report, _failure_message(report))
            entry["when"] = report.when
            self.results["errors"].append(entry)

    def _test_entry(self, report: pytest.TestReport, reason: str) -> dict[str, Any]:
        item_params = self._params_by_nodeid.get(report.nodeid, {})
        return to_jsonable({
            "nodeid": report.nodeid,
            "claim": _claim_of(report.nodeid),
            "model": _model_param(item_params),
            "seed": item_params.get("seed"),
            "reason": reason,
        })

    # -- pytest hooks (the recorder is registered as a plugin of its own config) ----------
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        self._params_by_nodeid = {it.nodeid: _params(it) for it in items}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.cases_total = sum(_is_claim_nodeid(it.nodeid) for it in session.items)

    @pytest.hookimpl(tryfirst=True)  # counted before a progress line announces the case
    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        self.cases_finished += _is_claim_nodeid(nodeid)

    def pytest_keyboard_interrupt(self, excinfo) -> None:
        self.interrupted_by = interrupt_signal(excinfo)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.add_report(report)
        if report.when == "teardown" and self.enabled and self.results["claims"]:
            self._checkpoint()

    def _checkpoint(self) -> None:
        """results.partial.json after every test: a run killed midway (a time limit, a lost
        machine) keeps every finished claim; `rarebench report` renders it. Removed by
        finish()."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_results(self.results, self.run_dir / "results.partial.json")

    def pytest_sessionfinish(self) -> None:
        self.finish()

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.report_path is not None:
            terminalreporter.write_sep("=", "rarebench report")
            html = self.report_path.with_name("REPORT.html")
            if html.is_file():
                terminalreporter.write_line(f"report (html): {html}")
            terminalreporter.write_line(f"report: {self.report_path}")

    # -- writing ---------------------------------------------------------------------------
    def _timing(self) -> None:
        """Where the run's time went. A model is prepared (loaded, influence computed) in the
        setup of its first case and reused, so each result carries an equal share of its
        model's preparation (`prep_share_s`) beside its own analysis time (`wall_time_s`);
        `total_time_s` is their sum. The run's wall time and per-stage totals go to
        results['timing'] (shown in the report's settings table)."""
        model_of = {n: _model_param(p) for n, p in self._params_by_nodeid.items()
                    if _is_claim_nodeid(n)}
        prep: dict[Any, float] = {}
        cases: dict[Any, int] = {}
        for nodeid, model in model_of.items():
            if nodeid in self.setup_s or nodeid in self.call_s:
                prep[model] = prep.get(model, 0.0) + self.setup_s.get(nodeid, 0.0)
                cases[model] = cases.get(model, 0) + 1
        for rec in self.results["claims"]:
            model = model_of.get(rec["nodeid"], rec.get("model"))
            n_same = max(1, len(self.records_of(rec["nodeid"])))  # several records per case
            share = prep.get(model, 0.0) / max(1, cases.get(model, 1)) / n_same
            rec["prep_share_s"] = round(share, 3)
            if rec.get("wall_time_s") is not None:
                rec["total_time_s"] = round(float(rec["wall_time_s"]) + share, 3)
        claims_s = sum(v for n, v in self.call_s.items() if n in model_of)
        self.results["timing"] = {
            "run_wall_s": round(time.perf_counter() - self.t0, 1),
            "prepare_s_by_model": {str(m): round(v, 1) for m, v in prep.items()},
            "stages_s": {"prepare models (load, influence)": round(sum(prep.values()), 1),
                         "claim analyses (incl. head ablation)": round(claims_s, 1)},
        }

    def finish(self) -> Path | None:
        stopped = self.interrupted_by is not None and self.cases_total > 0
        if not self.enabled or not (self.claims_seen or self.results["claims"] or stopped):
            return None
        from harness.report.render import Q_FAMILY, assign_q_values, render_report

        self.results["finished_utc"] = runinfo.utc_now()
        self.results.update(interrupted=self.interrupted_by is not None,
                            interrupt_signal=(signal.Signals(self.interrupted_by).name
                                              if self.interrupted_by is not None else None),
                            cases_finished=self.cases_finished, cases_total=self.cases_total)
        manifest = runinfo.collect_manifest(self.config.rootpath,
                                            str(_option(self.config, "--device", "auto")))
        for key in ("dtype", "processing", "device"):
            seen = {str(r["settings"][key]) for r in self.results["claims"]
                    if r["settings"].get(key) is not None}
            if seen:
                manifest[f"{key}_used"] = sorted(seen)
        self.results["manifest"] = to_jsonable(manifest)
        self._timing()
        q_values = assign_q_values(self.results["claims"])
        for rec in self.results["claims"]:
            rec["q_value"] = q_values[id(rec)]
        self.results["q_family"] = Q_FAMILY
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for empty in sorted(self.run_dir.glob("figures/*"), reverse=True):
            if empty.is_dir() and not any(empty.iterdir()):
                empty.rmdir()  # figure_dir of a test that skipped before drawing
        self.report_path = render_report(self.results, self.run_dir)
        write_results(self.results, self.run_dir / "results.json")
        if self.interrupted_by is None:  # an interrupted run keeps its last checkpoint
            (self.run_dir / "results.partial.json").unlink(missing_ok=True)
        return self.report_path


def interrupt_signal(excinfo) -> int | None:
    """The signal behind a KeyboardInterrupt pytest caught (SIGINT, or the `signum` of
    harness.report.cli.Terminated), None for pytest's own session stops: collection errors
    and -x raise Session.Interrupted/Failed, KeyboardInterrupt subclasses too."""
    if not excinfo.errisinstance(KeyboardInterrupt) or excinfo.errisinstance(
            (pytest.Session.Interrupted, pytest.Session.Failed)):
        return None
    return int(getattr(excinfo.value, "signum", signal.SIGINT))


class ClaimProgress:
    """--progress: what a long run is doing, one line at a time.

    When a model has been prepared (loaded, evaluation rows built, influence computed; the
    `prepared` fixture of claims/conftest.py), a line with the time it took. When a claim case
    finishes, `[ i/N] <model>  <claim>[<variant>] <rarity>: <verdict>  <its time> | elapsed
    <m:ss> | ~<time left>`. A case's time excludes the model preparation printed above it (it
    includes a head ablation that later rarity settings of the same mode reuse). The time
    left is the sum of per-case estimates: the mean time of finished cases of the same model,
    claim and variant (else model and claim); for a (model, claim) not yet seen, the measured
    2-CPU time of the default run (harness.report.runinfo.CASE_SECONDS) scaled by how fast this
    machine has been so far, else the mean of finished cases of that claim; plus the
    preparation of models not yet prepared, estimated alike."""

    def __init__(self, config: pytest.Config, recorder: RunRecorder) -> None:
        self.config = config
        self.recorder = recorder
        self.t0 = time.perf_counter()
        self.items: list[str] = []
        self.params: dict[str, dict] = {}
        self.started: dict[str, float] = {}
        self.outcome: dict[str, tuple[str, str]] = {}
        self.prep_s: dict[str, float] = {}
        self.prepared: dict[str, float] = {}  # model -> preparation seconds (first time)
        self.finished: dict[str, float] = {}  # nodeid -> own seconds
        self.current: str | None = None
        self.pending: dict[str, str] = {}  # nodeid -> 'model prepared' line
        self.width = 0
        self.indent = 0
        self.multi_seed = False

    # -- hooks -----------------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.items = [it.nodeid for it in session.items if _is_claim_nodeid(it.nodeid)]
        self.params = {it.nodeid: _params(it) for it in session.items}
        models = list(dict.fromkeys(self._model(n) for n in self.items))
        self.width = max((len(m) for m in models), default=0)
        self.multi_seed = len({self.params[n].get("seed") for n in self.items}) > 1
        self.indent = 2 * len(str(len(self.items))) + 4  # under the model of `[ i/N] model`
        if self.items:
            self._write(f"rarebench: {len(self.items)} claim cases on {len(models)} model(s) "
                        f"({', '.join(models)}); a line as each case finishes")

    @pytest.hookimpl(wrapper=True)
    def pytest_report_teststatus(self, report: pytest.TestReport, config: pytest.Config):
        res = yield
        if res and res[1] and _is_claim_nodeid(report.nodeid):
            return res[0], "", res[2]  # our line replaces the dot (the word is for summaries)
        return res

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        if _is_claim_nodeid(nodeid):
            self.started[nodeid] = time.perf_counter()
            self.current = nodeid

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef, request):
        if fixturedef.argname != PREPARED_FIXTURE or self.current is None:
            return (yield)
        start = time.perf_counter()
        nodeid = self.current
        model = self._model(nodeid)
        try:
            value = yield
        except BaseException:  # e.g. skipped (weights absent): nothing left to prepare
            self.prepared.setdefault(model, time.perf_counter() - start)
            raise
        took = time.perf_counter() - start
        self.prep_s[nodeid] = self.prep_s.get(nodeid, 0.0) + took
        if model not in self.prepared or took >= 1.0:
            self.prepared.setdefault(model, took)
            what = []
            spec, n_pos = getattr(value, "spec", None), getattr(value, "n_pos", None)
            if getattr(spec, "n_rows", None):
                what.append(f"{spec.n_rows} evaluation rows")
            if n_pos is not None:
                what.append(f"{n_pos:,} positions ablated")
            # written with the setup report: output during setup is captured
            self.pending[nodeid] = (f"{'':{self.indent}}{model:<{self.width}}  model prepared "
                                    f"(load, influence) in {took:.1f} s"
                                    + (f" ({', '.join(what)})" if what else ""))
        return value

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        nodeid = report.nodeid
        if nodeid in self.pending and report.when == "setup":
            self._write(self.pending.pop(nodeid) + f" | elapsed {_clock(self._elapsed())}")
        if not _is_claim_nodeid(nodeid) or nodeid in self.outcome:
            return
        if report.failed:
            self.outcome[nodeid] = ("failed" if report.when == "call" else "error",
                                    _failure_message(report))
        elif report.skipped:
            self.outcome[nodeid] = (("xfail", str(report.wasxfail)) if hasattr(report, "wasxfail")
                                    else ("skipped", _skip_reason(report)))

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        if nodeid not in self.started:
            return
        own = max(0.0, time.perf_counter() - self.started.pop(nodeid) - self.prep_s.get(nodeid, 0))
        self.finished[nodeid] = own
        self.current = None
        n = len(self.items)
        left = self.seconds_left()
        tail = "done" if len(self.finished) >= n else (
            "~? left" if left is None else f"~{_duration(left)} left")
        self._write(f"[{len(self.finished):>{len(str(n))}}/{n}] "
                    f"{self._model(nodeid):<{self.width}}  {self._label(nodeid)}: "
                    f"{self._verdict(nodeid)}  {own:.1f} s | elapsed "
                    f"{_clock(self._elapsed())} | {tail}")

    # -- estimate --------------------------------------------------------------------------
    def seconds_left(self) -> float | None:
        """Estimated seconds for the claim cases not finished yet (None: nothing to go by)."""
        todo = [n for n in self.items if n not in self.finished]
        if not todo:
            return 0.0
        done = list(self.finished.items())
        if not done:
            return None
        speed = self._speed()
        total = 0.0
        for nid in todo:
            est = self._case_estimate(nid, done, speed)
            if est is None:
                return None
            total += est
        for model in dict.fromkeys(self._model(n) for n in todo):
            if model not in self.prepared:
                prior = runinfo.PREPARE_SECONDS.get(model)
                seen = list(self.prepared.values())
                total += prior * speed if prior is not None else (
                    sum(seen) / len(seen) if seen else 0.0)
        return total

    def _key(self, nodeid: str) -> tuple[str, str]:
        return self._model(nodeid), _claim_of(nodeid)

    def _case_estimate(self, nodeid: str, done: list[tuple[str, float]],
                       speed: float) -> float | None:
        key, variant = self._key(nodeid), self._variant(nodeid)
        for same in (lambda d: self._key(d) == key and self._variant(d) == variant,
                     lambda d: self._key(d) == key):
            times = [t for d, t in done if same(d)]
            if times:
                return sum(times) / len(times)
        if key in runinfo.CASE_SECONDS:
            return runinfo.CASE_SECONDS[key] * speed
        for same in (lambda d: self._key(d)[1] == key[1], lambda d: True):
            times = [t for d, t in done if same(d)]
            if times:
                return sum(times) / len(times)
        return None

    def _speed(self) -> float:
        """Measured / tabulated time of the finished cases that have a tabulated time."""
        pairs = [(t, runinfo.CASE_SECONDS[self._key(d)]) for d, t in self.finished.items()
                 if self._key(d) in runinfo.CASE_SECONDS]
        pairs += [(t, runinfo.PREPARE_SECONDS[m]) for m, t in self.prepared.items()
                  if m in runinfo.PREPARE_SECONDS]
        prior = sum(p for _, p in pairs)
        return min(5.0, max(0.2, sum(t for t, _ in pairs) / prior)) if prior > 0 else 1.0

    # -- text ------------------------------------------------------------------------------
    def _model(self, nodeid: str) -> str:
        p = self.params.get(nodeid, {})
        if "model_name" in p or "model" in p:
            return str(_model_param(p))
        records = self.recorder.records_of(nodeid)  # a case without a model parameter
        return str(records[0]["model"]) if records else "-"

    def _variant(self, nodeid: str) -> str:
        p = self.params.get(nodeid, {})
        bits = [str(p[k]) for k in ("group_kind", "mode") if p.get(k)]
        if p.get("routing_scope") and p["routing_scope"] != "all-positions":
            bits.append(str(p["routing_scope"]))
        return ",".join(bits)

    def _label(self, nodeid: str) -> str:
        p = self.params.get(nodeid, {})
        variant = self._variant(nodeid)
        text = _claim_of(nodeid) + (f"[{variant}]" if variant else "")
        rarity = p.get("rarity")
        if rarity is not None and hasattr(rarity, "which"):
            text += " " + (getattr(rarity, "tag", None) or f"{rarity.which}-q{rarity.q:g}")
        if self.multi_seed and p.get("seed") is not None:
            text += f" seed{p['seed']}"
        return text

    def _verdict(self, nodeid: str) -> str:
        kind, text = self.outcome.get(nodeid, ("", ""))
        records = self.recorder.records_of(nodeid)
        if not records:
            if kind in ("failed", "error"):
                return f"ERROR {_short(text)}"
            return f"{kind}: {_short(text)}" if kind else "passed (no result recorded)"
        out = "; ".join(_verdict_label(r["result"]) for r in records)
        if kind == "failed":
            out += f" - FAILED {_short(text)}"
        elif kind == "error":
            out += f" - ERROR {_short(text)}"
        elif kind == "xfail":
            out += " (xfail)"
        return out

    def _elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def _write(self, line: str) -> None:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(line)
            tr.flush()


PREPARED_FIXTURE = "prepared"  # claims/conftest.py: the model prepared for every claim


def _verdict_label(result: dict) -> str:
    details = result.get("details") or {}
    text = result.get("verdict", "?") + (" (inconclusive)" if details.get("inconclusive") else "")
    golden = details.get("golden")
    if isinstance(golden, dict) and "matches" in golden:
        text += ", golden ok" if golden["matches"] else ", GOLDEN DIFFERS"
    return text


def _short(text: str, width: int = 100) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= width else line[:width - 3] + "..."


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


_KEY = pytest.StashKey[RunRecorder]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rarebench report")
    group.addoption("--report-dir", default="reports",
                    help="directory that receives <run-id>/REPORT.md (relative to the rootdir)")
    group.addoption("--run-id", default=None, help="run id (default: UTC timestamp + random)")
    group.addoption("--no-report", action="store_true", help="do not write a report")
    group.addoption("--rarity-which", default="target",
                    help="whose rarity defines rare positions: comma list of target, current, "
                         "or both (= target,current) (default target: what the loss predicts)")
    group.addoption("--rarity-q", default="15,50",
                    help="comma list of rarity percentiles q (rare = least-frequent q%% of types)")
    group.addoption("--quick", action="store_true",
                    help="fewer permutations/bootstraps (smoke runs; wider CIs)")
    group.addoption("--progress", action="store_true",
                    help="one line per claim case as it finishes (verdict, time, elapsed, "
                         "estimated time left) and per prepared model, instead of pytest's "
                         "dots (`rarebench run` passes it)")
    group.addoption("--verdicts-only", action="store_true",
                    help="record claim verdicts and golden comparisons without asserting "
                         "them: only an exception fails a claim test (`rarebench run` passes "
                         "it; plain `pytest claims` keeps the pass/fail policy of "
                         "harness.claimkit)")


def pytest_configure(config: pytest.Config) -> None:
    _parse_rarity(config)  # fail at startup, not inside every claim test
    recorder = RunRecorder(config)
    config.stash[_KEY] = recorder
    config.pluginmanager.register(recorder, "rarebench-run-recorder")
    if config.getoption("--progress"):
        config.pluginmanager.register(ClaimProgress(config, recorder), "rarebench-progress")


def verdicts_only(config: pytest.Config) -> bool:
    """True under --verdicts-only (verdicts are results, not test outcomes)."""
    return bool(_option(config, "--verdicts-only", False))


def annotate_claim(request: pytest.FixtureRequest, caveat: str | None = None,
                   **details: Any) -> None:
    """Add `details` (and a caveat line the report shows) to the result(s) this test has
    already recorded with record_claim, e.g. `golden={'matches': False, 'diff': ...}`."""
    recorder = request.config.stash[_KEY]
    for rec in recorder.records_of(request.node.nodeid):
        det = rec["result"].setdefault("details", {})
        det.update(to_jsonable(details))
        if caveat:
            caveats = det.get("caveats") or []
            det["caveats"] = ([caveats] if isinstance(caveats, str) else list(caveats)) + [caveat]


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture
def record_claim(request: pytest.FixtureRequest) -> Callable[..., None]:
    """record_claim(result, *, model, claim=None, seed=None, settings=None, figures=None,
    calibration=None, wall_time_s=None, revision=None).

    calibration: {'power': .., 'fpr': .., ...} or a list of CalibrationRow.
    claim defaults to the test module's name ('test_dual_regimes' -> 'dual-regimes'), seed to
    the test's `seed` parameter, wall_time_s to the test's call duration.
    """
    recorder = request.config.stash[_KEY]

    def _record(result: TestResult, *, model: str, claim: str | None = None,
                seed: int | None = None, settings: dict | None = None,
                figures: dict[str, str | Path] | None = None, calibration: Any = None,
                wall_time_s: float | None = None, revision: str | None = None) -> None:
        recorder.add_claim(request.node, result, model=model, claim=claim, seed=seed,
                           settings=settings, figures=figures, calibration=calibration,
                           wall_time_s=wall_time_s, revision=revision)

    return _record


@pytest.fixture
def figure_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Directory inside the run's report dir for this test's PNGs (tmp_path with --no-report)."""
    recorder = request.config.stash[_KEY]
    return recorder.figure_dir(request.node) if recorder.enabled else tmp_path


@pytest.fixture(scope="session")
def rarity_which(request: pytest.FixtureRequest) -> list[str]:
    return _parse_rarity(request.config)[0]


@pytest.fixture(scope="session")
def rarity_q(request: pytest.FixtureRequest) -> list[float]:
    return _parse_rarity(request.config)[1]


@pytest.fixture(scope="session")
def quick(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--quick"))


# -- helpers ---------------------------------------------------------------------------------
def _calibration_dict(calibration: Any) -> dict | None:
    """A dict as given, or a list of harness.stats.calibration.CalibrationRow ->
    {power: first 'power' rate, fpr: first 'fpr' rate, rows: [row.to_dict(), ...]}."""
    if calibration is None or isinstance(calibration, dict):
        return calibration
    rows = [row.to_dict() for row in calibration]
    summary: dict[str, Any] = {}
    for row in rows:
        summary.setdefault(row["kind"], row["rate"])
    return {**summary, "rows": rows}


def _parse_rarity(config: pytest.Config) -> tuple[list[str], list[float]]:
    try:
        return (parse_rarity_which(config.getoption("--rarity-which")),
                parse_rarity_q(config.getoption("--rarity-q")))
    except BadInputError as exc:
        raise pytest.UsageError(str(exc)) from None


def _run_settings(config: pytest.Config) -> dict[str, Any]:
    which, qs = _parse_rarity(config)
    return {
        "models": _split(str(_option(config, "--models", ""))),
        "seeds": _split(str(_option(config, "--seeds", ""))),
        "rarity_which": which,
        "rarity_q": qs,
        "quick": bool(config.getoption("--quick")),
        "device": _option(config, "--device", None),
        # the run's sizing options as given (each result's settings hold the sizes used)
        **{opt.lstrip("-").replace("-", "_"): _option(config, opt, None)
           for opt in ("--groups", "--routing-modes", "--routing-layers", "--routing-rows",
                       "--routing-scope", "--eval-rows", "--common-budget", "--power-reps",
                       "--rarity-ties", "--mu-over")},
        "verdicts_only": verdicts_only(config),
        "keyword": config.getoption("keyword", "") or None,
        "markers": config.getoption("markexpr", "") or None,
        "args": [str(a) for a in config.args],
    }


def _option(config: pytest.Config, name: str, default: Any) -> Any:
    try:
        return config.getoption(name)
    except ValueError:  # option registered by a conftest that is not loaded (e.g. pytester)
        return default


def _split(value: str) -> list[str]:
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _params(item: pytest.Item) -> dict[str, Any]:
    callspec = getattr(item, "callspec", None)
    return dict(callspec.params) if callspec is not None else {}


def _model_param(params: dict[str, Any]) -> Any:
    """A claim case's model: its `model_name` (or `model`) parameter, None without one."""
    return params.get("model_name", params.get("model"))


def _module_stem(nodeid: str) -> str:
    return PurePosixPath(nodeid.split("::")[0]).stem


def _claim_of(nodeid: str) -> str:
    """The claim a test belongs to: its module name, or its function name when only that
    names one of the three claims (several claims in one module)."""
    module = _module_stem(nodeid)
    function = nodeid.split("::")[-1].split("[")[0] if "::" in nodeid else module
    for name in (module, function):
        if claim_key(name) in CLAIMS:
            return claim_key(name)
    return claim_key(module)


def _is_claim_nodeid(nodeid: str) -> bool:
    return "claims" in PurePosixPath(nodeid.split("::")[0]).parts


def _safe_name(nodeid: str) -> str:
    name = nodeid.split("::", 1)[-1] if "::" in nodeid else nodeid
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{_module_stem(nodeid)}-{name}").strip("_")[:120]


def _skip_reason(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return f"xfail: {report.wasxfail}".rstrip(": ")
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def _failure_message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message
    return str(report.longrepr).strip().splitlines()[-1] if report.longrepr else "failed"
