"""`rarebench run`: the progress lines (a line per prepared model and per finished claim case,
with times and an estimate of the time left) and the exit codes (verdicts are results: 0 for
'refuted' or a golden mismatch; 1 when a claim test raises; 130 on Ctrl-C).

Most tests drive the real `rarebench run` (in process, real pytest.main) on a fake checkout
whose claims/ calls the real `harness.claimkit.check_verdict` against the committed goldens;
one (`tiny`) runs the real claim 1 on the committed tiny-gpt2 fixture in a subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import cli, goldens
from harness.claimkit import golden_path
from harness.data.rarity import RaritySpec
from harness.report import cli as report_cli
from harness.report import runinfo
from harness.stats.result import TestResult

REPO = Path(__file__).resolve().parents[1]

FAKE_CONFTEST = '''
pytest_plugins = ["harness.report.plugin"]


def pytest_addoption(parser):  # the options `rarebench run` passes (root conftest.py)
    for name in ("--models", "--seeds", "--device", "--cache-dir", "--groups",
                 "--routing-modes", "--routing-layers", "--routing-rows", "--routing-scope",
                 "--eval-rows", "--common-budget"):
        parser.addoption(name, default=None)
    parser.addoption("--power-reps", default=100, type=int)
'''

# tiny-gpt2 'refuted' with numbers unlike its committed golden (an untestable verdict) at the
# CI evaluation set, so the golden applies; another model 'refuted'; both through the real
# check_verdict.
REFUTED = dict(name="claim1_dual_regimes", statistic=9.0, p_value=0.5, effect=9.0,
                     ci_low=8.0, ci_high=10.0, verdict="refuted",
                     details={"message": "no plateau beyond the power law"})

VERDICT_CLAIMS = f'''
import time
from types import SimpleNamespace

import pytest

from harness.claimkit import check_verdict, claim_eval_spec
from harness.data.rarity import RaritySpec
from harness.stats.result import TestResult

Q50 = RaritySpec(q=50.0, which="target")


@pytest.fixture(scope="module")
def prepared():
    time.sleep(0.6)
    return SimpleNamespace(spec=SimpleNamespace(n_rows=48), n_pos=367)


@pytest.mark.parametrize("rarity", [Q50], ids=["target-q50"])
@pytest.mark.parametrize("model_name", ["tiny-gpt2", "gpt2-xl"])
def test_dual_regimes(prepared, model_name, rarity, record_claim, request):
    time.sleep(0.3)
    result = TestResult(**{REFUTED!r})
    record_claim(result, model=model_name, claim="dual-regimes", seed=0,
                 settings={{"rarity": {{"q": 50.0, "which": "target"}}}})
    check_verdict(request, result, claim="dual-regimes", model_name=model_name, seed=0,
                  rarity=rarity, spec=claim_eval_spec(model_name, seed=0))
'''

RAISING_CLAIMS = '''
from harness.stats.result import TestResult


def test_dual_regimes(record_claim):
    record_claim(TestResult("c1", 1.0, 0.01, 1.0, 0.5, 1.5, "supported"), model="gpt2-xl")


def test_no_routing():
    raise RuntimeError("head ablation blew up")
'''

INTERRUPTED_CLAIMS = '''
def test_dual_regimes():
    raise KeyboardInterrupt
'''


@pytest.fixture(autouse=True)
def _lean_inner_pytest(monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # hypothesis costs ~5 s/session


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A fake rarebench checkout `rarebench run` drives; returns a writer of claims modules
    (names unique per test: the outer session may hold modules of the same name)."""
    root = tmp_path / "checkout"
    (root / "claims").mkdir(parents=True)
    (root / "conftest.py").write_text(FAKE_CONFTEST)
    monkeypatch.setattr(report_cli, "repo_root", lambda: root)
    monkeypatch.setattr(report_cli, "check_models", lambda names: None)
    monkeypatch.chdir(tmp_path)

    def write(name: str, text: str) -> Path:
        path = root / "claims" / f"test_{name}.py"
        path.write_text(text)
        return path

    return write


def _run(*extra: str) -> int:
    return cli.main(["run", "--models", "tiny-gpt2,gpt2-xl", "--out", "out", *extra])


CASE = re.compile(r"^\[(\d+)/(\d+)\] (\S+) +([^\s:]+)(?: (\S+))?: (.*?)  (\d+\.\d) s \| elapsed "
                  r"(\d+):(\d\d) \| (.*)$")
PREPARED = re.compile(r"^ +(\S+) +model prepared \(load, influence\) in (\d+\.\d) s "
                      r"\((\d+) evaluation rows, ([\d,]+) positions ablated\) \| elapsed "
                      r"(\d+):(\d\d)$")


def _cases(out: str) -> list[tuple]:
    return [m.groups() for m in map(CASE.match, out.splitlines()) if m]


