"""The report plugin end to end: a fake claims/ suite run with pytester must leave REPORT.md,
results.json and the figures in reports/<run-id>/."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from harness.report.figures import DPI, FOREST_WIDTH_IN, forest_height_in
from harness.report.render import SUMMARY_FIGURE
from harness.report.schema import SCHEMA_VERSION
from harness.stats.result import TestResult

pytest_plugins = ["pytester"]

REGIMES = TestResult("plateau excess", 3.2, 0.004, 1.25, 0.8, 1.7, "supported",
                     effect_name="plateau excess (nats)",
                     details={"message": "rare-target loss 9.1 nats < uniform 10.8",
                              "plateau_size": 12})
ROUTING = TestResult("max head selectivity", 0.4, 0.62, 0.01, -0.02, 0.05, "not supported",
                     effect_name="selectivity", details={"caveats": ["only 4 heads"]})

FAKE_CLAIMS = '''
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from harness.stats.result import TestResult
from tests_results import REGIMES, ROUTING


def _png(path, w_in, h_in, dpi):
    fig = plt.figure(figsize=(w_in, h_in))
    fig.gca().plot([0, 1], [1, 0])
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


@pytest.mark.parametrize("model_name", ["tiny-a", "tiny-b"])
def test_dual_regimes(model_name, record_claim, figure_dir):
    if model_name == "tiny-b":
        pytest.skip("weights for tiny-b not found: run `rarebench train tiny-b` first")
    curve = _png(figure_dir / "curve.png", 2, 1.5, 50)
    record_claim(REGIMES, model=model_name, seed=0,
                 settings={"rarity": {"q": 50.0, "which": "target", "elbow": False},
                           "dtype": "float32", "processing": "raw", "n_rows": 64},
                 figures={"influence curve": curve}, calibration={"power": 0.9, "fpr": 0.04},
                 revision="abc123")


@pytest.fixture
def broken():
    raise RuntimeError("cache corrupt at /x")


def test_no_clustering(broken):
    pass


def test_no_routing(record_claim, tmp_path):
    heads = _png(tmp_path / "heads.png", 3, 2, 40)
    record_claim(ROUTING, model="tiny-a", claim="claim3", seed=1,
                 settings={"rarity_which": "current", "rarity_q": 15}, figures={"heads": heads})
'''


@pytest.fixture(autouse=True)
def _lean_inner_pytest(monkeypatch):
    """Inner runs load only our plugin: setuptools-entry-point plugins (hypothesis ~5 s per
    session) are not what is under test."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def fake_run(pytester: pytest.Pytester):
    pytester.makeconftest('pytest_plugins = ["harness.report.plugin"]')
    pytester.makepyfile(tests_results=(
        "from harness.stats.result import TestResult\n"
        f"REGIMES = TestResult(**{REGIMES.to_dict()!r})\n"
        f"ROUTING = TestResult(**{ROUTING.to_dict()!r})\n"))
    pytester.mkpydir("claims")
    (pytester.path / "claims" / "test_fake_claims.py").write_text(FAKE_CLAIMS)
    pytester.syspathinsert()
    result = pytester.runpytest("claims", "--run-id", "r1", "-p", "no:cacheprovider")
    return result, pytester.path / "reports" / "r1"


def test_plugin_writes_report_for_claim_run(fake_run):
    result, run_dir = fake_run
    result.assert_outcomes(passed=2, skipped=1, errors=1)
    result.stdout.fnmatch_lines([f"report: {run_dir / 'REPORT.md'}"])
    text = (run_dir / "REPORT.md").read_text()
    for needle in ("## Claim 1: Dual regimes", "## Claim 2: No clustering",
                   "## Claim 3: No routing", "2 claim results, 1 skipped tests, 1 errors",
                   "skipped: tiny-b: weights for tiny-b not found: run `rarebench train tiny-b` "
                   "first", "RuntimeError: cache corrupt at /x", "rare-target loss 9.1 nats",
                   "only 4 heads", "| 1.7% / 10.9% / 87.4% |", "tiny-a, seed 0, target q50: 12"):
        assert needle in text, needle
    # columns: ... verdict | effect [CI] | p | q | SESOI | power (s.e.) | MDE 80% | FPR
    rows = [r"\| Claim 1: Dual regimes +\| tiny-a +\| 0 +\| target q50 +\| - +\| supported +"
            r"\| 1\.25 \[0\.8, 1\.7\] +\| 0\.004 +\| 0\.004 +\| - +\| 0\.9 +\| n/a +"
            r"\| 0\.04 +\|",
            r"\| Claim 3: No routing +\| tiny-a +\| 1 +\| current q15 +\| - +\| inconclusive +"
            r"\| 0\.01 \[-0\.02, 0\.05\] +\| 0\.62 +\| 0\.62 +\| - +\| n/a +\| n/a +"
            r"\| n/a +\|"]
    for row in rows:
        assert re.search(row, text), row


