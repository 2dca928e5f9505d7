"""pytest plugin: collects every claim result of a run and writes the report at session end.

Claim tests call the `record_claim` fixture with a `TestResult`; skips (e.g. missing weights)
and errors of tests under `claims/` are picked up from pytest's own reports. At session end,
if any claim test ran or was skipped, `reports/<run-id>/` gets REPORT.md, results.json
(docs/RESULTS_SCHEMA.md) and the PNG figures. State lives in `config.stash`, so one pytest
process (or a pytester run inside it) is one run; xdist is not required.
"""

from __future__ import annotations

import re
import shutil
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
        mine = [r for r in self.results["claims"] if r["nodeid"] == report.nodeid]
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
            "model": item_params.get("model_name", item_params.get("model")),
            "seed": item_params.get("seed"),
            "reason": reason,
        })

    # -- pytest hooks (the recorder is registered as a plugin of its own config) ----------
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        self._params_by_nodeid = {it.nodeid: _params(it) for it in items}

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
            terminalreporter.write_line(f"report: {self.report_path}")

    # -- writing ---------------------------------------------------------------------------
    def finish(self) -> Path | None:
        if not self.enabled or not (self.claims_seen or self.results["claims"]):
            return None
        from harness.report.render import Q_FAMILY, assign_q_values, render_report

        self.results["finished_utc"] = runinfo.utc_now()
        manifest = runinfo.collect_manifest(self.config.rootpath,
                                            str(_option(self.config, "--device", "auto")))
        for key in ("dtype", "processing", "device"):
            seen = {str(r["settings"][key]) for r in self.results["claims"]
                    if r["settings"].get(key) is not None}
            if seen:
                manifest[f"{key}_used"] = sorted(seen)
        self.results["manifest"] = to_jsonable(manifest)
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
        (self.run_dir / "results.partial.json").unlink(missing_ok=True)
        return self.report_path


_KEY = pytest.StashKey[RunRecorder]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rarebench report")
    group.addoption("--report-dir", default="reports",
                    help="directory that receives <run-id>/REPORT.md (relative to the rootdir)")
    group.addoption("--run-id", default=None, help="run id (default: UTC timestamp + random)")
    group.addoption("--no-report", action="store_true", help="do not write a report")
    group.addoption("--rarity-which", default="target",
                    help="comma list of whose rarity defines rare positions: target, current "
                         "(default target: what the loss predicts; `rarebench run` does both)")
    group.addoption("--rarity-q", default="15,50",
                    help="comma list of rarity percentiles q (rare = least-frequent q%% of types)")
    group.addoption("--quick", action="store_true",
                    help="fewer permutations/bootstraps (smoke runs; wider CIs)")


def pytest_configure(config: pytest.Config) -> None:
    _parse_rarity(config)  # fail at startup, not inside every claim test
    recorder = RunRecorder(config)
    config.stash[_KEY] = recorder
    config.pluginmanager.register(recorder, "rarebench-run-recorder")


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
