"""The command line under bad input and interruption (issue 21.2, 21.3, 21.5, 21.6, 21.8;
issue 22.6): every bad option or file is one line on stderr and exit 2 before any work starts
(nothing written); `rarebench report --out` never writes outside --out; a SIGINT/SIGTERM'd run
reports the cases it finished, says so, exits 130/143 and resumes from --cache-dir; options are
never silently abbreviated and the help offers only what is accepted."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli
from harness.report import cli as report_cli
from harness.report.schema import empty_results, write_results
from harness.stats.result import TestResult

REPO = Path(__file__).resolve().parents[1]


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rarebench: error: "), err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture
def no_pytest(monkeypatch):
    """pytest.main stand-in recording the argv `rarebench run` builds (rc 0); model names are
    not checked against the registry (they only flow through)."""
    calls: list[list[str]] = []
    monkeypatch.setattr(pytest, "main", lambda argv, plugins=(): calls.append(argv) or 0)
    monkeypatch.setattr(report_cli, "check_models", lambda names: None)
    monkeypatch.delenv("RAREBENCH_CACHE", raising=False)
    return calls


def _opts(argv: list[str]) -> dict[str, str]:
    return {a: b for a, b in zip(argv, argv[1:]) if a.startswith("-")}


# -- issue 22.6: no abbreviations, honest help -----------------------------------------------
def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_no_parser_takes_abbreviations(no_pytest, capsys):
    parsers = list(_parsers(cli.build_parser()))
    assert {p.prog.split()[-1] for p in parsers} >= {"rarebench", "run", "report", "train",
                                                     "build"}
    assert [p.prog for p in parsers if p.allow_abbrev] == []
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--model", "gpt2-xl"])  # not --models
    assert exc.value.code == 2 and no_pytest == []
    assert "unrecognized arguments: --model gpt2-xl" in capsys.readouterr().err


def test_top_level_help_says_what_the_tool_does(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    description = text.split("\n\n")[1].splitlines()
    assert len(description) == 2, description
    assert "rare tokens" in description[0] and "rarebench run" in description[1]
    assert "sub-command" not in text and "exit with code" not in text


def test_rarity_which_offers_only_accepted_values(no_pytest, tmp_path, capsys):
    action = next(a for a in cli.build_parser()._subparsers._group_actions[0]
                  .choices["run"]._actions if "--rarity-which" in a.option_strings)
    assert "both" in action.help
    assert cli.main(["run", "--rarity-which", "both", "--out", str(tmp_path)]) == 0
    from harness.report.runinfo import parse_rarity_which

    assert parse_rarity_which(_opts(no_pytest[0])["--rarity-which"]) == ["target", "current"]


# -- issue 21.8: the sizing options of `pytest claims` ---------------------------------------
@pytest.mark.parametrize("option, value", [
    ("--eval-rows", "96"), ("--common-budget", "500"), ("--routing-layers", "all"),
    ("--routing-rows", "16"), ("--routing-modes", "zero,mean"),
    ("--routing-scope", "single-query"), ("--power-reps", "20"), ("--rarity-ties", "include"),
    ("--mu-over", "kept")])
def test_run_accepts_and_passes_each_claim_option(option, value, no_pytest, tmp_path):
    assert cli.main(["run", "--models", "tiny-gpt2", "--out", str(tmp_path), option,
                     value]) == 0
    assert _opts(no_pytest[0])[option] == value


@pytest.mark.parametrize("option, value", [
    ("--eval-rows", "two"), ("--common-budget", "-5"), ("--routing-layers", "0"),
    ("--routing-rows", "many"), ("--rarity-ties", "loose"), ("--mu-over", "none"),
    ("--power-reps", "1.5")])
def test_run_bad_claim_option_exits_2_before_pytest(option, value, no_pytest, tmp_path,
                                                    capsys):
    out = tmp_path / "out"
    try:
        rc = cli.main(["run", "--models", "tiny-gpt2", "--out", str(out), option, value])
    except SystemExit as exc:  # argparse's own choices check
        rc = exc.code
    assert rc == 2 and no_pytest == [] and not out.exists()
    assert option in capsys.readouterr().err


# -- issue 21.3: options checked before any work ----------------------------------------------
@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody here can create files in: chmod 555, or /proc when running as root
    (root writes through permission bits)."""
    if os.geteuid() == 0:
        yield Path("/proc")
        return
    path = tmp_path / "ro"
    path.mkdir()
    path.chmod(0o555)
    yield path
    path.chmod(0o755)