def test_results_json_round_trips(fake_run):
    _, run_dir = fake_run
    data = json.loads((run_dir / "results.json").read_text())
    assert data["schema"] == "rarebench.results"
    assert data["schema_version"] == SCHEMA_VERSION
    by_claim = {rec["claim"]: rec for rec in data["claims"]}
    assert set(by_claim) == {"dual-regimes", "no-routing"}
    assert TestResult.from_dict(by_claim["dual-regimes"]["result"]) == REGIMES
    assert TestResult.from_dict(by_claim["no-routing"]["result"]) == ROUTING
    regimes = by_claim["dual-regimes"]
    assert (regimes["model"], regimes["seed"], regimes["revision"]) == ("tiny-a", 0, "abc123")
    assert regimes["calibration"] == {"power": 0.9, "fpr": 0.04}
    assert regimes["test_outcome"] == "passed" and regimes["wall_time_s"] >= 0
    # two records of different claims -> each its own BH family of one: q == p
    assert regimes["q_value"] == pytest.approx(0.004, rel=1e-12)
    assert data["skipped"] == [{
        "nodeid": "claims/test_fake_claims.py::test_dual_regimes[tiny-b]",
        "claim": "dual-regimes", "model": "tiny-b", "seed": None,
        "reason": "weights for tiny-b not found: run `rarebench train tiny-b` first"}]
    [error] = data["errors"]
    assert (error["claim"], error["when"]) == ("no-clustering", "setup")
    assert data["manifest"]["dtype_used"] == ["float32"]
    assert set(data["manifest"]["packages"]) >= {"torch", "transformers", "transformer-lens",
                                                 "numpy", "scipy"}


def test_figures_are_kept_as_pngs_of_their_size(fake_run):
    _, run_dir = fake_run
    data = json.loads((run_dir / "results.json").read_text())
    figs = {name: run_dir / rel for rec in data["claims"] for name, rel in rec["figures"].items()}
    assert png_size(figs["influence curve"]) == (100, 75)
    assert png_size(figs["heads"]) == (120, 80)  # copied in from the test's tmp_path
    assert all(p.stat().st_size > 500 for p in figs.values())
    expected = (round(FOREST_WIDTH_IN * DPI), round(forest_height_in([1, 1]) * DPI))
    assert png_size(run_dir / SUMMARY_FIGURE) == expected


