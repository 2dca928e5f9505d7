"""`rarebench run` / `rarebench report`: argument checking (exit 2, one line), the pytest
command line `run` builds, and re-rendering a results.json into another directory."""

from __future__ import annotations

import json
import sys
import types

import pytest

from harness import cli
from harness.errors import UnknownModelError
from harness.report import cli as report_cli
from harness.report.schema import empty_results, write_results
from harness.stats.result import TestResult


def _one_line_error(capsys, *needles: str) -> None:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rarebench: error: "), err
    for needle in needles:
        assert needle in err, err


@pytest.fixture
def results_file(tmp_path):
    run = tmp_path / "reports" / "r9"
    (run / "figures" / "t").mkdir(parents=True)
    (run / "figures" / "t" / "curve.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    results = empty_results("r9", {"models": ["tiny-gpt2"]}, {})
    res = TestResult("regimes", 1.0, 0.03, 0.7, 0.2, 1.2, "supported", effect_name="excess")
    results["claims"] = [{"nodeid": "claims/test_dual_regimes.py::t", "claim": "dual-regimes",
                          "model": "tiny-gpt2", "seed": 0, "settings": {},
                          "result": res.to_dict(), "figures": {"curve": "figures/t/curve.png"}}]
    return write_results(results, run / "results.json")


def test_report_rerenders_into_another_dir(results_file, tmp_path, capsys):
    out = tmp_path / "elsewhere"
    assert cli.main(["report", str(results_file), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == [f"report (html): {out / 'REPORT.html'}", f"report: {out / 'REPORT.md'}"]
    assert (out / "REPORT.html").stat().st_size > 0
    text = (out / "REPORT.md").read_text()
    assert "![curve](figures/t/curve.png)" in text and "0.7 [0.2, 1.2]" in text
    assert (out / "figures" / "t" / "curve.png").read_bytes().endswith(b"fake")
    assert cli.main(["report", str(results_file)]) == 0  # default: next to results.json
    assert (results_file.parent / "REPORT.md").read_text() == text


def test_report_bad_input_exits_2(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "missing.json")]) == 2
    _one_line_error(capsys, "missing.json does not exist")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli.main(["report", str(bad)]) == 2
    _one_line_error(capsys, "is not valid JSON")
    bad.write_text(json.dumps({"schema": "rarebench.results", "schema_version": 0}))
    assert cli.main(["report", str(bad)]) == 2
    _one_line_error(capsys, "schema_version 0")


@pytest.fixture
def registry(monkeypatch):
    """The model registry, or a stand-in with the same contract while it is not built."""
    try:
        from harness.models import registry as real
        return real
    except ImportError:
        def resolve(name, step=None):
            if name not in ("tiny-gpt2", "tiny-pythia", "smollm2-135m"):
                raise UnknownModelError(f"unknown model {name!r}; see `rarebench models`")
            return name
        fake = types.ModuleType("harness.models.registry")
        fake.resolve = resolve
        monkeypatch.setitem(sys.modules, "harness.models.registry", fake)
        return fake


@pytest.fixture
def fake_pytest_main(monkeypatch):
    calls = []

    def main(argv, plugins=()):
        calls.append(argv)
        return calls_rc[0]

    calls_rc = [0]
    monkeypatch.setattr(pytest, "main", main)
    return calls, calls_rc


def test_run_unknown_model_exits_2_before_pytest(registry, fake_pytest_main, capsys):
    calls, _ = fake_pytest_main
    assert cli.main(["run", "--models", "tiny-gpt2,nope"]) == 2
    _one_line_error(capsys, "nope")
    assert calls == []


@pytest.mark.parametrize("args, needle", [(["--seeds", "a"], "--seeds"),
                                          (["--rarity-q", "0,50"], "percentiles in (0, 100)"),
                                          (["--rarity-which", "next"], "target, current"),
                                          (["--models", ","], "--models is empty")])
def test_run_bad_arguments_exit_2(args, needle, registry, fake_pytest_main, capsys):
    assert cli.main(["run", *args]) == 2
    _one_line_error(capsys, needle)
    assert fake_pytest_main[0] == []


def _options(argv: list[str]) -> dict[str, str]:
    """`--name value` pairs of a pytest command line (flags map to '')."""
    opts, i = {}, 1
    while i < len(argv):
        if i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            opts[argv[i]] = argv[i + 1]
            i += 2
        else:
            opts[argv[i]] = ""
            i += 1
    return opts


def test_run_builds_pytest_command_and_prints_report(registry, fake_pytest_main, tmp_path,
                                                     capsys, monkeypatch):
    calls, _ = fake_pytest_main
    monkeypatch.setattr(report_cli, "default_models", lambda: ["tiny-gpt2", "tiny-pythia"])
    (tmp_path / "rid").mkdir()
    (tmp_path / "rid" / "REPORT.md").write_text("# r")
    rc = cli.main(["run", "--out", str(tmp_path), "--run-id", "rid", "--quick", "-k", "regimes",
                   "--seeds", "0,1", "--rarity-q", "5,50", "--device", "cpu"])
    assert rc == 0
    [argv] = calls
    assert argv[0].endswith("claims")
    assert argv[-1] == "--quick"
    opts = _options(argv)
    assert opts["--models"] == "tiny-gpt2,tiny-pythia" and opts["--seeds"] == "0,1"
    assert opts["--rarity-q"] == "5,50" and opts["--rarity-which"] == "target"
    assert opts["--report-dir"] == str(tmp_path) and opts["--run-id"] == "rid"
    assert opts["--device"] == "cpu" and opts["-k"] == "regimes" and "--quick" in argv
    # quiet, a progress line per case, verdicts recorded rather than asserted
    assert {"-q", "--progress", "--verdicts-only"} <= set(argv)
    # the run's own claim-3 sizes (README: the 2-CPU default), the evaluation sets pytest's
    assert (opts["--routing-modes"], opts["--routing-layers"], opts["--routing-rows"],
            opts["--routing-scope"], opts["--groups"]) == ("bos", "2", "64", "all-positions",
                                                           "plateau-boost")
    assert opts["--power-reps"] == "8"  # the CI setting: the fixtures' goldens apply
    assert "--eval-rows" not in opts and "--common-budget" not in opts
    assert capsys.readouterr().out.strip().endswith(f"report: {tmp_path / 'rid' / 'REPORT.md'}")


def test_run_passes_sizing_options(registry, fake_pytest_main, tmp_path):
    calls, _ = fake_pytest_main
    assert cli.main(["run", "--models", "smollm2-135m", "--out", str(tmp_path),
                     "--eval-rows", "96", "--common-budget", "600", "--routing-layers", "all",
                     "--routing-rows", "48", "--routing-scope", "all-positions,single-query",
                     "--routing-modes", "mean,bos", "--power-reps", "100",
                     "--groups", "plateau-boost,top50-suppress",
                     "--rarity-which", "target,current", "--rarity-q", "15,50"]) == 0
    opts = _options(calls[0])
    assert (opts["--eval-rows"], opts["--common-budget"], opts["--routing-layers"],
            opts["--routing-rows"], opts["--routing-scope"], opts["--routing-modes"],
            opts["--groups"], opts["--rarity-which"], opts["--rarity-q"],
            opts["--power-reps"]) == (
        "96", "600", "all", "48", "all-positions,single-query", "mean,bos",
        "plateau-boost,top50-suppress", "target,current", "15,50", "100")


@pytest.mark.parametrize("args, needle", [
    (["--eval-rows", "3"], "--eval-rows: got '3'; use an integer >= 4"),
    (["--common-budget", "0"], "--common-budget"),
    (["--routing-layers", "some"], "--routing-layers: got 'some'"),
    (["--routing-rows", "-1"], "--routing-rows"),
    (["--routing-scope", "one-query"], "--routing-scope: got 'one-query'"),
    (["--routing-modes", "bos,none"], "--routing-modes: got 'bos,none'"),
    (["--power-reps", "0"], "--power-reps: got '0'"),
    (["--groups", "top7-boost"], "--groups: got 'top7-boost'")])
def test_run_bad_sizing_options_exit_2_before_pytest(args, needle, registry, fake_pytest_main,
                                                      capsys):
    assert cli.main(["run", "--models", "tiny-gpt2", *args]) == 2
    _one_line_error(capsys, needle)
    assert fake_pytest_main[0] == []


def test_run_help_states_defaults_and_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = capsys.readouterr().out
    for needle in ("--eval-rows", "--common-budget", "--routing-rows", "--routing-layers",
                   "--routing-scope", "--routing-modes", "--power-reps", "--groups",
                   "rarity    target q50",
                   "mode bos only", "Exit codes:", "130  interrupted", "0    every claim case "
                   "produced a verdict", "1    a claim test errored", "2    bad input",
                   "Every size used is recorded in each result's settings"):
        assert needle in text, needle


def test_run_nothing_collected_exits_2(registry, fake_pytest_main, capsys):
    fake_pytest_main[1][0] = 5
    assert cli.main(["run", "--models", "tiny-gpt2", "-k", "zzz"]) == 2
    _one_line_error(capsys, "no claim tests were collected")


def test_run_passes_pytest_failure_code(registry, fake_pytest_main, tmp_path):
    fake_pytest_main[1][0] = 1
    assert cli.main(["run", "--models", "tiny-gpt2", "--out", str(tmp_path)]) == 1


def test_run_end_to_end_on_a_fake_checkout(tmp_path, monkeypatch, registry, capsys):
    """Real pytest.main on a checkout whose claims/ holds one test: report written, exit 0."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # hypothesis costs ~5 s/session
    root = tmp_path / "checkout"
    (root / "claims").mkdir(parents=True)
    (root / "conftest.py").write_text(
        'pytest_plugins = ["harness.report.plugin"]\n\n'
        "def pytest_addoption(parser):\n"
        "    for name in ('--models', '--seeds', '--device', '--cache-dir', '--groups',\n"
        "                 '--routing-modes', '--routing-layers', '--routing-rows',\n"
        "                 '--routing-scope', '--power-reps'):\n"
        "        parser.addoption(name, default=None)\n")
    # a unique module name: the outer session may already have imported claims/test_no_clustering
    (root / "claims" / "test_e2e_fake_clustering.py").write_text(
        "from harness.stats.result import TestResult\n\n"
        "def test_q(record_claim, request, rarity_q, quick):\n"
        "    assert rarity_q == [50.0] and quick\n"
        "    r = TestResult('Q excess', 0.5, 0.7, 0.01, -0.03, 0.05, 'supported')\n"
        "    for m in request.config.getoption('--models').split(','):\n"
        "        record_claim(r, model=m, claim='no-clustering', seed=0, settings={'device': 'cpu'})\n")
    monkeypatch.setattr(report_cli, "repo_root", lambda: root)
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["run", "--models", "tiny-gpt2,tiny-pythia", "--run-id", "e2e", "--quick",
                   "--out", "out"])
    assert rc == 0
    report = tmp_path / "out" / "e2e" / "REPORT.md"
    assert capsys.readouterr().out.rstrip().endswith(f"report: {report}")
    data = json.loads((report.parent / "results.json").read_text())
    assert [(c["claim"], c["model"]) for c in data["claims"]] == [
        ("no-clustering", "tiny-gpt2"), ("no-clustering", "tiny-pythia")]
    assert data["settings"]["models"] == ["tiny-gpt2", "tiny-pythia"]
    assert data["settings"]["quick"] is True
    assert "## Claim 2: No clustering" in report.read_text()
