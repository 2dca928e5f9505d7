"""`rarebench bench` on a tiny random model: JSON schema on the last line and accuracy.
No timing assertions (shared CI machines)."""

from __future__ import annotations

import argparse
import json

import pytest

from harness.ablation import bench

pytestmark = pytest.mark.tiny


def test_bench_json_schema_and_accuracy(monkeypatch, capsys):
    shape = bench.ModelShape(n_layers=1, d_model=16, n_heads=4, d_mlp=32, d_vocab=2000, n_ctx=32)
    monkeypatch.setattr(bench, "_models", lambda *a: [bench.random_model(shape)])
    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers())
    args = parser.parse_args(["bench", "--json", "--positions", "20", "--device", "cpu"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    res = json.loads(lines[-1])
    assert res["device"] == "cpu" and res["positions"] == 20
    assert res["model_shape"]["d_mlp"] == 32 and res["model_shape"]["d_vocab"] == 2000
    hooked, closed = res["methods"]["hooked"], res["methods"]["closed_form"]
    assert hooked["positions_per_s"] > 0 and closed["positions_per_s"] > 0
    assert hooked["extrapolated_to_d_mlp"] is True
    assert closed["max_abs_err_nats"] < 1e-4 and closed["max_abs_err_vs_hooked_nats"] < 1e-4
    assert res["speedup_vs_hooked"]["closed_form"] == pytest.approx(
        closed["positions_per_s"] / hooked["positions_per_s"])
    assert res["exps_per_position"] == 32 * 2000 + 2000
    assert res["flops_per_position"] > res["exps_per_position"]
    assert "closed form" in lines[0] or "closed form" in "\n".join(lines[:-1])
    # the default kernel and a slower one, same positions, same numbers, compared in-process
    assert closed["kernel"] in ("compiled", "triton")
    eager = res["methods"]["closed_form_eager"]
    assert eager["positions"] == 20 and eager["positions_per_s"] > 0
    assert eager["max_abs_diff_vs_closed_form_nats"] < 1e-4
    assert res["speedup_vs_hooked"]["closed_form_vs_eager"] == pytest.approx(
        closed["deltas_positions_per_s"] / eager["positions_per_s"])