def test_no_report_without_claim_tests(pytester: pytest.Pytester):
    pytester.makeconftest('pytest_plugins = ["harness.report.plugin"]')
    pytester.makepyfile(test_unit="def test_ok():\n    assert True\n")
    result = pytester.runpytest("--run-id", "r2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "reports").exists()
    assert "report:" not in result.stdout.str()


def test_no_report_option_and_bad_rarity(pytester: pytest.Pytester):
    pytester.makeconftest('pytest_plugins = ["harness.report.plugin"]')
    pytester.mkpydir("claims")
    (pytester.path / "claims" / "test_c.py").write_text(
        "def test_q(rarity_which, rarity_q, quick):\n"
        "    assert (rarity_which, rarity_q, quick) == (['current'], [5.0, 30.0], True)\n")
    result = pytester.runpytest("claims", "--no-report", "--rarity-which", "current",
                                "--rarity-q", "5,30", "--quick", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "reports").exists()
    bad = pytester.runpytest("claims", "--rarity-q", "0,50", "-p", "no:cacheprovider")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*rarity q takes a comma list of percentiles in (0, 100)*"])


def test_killed_run_keeps_finished_claims(pytester: pytest.Pytester):
    """A run that dies after its first claim (a time limit, a lost GPU machine) leaves that
    claim in results.partial.json; a finished run leaves only results.json."""
    pytester.makeconftest('pytest_plugins = ["harness.report.plugin"]')
    pytester.makepyfile(tests_results=(
        "from harness.stats.result import TestResult\n"
        f"REGIMES = TestResult(**{REGIMES.to_dict()!r})\n"))
    pytester.mkpydir("claims")
    (pytester.path / "claims" / "test_dual_regimes.py").write_text(
        "import os\n"
        "from tests_results import REGIMES\n"
        "def test_first(record_claim):\n"
        "    record_claim(REGIMES, model='tiny-a', claim='dual-regimes')\n"
        "def test_second():\n"
        "    os._exit(3)  # killed mid-run: no session finish, no results.json\n")
    pytester.syspathinsert()
    pytester.runpytest_subprocess("claims", "--run-id", "k1", "-p", "no:cacheprovider")
    run_dir = pytester.path / "reports" / "k1"
    assert not (run_dir / "results.json").exists()
    partial = json.loads((run_dir / "results.partial.json").read_text())
    assert [r["claim"] for r in partial["claims"]] == ["dual-regimes"]
    assert TestResult.from_dict(partial["claims"][0]["result"]) == REGIMES


def test_finished_run_removes_partial(fake_run):
    _, run_dir = fake_run
    assert (run_dir / "results.json").is_file()
    assert not (run_dir / "results.partial.json").exists()


TIMED_CLAIMS = '''
import time
import pytest
from tests_results import REGIMES


@pytest.fixture(scope="module")
def prepared():
    time.sleep(0.6)  # the model's preparation, paid by the first case only
    return object()


@pytest.mark.parametrize("model_name", ["tiny-a"])
@pytest.mark.parametrize("q", [15, 50])
def test_dual_regimes(model_name, q, prepared, record_claim):
    time.sleep(0.2)
    record_claim(REGIMES, model=model_name, seed=0, settings={"rarity_q": q})
'''


def test_each_result_carries_its_share_of_the_model_preparation(pytester: pytest.Pytester):
    """Issue 22.4: a result's time includes its share of preparation; the run's wall time
    and per-stage totals are in results.json and the settings table."""
    pytester.makeconftest('pytest_plugins = ["harness.report.plugin"]')
    pytester.makepyfile(tests_results=(
        "from harness.stats.result import TestResult\n"
        f"REGIMES = TestResult(**{REGIMES.to_dict()!r})\n"))
    pytester.mkpydir("claims")
    (pytester.path / "claims" / "test_timed.py").write_text(TIMED_CLAIMS)
    pytester.syspathinsert()
    pytester.runpytest("claims", "--run-id", "t1", "-p", "no:cacheprovider").assert_outcomes(
        passed=2)
    run_dir = pytester.path / "reports" / "t1"
    data = json.loads((run_dir / "results.json").read_text())
    recs = data["claims"]
    assert len(recs) == 2
    for rec in recs:
        assert 0.2 <= rec["wall_time_s"] < 0.6  # own time: the 0.6 s preparation excluded
        assert 0.3 <= rec["prep_share_s"] < 0.5  # half of it each
        assert rec["total_time_s"] == pytest.approx(rec["wall_time_s"] + rec["prep_share_s"],
                                                    abs=2e-3)
    t = data["timing"]
    assert t["prepare_s_by_model"]["tiny-a"] >= 0.6
    assert t["stages_s"]["claim analyses (incl. head ablation)"] >= 0.4
    assert t["run_wall_s"] >= 1.0
    text = (run_dir / "REPORT.md").read_text()
    assert re.search(r"\| run wall time +\| [\d.]+ s +\|", text)
    assert re.search(r"\| preparation by model +\| tiny-a 0\.[6-9]\d* s", text)
    assert "time s (own + prep.)" in text