def _refused(capsys, no_pytest, out: Path, argv: list[str], *needles: str) -> None:
    before = sorted(out.parent.rglob("*")) if out.parent.exists() else []
    assert cli.main(argv) == 2
    _one_line_error(capsys, *needles)
    assert no_pytest == []
    after = sorted(out.parent.rglob("*")) if out.parent.exists() else []
    assert after == before  # nothing half-written: no report dir, no cache dir


def test_run_out_that_is_a_file_or_read_only_exits_2(no_pytest, tmp_path, capsys,
                                                     read_only_dir):
    afile = tmp_path / "reports.txt"
    afile.write_text("not a directory")
    _refused(capsys, no_pytest, afile, ["run", "--out", str(afile)], "--out", "is a file")
    _refused(capsys, no_pytest, afile, ["run", "--out", str(afile / "sub")],
             "which is a file")
    _refused(capsys, no_pytest, tmp_path / "x", ["run", "--out", str(read_only_dir / "new")],
             "--out", "cannot write")


def test_run_cache_dir_that_is_a_file_or_read_only_exits_2(no_pytest, tmp_path, capsys,
                                                           read_only_dir, monkeypatch):
    afile = tmp_path / "cache.bin"
    afile.write_text("x")
    out = tmp_path / "out"
    _refused(capsys, no_pytest, out, ["run", "--out", str(out), "--cache-dir", str(afile)],
             "--cache-dir", "is a file")
    _refused(capsys, no_pytest, out, ["run", "--out", str(out), "--cache-dir",
                                      str(read_only_dir)], "--cache-dir", "cannot write")
    monkeypatch.setenv("RAREBENCH_CACHE", str(afile))
    _refused(capsys, no_pytest, out, ["run", "--out", str(out)], "$RAREBENCH_CACHE")


def test_run_device_cuda_without_cuda_exits_2(no_pytest, tmp_path, capsys, monkeypatch):
    import torch

    out = tmp_path / "out"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _refused(capsys, no_pytest, out, ["run", "--out", str(out), "--device", "cuda"],
             "--device cuda", "CUDA is not available")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    _refused(capsys, no_pytest, out, ["run", "--out", str(out), "--device", "cuda:1"],
             "1 CUDA device(s), cuda:0 to cuda:0")
    _refused(capsys, no_pytest, out, ["run", "--out", str(out), "--device", "gpu"],
             "--device: got 'gpu'")
    assert cli.main(["run", "--out", str(out), "--device", "cuda:0"]) == 0


@pytest.mark.parametrize("args, needle", [
    (["--run-id", "../escape"], "--run-id: got '../escape'"),
    (["--run-id", "a/b"], "--run-id"),
    (["--models", "tiny-gpt2,tiny-gpt2"], "a model is given twice"),
    (["--seeds", "0,1,0"], "a seed is given twice")])
def test_run_illegal_values_and_combinations_exit_2(args, needle, no_pytest, tmp_path,
                                                    capsys):
    out = tmp_path / "out"
    _refused(capsys, no_pytest, out, ["run", "--out", str(out), *args], needle)
    assert not (tmp_path / "escape").exists()


# -- rarebench report: malformed files, --out checked and never left --------------------------
def _results(tmp_path: Path, **record) -> Path:
    run = tmp_path / "reports" / "r1"
    run.mkdir(parents=True)
    results = empty_results("r1", {"models": ["tiny-gpt2"]}, {})
    res = TestResult("regimes", 1.0, 0.03, 0.7, 0.2, 1.2, "supported")
    results["claims"] = [{"nodeid": "claims/test_dual_regimes.py::t", "claim": "dual-regimes",
                          "model": "tiny-gpt2", "seed": 0, "settings": {},
                          "result": res.to_dict(), "figures": {}, **record}]
    return write_results(results, run / "results.json")


