"""`rarebench bench --suite`: the whole claim suite on a random tiny model, per stage.
No timing assertions (shared CI machines): the stages exist, ran and are measured."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from harness.ablation import bench, suite_bench
from harness.ablation.heads import MODES, SCOPES
from harness.claimset import load_claims
from harness.cli import main

pytestmark = pytest.mark.tiny

ROWS, SEQ_LEN, ROUTING_ROWS = 12, 48, 8
TINY_HEADS = bench.SHAPES["tiny"].n_layers * bench.SHAPES["tiny"].n_heads


@pytest.fixture(scope="module")
def suite():
    return suite_bench.run_suite("tiny", rows=ROWS, seq_len=SEQ_LEN, routing_rows=ROUTING_ROWS,
                                 power_reps=2, quick=True)


def _check(stages: list[dict], env: dict) -> None:
    """Every claim ran (a verdict, not a skip or an error) with a finite wall time; claim 3 at
    every mode x scope, its head ablation timed apart from its analysis."""
    by_claim = {}
    for s in stages:
        assert math.isfinite(s["wall_s"]) and s["wall_s"] >= 0, s
        assert s["host_peak_mib"] > 0 and s["device_peak_mib"] is None, s
        by_claim.setdefault(s["info"].get("claim"), []).append(s)
    assert set(load_claims()) <= set(by_claim)
    for key in load_claims():
        for s in by_claim[key]:
            assert s["status"].startswith(("verdict", "ok")), s
    for scope in SCOPES:
        for mode in MODES:
            abl = [s for s in stages if s["name"] == f"no-routing {mode}/{scope} head ablation"]
            ana = [s for s in stages if s["name"] == f"no-routing {mode}/{scope} analysis"]
            assert len(abl) == len(ana) == 1
            assert abl[0]["info"]["heads"] == TINY_HEADS == env["heads_ablated"]
            assert abl[0]["info"]["positions"] == env["routing_positions"] > 0
            assert ana[0]["info"]["head_ablation_included"] is False  # compute hit the memo
            assert ana[0]["status"].startswith("verdict")
    names = [s["name"] for s in stages]
    assert names[:5] == ["model init", "data", "forward (mean activation)", "kernel warm-up",
                         "neuron ablation"]
    # every kept position evaluated: BOS-only separators drop t < 3 and the last column
    assert env["evaluated_positions"] == env["kept_positions"] == ROWS * (SEQ_LEN - 4)
    assert stages[4]["info"]["positions"] == env["evaluated_positions"]
    assert env["routing_rows"] == ROUTING_ROWS and env["rows"] == ROWS
    assert env["rare_positions"] > 20


def test_suite_in_process(suite):
    data = suite.to_dict()
    _check(data["stages"], data["env"])
    assert data["total_s"] == pytest.approx(sum(s["wall_s"] for s in data["stages"]))
    table = str(suite)
    for s in suite.stages:
        assert f"| {s.name} |" in table
    assert table.splitlines()[0].startswith("claim suite on random tiny (gpt2, L=2")
    assert json.loads(json.dumps(data)) == data


def test_suite_cli_json_and_out(tmp_path, capsys):
    rc = main(["bench", "--suite", "--shape", "tiny", "--rows", str(ROWS), "--seq-len",
               str(SEQ_LEN), "--routing-rows", str(ROUTING_ROWS), "--power-reps", "2",
               "--quick", "--device", "cpu", "--json", "--out", str(tmp_path)])
    assert rc == 0
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()
    res = json.loads(out[-1])
    _check(res["stages"], res["env"])
    progress = [l for l in captured.err.splitlines() if l.startswith("[bench --suite] ")]
    assert [l.split(":")[0][16:] for l in progress] == [s["name"] for s in res["stages"]]
    assert res["env"]["shape"] == {"family": "gpt2", "n_layers": 2, "d_model": 64, "n_heads": 4,
                                   "d_mlp": 256, "d_vocab": 2000, "n_ctx": 128,
                                   "n_kv_heads": None}
    assert res["env"]["power_reps"] == 2 and res["env"]["threads"] >= 1
    assert json.loads((tmp_path / "suite.json").read_text())["env"] == res["env"]
    assert not (tmp_path / "suite.partial.jsonl").exists()  # removed once complete
    md = (tmp_path / "suite.md").read_text()
    assert "| stage | wall s |" in md and "| neuron ablation |" in md
    assert "| stage | wall s |" in "\n".join(out[:-1])


def test_presets_have_the_real_dimensions():
    s = bench.SHAPES
    assert s["gpt2-xl"] == bench.ModelShape("gpt2", 48, 1600, 25, 6400, 50257, 1024)
    assert s["pythia-1b"] == bench.ModelShape("neox", 16, 2048, 8, 8192, 50304, 2048)
    sm = s["smollm2"]
    assert (sm.family, sm.n_layers, sm.d_model, sm.n_heads, sm.n_kv_heads, sm.d_mlp,
            sm.d_vocab) == ("llama", 30, 576, 9, 3, 1536, 49152)
    # the config a random model is built from (no model built)
    assert bench._hf_config(sm, True, 0.02).num_key_value_heads == 3
    default_llama = bench.ModelShape("llama", n_heads=8)
    assert bench._hf_config(default_llama, True, 0.02).num_key_value_heads == 4


def test_synthetic_data_is_zipf_with_rare_positions():
    p = suite_bench.zipf_probs(2000, seed=0)
    assert p[suite_bench.BOS] == 0 and p.sum() == pytest.approx(1.0)
    top = np.sort(p)[::-1]
    assert top[0] / top[9] == pytest.approx(10.0)  # rank^-1
    rows = suite_bench.synthetic_rows(p, 5, 30, seed=0)
    assert rows.shape == (5, 30) and (rows[:, 0] == suite_bench.BOS).all()
    assert (rows[:, 1:] != suite_bench.BOS).all()
    counts = suite_bench.training_counts(p, 100_000, seed=0)
    assert counts.sum() == 100_000 and counts[suite_bench.BOS] == 0
    # the training sample is separate from the rows, from the same law
    assert np.corrcoef(counts[1:], p[1:])[0, 1] > 0.99


@pytest.mark.parametrize("argv, message", [
    (["bench", "--suite", "--shape", "gpt3"], "unknown shape 'gpt3'"),
    (["bench", "--shape", "tiny"], "--shape need --suite"),
    (["bench", "--suite", "--shape", "tiny", "--seq-len", "4096"], "exceeds the shape's n_ctx"),
])
def test_bad_options_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