def test_progress_lines_and_exit_0_for_refuted_and_golden_mismatch(checkout, capsys):
    checkout("progress_verdicts", VERDICT_CLAIMS)
    assert _run("--run-id", "v1") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "rarebench: 2 claim cases on 2 model(s) (tiny-gpt2, gpt2-xl); a line as each " \
           "case finishes" in lines
    [prep] = [m.groups() for m in map(PREPARED.match, lines) if m]
    assert prep[0] == "tiny-gpt2" and 0.6 <= float(prep[1]) < 10
    assert prep[2:4] == ("48", "367")
    first, second = _cases(out)
    assert first[:6] == ("1", "2", "tiny-gpt2", "dual-regimes", "target-q50",
                         "refuted, GOLDEN DIFFERS")
    assert second[:6] == ("2", "2", "gpt2-xl", "dual-regimes", "target-q50", "refuted")
    # a case's time is its own (0.3 s sleep), the model preparation (0.6 s) excluded
    for case in (first, second):
        assert 0.3 <= float(case[6]) < 0.6 + 0.3
    # the estimate after case 1: case 2 (same claim, a model without a tabulated time) takes
    # as long as case 1 did, plus its model's preparation (not yet seen: the mean seen so far)
    left = re.fullmatch(r"~(\d+) s left", first[9])
    assert left and abs(int(left.group(1)) - (float(first[6]) + float(prep[1]))) <= 1
    assert second[9] == "done"
    elapsed = [int(c[7]) * 60 + int(c[8]) for c in (first, second)]
    assert elapsed[0] <= elapsed[1] and elapsed[1] >= 1  # 0.6 + 2 x 0.3 s of sleeps at least
    assert not re.search(r"^\.+$", out, re.M)  # no pytest dots
    run_dir = Path("out") / "v1"
    data = json.loads((run_dir / "results.json").read_text())
    by_model = {r["model"]: r for r in data["claims"]}
    golden = by_model["tiny-gpt2"]["result"]["details"]["golden"]
    path = golden_path("dual-regimes", "tiny-gpt2", 0, RaritySpec(q=50.0, which="target"))
    expected = goldens.mismatches(TestResult(**REFUTED), json.loads(path.read_text()))
    assert golden == {"matches": False, "diff": expected, "path": str(path)} and expected
    assert "golden" not in by_model["gpt2-xl"]["result"]["details"]
    assert {r["test_outcome"] for r in data["claims"]} == {"passed"}
    assert (f"differs from the committed golden {path.name}: {'; '.join(expected)}"
            in (run_dir / "REPORT.md").read_text())


def test_plain_pytest_keeps_pass_fail_semantics(checkout, pytester_free_run):
    """Without --verdicts-only (`pytest claims`, CI) the same cases fail: golden regression
    for the fixture, 'refuted' for another model."""
    checkout("progress_verdicts_ci", VERDICT_CLAIMS)
    rc, out = pytester_free_run()
    assert rc == pytest.ExitCode.TESTS_FAILED
    assert "differs from golden" in out
    assert "claim refuted on gpt2-xl" in out
    assert "2 failed" in out


@pytest.fixture
def pytester_free_run(capsys):
    """pytest.main on the fake checkout's claims/ as CI runs it (no --verdicts-only)."""
    def run() -> tuple[int, str]:
        root = report_cli.repo_root()
        rc = pytest.main([str(root / "claims"), "--rootdir", str(root), "-p",
                          "no:cacheprovider", "--no-report", "--power-reps", "8"])  # as CI
        return int(rc), capsys.readouterr().out
    return run


def test_exit_1_when_a_claim_test_raises(checkout, capsys):
    checkout("progress_raising", RAISING_CLAIMS)
    assert _run("--run-id", "e1") == 1
    out = capsys.readouterr().out
    cases = {c[3]: c for c in _cases(out)}
    assert cases["dual-regimes"][5] == "supported"
    assert cases["no-routing"][5] == "ERROR RuntimeError: head ablation blew up"
    data = json.loads((Path("out") / "e1" / "results.json").read_text())
    assert [e["reason"] for e in data["errors"]] == ["RuntimeError: head ablation blew up"]


def test_exit_130_on_ctrl_c_and_1_on_a_collection_error(checkout, capsys):
    checkout("progress_interrupted", INTERRUPTED_CLAIMS)
    assert _run("--run-id", "i1") == 130
    capsys.readouterr()
    (report_cli.repo_root() / "claims" / "test_progress_interrupted.py").unlink()
    checkout("progress_broken", "def test_dual_regimes(:\n")  # pytest: INTERRUPTED too
    assert _run("--run-id", "c1") == 1
    assert "SyntaxError" in capsys.readouterr().out


SLEEPING_CLAIMS = '''
import time

from harness.stats.result import TestResult


def test_dual_regimes(record_claim):
    record_claim(TestResult("c1", 1.0, 0.01, 1.0, 0.5, 1.5, "supported"), model="gpt2-xl")


def test_no_routing():
    time.sleep(60)
'''