@pytest.mark.parametrize("rel", ["../../escape.png", "figures/../../../escape.png",
                                 "/tmp/rarebench-escape.png", "..\\..\\escape.png"])
def test_report_figure_path_outside_the_run_is_refused(rel, tmp_path, capsys):
    path = _results(tmp_path, figures={"curve": rel})
    (tmp_path / "escape.png").write_bytes(b"\x89PNG fake")  # the source the path names
    out = tmp_path / "elsewhere" / "deep" / "out"
    assert cli.main(["report", str(path), "--out", str(out)]) == 2
    _one_line_error(capsys, "points outside the run directory")
    assert not (tmp_path / "elsewhere").exists()  # nothing written, inside --out or out


def test_report_never_writes_through_a_symlink_out_of_out(tmp_path, capsys):
    path = _results(tmp_path, figures={"curve": "figures/curve.png"})
    (path.parent / "figures").mkdir()
    (path.parent / "figures" / "curve.png").write_bytes(b"\x89PNG fake")
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "figures").symlink_to(outside)  # figures/ of --out leads elsewhere
    assert cli.main(["report", str(path), "--out", str(out)]) == 2
    _one_line_error(capsys, "points outside the report directory")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("record, needle", [
    ({"result": "supported"}, "claims[0]: field 'result' must be an object, got str"),
    ({"settings": ["q50"]}, "field 'settings' must be an object or null"),
    ({"figures": "curve.png"}, "field 'figures'"),
    ({"model": 3}, "field 'model' must be a string or null, got int"),
    ({"result": {"verdict": None}}, "claims[0].result: field 'verdict' must be a string"),
    ({"result": {"verdict": "supported", "details": {"decision": "two-sided"}}},
     "claims[0].result.details: field 'decision'"),
    ({"result": {"verdict": "supported", "details": {"own_power": 0.8}}}, "'own_power'"),
    ({"nodeid": None}, "field 'nodeid' must be a string")])
def test_report_malformed_record_is_one_line_exit_2(record, needle, tmp_path, capsys):
    path = _results(tmp_path, **record)
    assert cli.main(["report", str(path)]) == 2
    _one_line_error(capsys, needle)


@pytest.mark.parametrize("field, value, needle", [
    ("skipped", ["tiny-gpt2 skipped"], "skipped[0] must be an object"),
    ("errors", [{"claim": 1, "reason": "x"}], "errors[0]: field 'claim' must be a string"),
    ("interrupted", "yes", "field 'interrupted' must be true/false"),
    ("settings", "all", "field 'settings' must be an object")])
def test_report_malformed_top_level_is_one_line_exit_2(field, value, needle, tmp_path, capsys):
    path = _results(tmp_path)
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))
    assert cli.main(["report", str(path)]) == 2
    _one_line_error(capsys, needle)


def test_report_out_that_is_a_file_or_read_only_exits_2(tmp_path, capsys, read_only_dir):
    path = _results(tmp_path)
    afile = tmp_path / "out.md"
    afile.write_text("x")
    assert cli.main(["report", str(path), "--out", str(afile)]) == 2
    _one_line_error(capsys, "--out", "is a file")
    assert cli.main(["report", str(path), "--out", str(read_only_dir / "r")]) == 2
    _one_line_error(capsys, "--out", "cannot write")
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]


# -- rarebench train: the corpus format --------------------------------------------------------
@pytest.mark.parametrize("text, line", [("Plain text, one sentence.\nAnother one.\n", 1),
                                        ('{"text": "ok"}\n\n["a list"]\n', 3),
                                        ('{"text": "ok"}\n{"body": "no text field"}\n', 2)])
def test_train_corpus_in_another_format_names_the_expected_one(text, line, tmp_path, capsys):
    corpus = tmp_path / "file.txt"
    corpus.write_text(text)
    out = tmp_path / "model"
    assert cli.main(["train", "--preset", "micro-gpt2", "--corpus", str(corpus), "--out",
                     str(out)]) == 2
    _one_line_error(capsys, f"line {line} is not a", 'one {"text": "..."} object per line')
    assert not out.exists()


