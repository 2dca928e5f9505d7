"""harness.api: the Python API (run_claims, read_results, list_claims, load_model).

The end-to-end run is not repeated here (one claim on tiny-gpt2 with --quick takes ~40-60 s
on 2 CPU cores; `rarebench run` itself is tested in test_cli.py): run_claims is checked down
to the `rarebench run` entry, which is replaced by one that writes a results.json.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import harness
from harness import api
from harness.errors import BadInputError
from harness.report.schema import load_results

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "reports" / "example" / "results.json"


def test_import_harness_is_cheap_and_api_is_reexported():
    code = ("import sys, harness; heavy = [m for m in ('pandas', 'torch', 'matplotlib', "
            "'harness.api') if m in sys.modules]; print(heavy); "
            "from harness import run_claims, read_results, list_claims, load_model; "
            "print(run_claims.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "harness.api"
    assert {"run_claims", "read_results", "list_claims", "load_model"} <= set(dir(harness))
    with pytest.raises(AttributeError):
        harness.no_such_function


def test_read_results_example_v1_upgraded():
    df = harness.read_results(EXAMPLE)
    raw = json.loads(EXAMPLE.read_text())
    assert len(df) == len(raw["claims"]) == 23
    assert list(df.columns) == api.COLUMNS
    assert df.attrs["upgraded_from"] == 1 and df.attrs["schema_version"] == 2
    assert df.attrs["report_path"] == str(EXAMPLE.parent / "REPORT.md")
    assert set(df["claim"]) == {"dual-regimes", "no-clustering", "no-routing"}
    assert set(df["model"]) == {"tiny-gpt2", "tiny-pythia", "smollm2-135m"}
    # four-word verdicts only ('not supported' upgraded)
    assert set(df["verdict"]) <= {"supported", "refuted", "inconclusive", "untestable"}
    assert "not supported" not in set(df["verdict"])
    first = df.iloc[0]
    rec = raw["claims"][0]
    assert first["model"] == rec["model"] and first["seed"] == rec["seed"]
    assert first["rarity"] == "target q15" and first["rarity_q"] == 15.0
    assert first["effect"] == pytest.approx(rec["result"]["effect"])
    assert first["ci_low"] == pytest.approx(rec["result"]["ci_low"])
    assert first["ci_high"] == pytest.approx(rec["result"]["ci_high"])
    assert first["p"] == pytest.approx(rec["result"]["p_value"])
    assert first["power"] == pytest.approx(rec["calibration"]["power"])
    assert first["direction"] == "exists"
    # claim 3 rows are told apart by their variant (ablation mode)
    routing = df[df["claim"] == "no-routing"]
    assert routing.groupby(["model", "rarity", "variant"]).size().max() == 1
    # numeric columns are floats (NaN where a record has none), ready for plotting
    assert df["effect"].dtype.kind == "f" and df["effect"].isna().sum() == 1


def test_results_frame_v2_record():
    data = load_results(EXAMPLE)  # upgraded to schema 2 in memory
    rec = data["claims"][5]
    rec["result"]["details"]["decision"] = {"verdict": rec["result"]["verdict"],
                                            "direction": "exists", "sesoi": 0.18,
                                            "reason": "why"}
    rec["result"]["details"]["own_power"] = {"power": 0.8, "power_se": 0.04, "fpr": 0.05,
                                             "mde80": 0.2, "n_reps": 100}
    data["claims"] = [rec]
    data["skipped"] = [{"claim": "no-routing", "model": "x", "reason": "no weights"}]
    df = harness.results_frame(data)
    row = df.iloc[0]
    assert (row["sesoi"], row["power"], row["power_se"], row["fpr"], row["mde80"]) == (
        0.18, 0.8, 0.04, 0.05, 0.2)
    assert row["message"] in ("why", rec["result"]["details"].get("message"))
    assert df.attrs["skipped"] == data["skipped"] and df.attrs["errors"] == []
    assert df.attrs["interrupted"] is False
    assert harness.results_frame({**data, "interrupted": True}).attrs["interrupted"] is True


def test_read_results_bad_file(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        harness.read_results(tmp_path / "missing.json")
    bad = tmp_path / "results.json"
    bad.write_text('{"schema": "other"}')
    with pytest.raises(BadInputError, match="not a rarebench results file"):
        harness.read_results(bad)


def test_list_claims_with_sesoi():
    claims = harness.list_claims()
    assert list(claims.index) == ["dual-regimes", "no-clustering", "no-routing", "coordination",
                                  "heavy-tails", "necessity"]
    assert list(claims["number"]) == [1, 2, 3, 4, 5, 6]
    assert list(claims["direction"]) == ["exists", "absent", "absent", "exists", "exists",
                                         "exists"]
    assert (claims["sesoi"] > 0).all()
    assert claims["sesoi_measure"].str.len().gt(0).all()
    assert claims["sesoi_why"].str.len().gt(0).all()
    specs = harness.list_claims(as_frame=False)
    assert {k: s.sesoi.value for k, s in specs.items()} == claims["sesoi"].to_dict()


def test_run_argv_matches_rarebench_run_flags():
    argv = api.run_argv(models=["tiny-gpt2", "tiny-pythia"], claims=["claim 1", "no-routing"],
                        rarity_which="target", rarity_q=[15, 50], seeds=[0, 1],
                        out="/tmp/r", quick=True, power_reps=8, routing_modes=["bos", "zero"],
                        keyword="tiny", run_id="abc")
    assert argv == ["run", "--out", "/tmp/r", "--models", "tiny-gpt2,tiny-pythia",
                    "--rarity-which", "target", "--rarity-q", "15,50", "--seeds", "0,1",
                    "-k", "(test_dual_regimes or test_no_routing) and (tiny)",
                    "--power-reps", "8", "--routing-modes", "bos,zero", "--run-id", "abc",
                    "--quick"]
    # every flag it builds is one `rarebench run` parses, to the values given
    from harness.cli import build_parser

    args = build_parser().parse_args(argv)
    assert (args.models, args.rarity_q, args.seeds, args.power_reps, args.quick) == (
        "tiny-gpt2,tiny-pythia", "15,50", "0,1", "8", True)
    assert api.run_argv() == ["run", "--out", "reports"]  # the command's own defaults
    with pytest.raises(BadInputError, match="unknown option"):
        api.run_argv(rarity="q50")
    with pytest.raises(BadInputError, match="claims: unknown no-such"):
        api.run_argv(claims="no-such")


def test_run_claims_calls_rarebench_run_and_returns_frame(tmp_path, monkeypatch):
    from harness.report import cli

    seen = {}

    def fake_run_command(args):  # what `rarebench run` leaves behind: out/<run-id>/results.json
        seen["args"] = args
        run_dir = Path(args.out).resolve() / args.run_id
        run_dir.mkdir(parents=True)
        shutil.copyfile(EXAMPLE, run_dir / "results.json")
        return 0

    monkeypatch.setattr(cli, "run_command", fake_run_command)
    df = harness.run_claims(models="tiny-gpt2", claims="dual-regimes", rarity_q=50,
                            quick=True, out=tmp_path, power_reps=2)
    args = seen["args"]
    assert (args.models, args.rarity_q, args.keyword, args.quick, args.power_reps) == (
        "tiny-gpt2", "50", "test_dual_regimes", True, "2")
    assert args.run_id  # a fresh run id, so the results file is known
    assert df.attrs["exit_code"] == 0
    assert df.attrs["results_path"] == str(tmp_path.resolve() / args.run_id / "results.json")
    assert df.attrs["argv"][:2] == ["rarebench", "run"]
    assert len(df) == 23


def test_run_claims_without_results_and_interrupt(tmp_path, monkeypatch):
    from harness.report import cli

    monkeypatch.setattr(cli, "run_command", lambda args: 1)
    with pytest.raises(BadInputError, match="wrote no results.json"):
        harness.run_claims(models="tiny-gpt2", out=tmp_path)
    for rc in (130, 143):  # Ctrl-C, SIGTERM
        monkeypatch.setattr(cli, "run_command", lambda args, rc=rc: rc)
        with pytest.raises(KeyboardInterrupt, match="read_results"):
            harness.run_claims(models="tiny-gpt2", out=tmp_path)


def test_run_claims_bad_model_fails_before_running(tmp_path):
    from harness.errors import RarebenchError

    with pytest.raises(RarebenchError):
        harness.run_claims(models="no-such-model", out=tmp_path)
    assert not any(tmp_path.iterdir())


def test_load_model_tiny_fixture():
    model = harness.load_model("tiny-gpt2")
    assert model.name == "tiny-gpt2"