DRIVER = '''
import sys
from pathlib import Path

from harness import cli
from harness.report import cli as report_cli

report_cli.repo_root = lambda: Path(sys.argv[1])
report_cli.check_models = lambda names: None
sys.exit(cli.main(["run", "--models", "gpt2-xl", "--out", sys.argv[2], "--run-id", "s1"]))
'''


def test_exit_130_on_a_real_ctrl_c(checkout, tmp_path):
    """SIGINT while a claim case runs: exit 130, the finished case kept in the report."""
    checkout("progress_sleeping", SLEEPING_CLAIMS)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, str(driver), str(report_cli.repo_root()), str(out)], cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    lines = []
    for line in proc.stdout:  # wait until the first case has finished
        lines.append(line)
        if line.startswith("[1/2]"):
            break
    time.sleep(0.5)  # inside the second case's sleep
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(lines) + rest
    assert lines[-1].startswith("[1/2] gpt2-xl  dual-regimes: supported")
    assert "KeyboardInterrupt" in rest
    data = json.loads((out / "s1" / "results.json").read_text())
    assert [r["claim"] for r in data["claims"]] == ["dual-regimes"]


def test_exit_code_mapping():
    assert report_cli.exit_code(pytest.ExitCode.OK) == 0
    assert report_cli.exit_code(pytest.ExitCode.TESTS_FAILED) == 1
    assert report_cli.exit_code(pytest.ExitCode.INTERRUPTED) == 1
    assert report_cli.exit_code(pytest.ExitCode.INTERRUPTED, interrupted=True) == 130
    assert report_cli.exit_code(pytest.ExitCode.INTERNAL_ERROR) == 1
    assert report_cli.exit_code(pytest.ExitCode.USAGE_ERROR) == 2


def test_time_left_uses_tabulated_times_scaled_by_speed(monkeypatch):
    """A (model, claim) not yet seen is estimated from runinfo's measured 2-CPU times,
    scaled by how fast this run has been on the cases that have a tabulated time."""
    from harness.report.plugin import ClaimProgress

    monkeypatch.setattr(runinfo, "CASE_SECONDS", {("a", "dual-regimes"): 10.0,
                                                  ("b", "no-routing"): 100.0})
    monkeypatch.setattr(runinfo, "PREPARE_SECONDS", {"a": 20.0, "b": 200.0})
    progress = ClaimProgress.__new__(ClaimProgress)
    progress.items = ["claims/test_dual_regimes.py::t[a]", "claims/test_no_routing.py::t[b]",
                      "claims/test_no_routing.py::t[c]"]
    progress.params = {progress.items[0]: {"model_name": "a"},
                       progress.items[1]: {"model_name": "b", "mode": "bos"},
                       progress.items[2]: {"model_name": "c", "mode": "bos"}}
    progress.finished = {}
    progress.prepared = {}
    assert progress.seconds_left() is None  # nothing finished yet: no estimate
    progress.prepared = {"a": 40.0}  # twice the tabulated 20 s
    progress.finished = {progress.items[0]: 20.0}  # twice the tabulated 10 s
    # b: 2 x (100 s + 200 s preparation); c: no table -> mean of no-routing cases (none) ->
    # mean of all finished cases (20 s) + mean preparation seen (40 s)
    assert progress.seconds_left() == pytest.approx(2 * 300 + 20 + 40)


@pytest.mark.tiny
def test_rarebench_run_on_tiny_gpt2(tmp_path):
    """The real claim 1 on the committed tiny-gpt2 fixture through the real `rarebench run`:
    exit 0, a 'model prepared' line and a case line whose numbers match results.json."""
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
           "RAREBENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--models", "tiny-gpt2", "-k",
         "test_dual_regimes", "--out", str(tmp_path / "out"), "--run-id", "t1",
         "--cache-dir", str(tmp_path / "store"), "--device", "cpu"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / "out" / "t1" / "results.json").read_text())
    [rec] = data["claims"]
    lines = proc.stdout.splitlines()
    [prep] = [m.groups() for m in map(PREPARED.match, lines) if m]
    assert prep[0] == "tiny-gpt2" and float(prep[1]) > 0
    assert int(prep[2]) == rec["settings"]["eval"]["n_rows"] == 64
    assert int(prep[3].replace(",", "")) == rec["settings"]["n_pos"]
    [case] = _cases(proc.stdout)
    assert case[:5] == ("1", "1", "tiny-gpt2", "dual-regimes", "target-q50")
    golden = rec["result"]["details"]["golden"]
    assert case[5] == rec["result"]["verdict"] + (", golden ok" if golden["matches"]
                                                 else ", GOLDEN DIFFERS")
    assert float(case[6]) >= rec["wall_time_s"] - 0.05 and case[9] == "done"
    assert lines[-1] == f"report: {tmp_path / 'out' / 't1' / 'REPORT.md'}"