# -- issue 21.5: SIGINT / SIGTERM --------------------------------------------------------------
FAKE_CONFTEST = '''
pytest_plugins = ["harness.report.plugin"]


def pytest_addoption(parser):  # the options `rarebench run` passes (root conftest.py)
    for name in ("--models", "--seeds", "--device", "--cache-dir", "--groups",
                 "--routing-modes", "--routing-layers", "--routing-rows", "--routing-scope",
                 "--eval-rows", "--common-budget", "--power-reps"):
        parser.addoption(name, default=None)
'''

# claim 1 computes a stage through the real result store in --cache-dir (records whether it
# was reused); claim 3 hangs while HANG is set, so the driver can stop the run inside it
CLAIMS = '''
import os
import time

import numpy as np

from harness.stats.result import TestResult
from harness.store import ResultStore


def test_dual_regimes(record_claim, request):
    computed = []
    store = ResultStore(request.config.getoption("--cache-dir"))
    store.get_or_compute("fake-influence", lambda: computed.append(1) or {"x": np.ones(3)})
    record_claim(TestResult("c1", 1.0, 0.01, 1.0, 0.5, 1.5, "supported",
                            details={"reused": not computed}), model="gpt2-xl")


def test_no_routing(record_claim):
    if os.environ.get("HANG"):
        time.sleep(60)
    record_claim(TestResult("c3", 1.0, 0.01, 1.0, 0.5, 1.5, "supported"), model="gpt2-xl")
'''

DRIVER = '''
import sys
from pathlib import Path

from harness import cli
from harness.report import cli as report_cli

report_cli.repo_root = lambda: Path(sys.argv[1])
report_cli.check_models = lambda names: None
sys.exit(cli.main(["run", "--models", "gpt2-xl", "--out", sys.argv[2], "--run-id", "s1",
                   "--cache-dir", sys.argv[3]]))
'''


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_reports_what_finished_and_resumes(signum, code, tmp_path,
                                                           monkeypatch, capsys):
    root = tmp_path / "checkout"
    (root / "claims").mkdir(parents=True)
    (root / "conftest.py").write_text(FAKE_CONFTEST)
    # a module name of its own: the in-process re-run must not meet the other case's module
    (root / "claims" / f"test_faults_{signum.name.lower()}.py").write_text(CLAIMS)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out, cache = tmp_path / "out", tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
           "HANG": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(driver), str(root), str(out), str(cache)], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    for line in proc.stdout:  # until the first case has finished; the second one hangs
        if line.startswith("[1/2]"):
            break
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stdout + stderr
    run = out / "s1"
    data = json.loads((run / "results.json").read_text())
    assert (data["interrupted"], data["interrupt_signal"], data["cases_finished"],
            data["cases_total"]) == (True, signum.name, 1, 2)
    assert [r["claim"] for r in data["claims"]] == ["dual-regimes"]
    assert (run / "results.partial.json").is_file()
    head = (run / "REPORT.md").read_text().split("## ")[0]
    assert f"INTERRUPTED - 1 of 2 claim cases finished.** The run was stopped by " \
           f"{signum.name}" in head
    assert f"rarebench: interrupted - 1 of 2 claim cases finished; re-run with --cache-dir " \
           f"{cache}" in stderr
    # the next run with the same --cache-dir reuses the stage the stopped run computed
    monkeypatch.delenv("HANG", raising=False)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setattr(report_cli, "repo_root", lambda: root)
    monkeypatch.setattr(report_cli, "check_models", lambda names: None)
    assert cli.main(["run", "--models", "gpt2-xl", "--out", str(out), "--run-id", "s2",
                     "--cache-dir", str(cache)]) == 0
    capsys.readouterr()
    again = json.loads((out / "s2" / "results.json").read_text())
    assert again["interrupted"] is False and again["cases_finished"] == 2
    assert [r["result"]["details"].get("reused") for r in again["claims"]] == [True, None]
    assert not (out / "s2" / "results.partial.json").exists()
    assert "INTERRUPTED" not in (out / "s2" / "REPORT.md").read_text()
