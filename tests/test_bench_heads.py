"""`rarebench bench --heads`: the single-query benchmark runs both methods on the same rows
and reports their agreement (the timings themselves are not asserted: benchmarks, not tests)."""

from __future__ import annotations

import json

import pytest

from harness.cli import main

pytestmark = pytest.mark.tiny


def test_bench_heads_json(capsys):
    rc = main(["bench", "--heads", "--model", "tiny", "--device", "cpu", "--rows", "2",
               "--seq-len", "24", "--last-layers", "1", "--mode", "zero", "--json"])
    assert rc == 0
    out = capsys.readouterr().out
    res = json.loads(out.strip().splitlines()[-1])
    assert res["rows"] == 2 and res["seq_len"] == 24 and res["layers"] == 1
    assert res["heads"] == 6 and res["measured_positions_per_row"] == 22  # tiny-gpt2: 6 heads
    assert set(res["seconds_per_row"]) == {"joint", "prefix", "all_positions"}
    assert all(v > 0 for v in res["seconds_per_row"].values())
    assert res["max_abs_error_vs_prefix"]["delta_act"] <= 1e-4
    assert res["max_abs_error_vs_prefix"]["delta_loss"] <= 1e-4
    assert "prefix / joint" in out


def test_bench_heads_rejects_suite_flags(capsys):
    assert main(["bench", "--heads", "--shape", "tiny"]) == 2
    assert "--shape belongs to --suite" in capsys.readouterr().err


def test_bench_heads_no_loss(capsys):
    assert main(["bench", "--heads", "--model", "tiny", "--device", "cpu", "--rows", "1",
                 "--seq-len", "16", "--last-layers", "1", "--no-loss", "--json"]) == 0
    out = capsys.readouterr().out
    res = json.loads(out.strip().splitlines()[-1])
    assert res["loss"] is False and res["max_abs_error_vs_prefix"]["delta_loss"] is None
    assert res["max_abs_error_vs_prefix"]["delta_act"] <= 1e-4
    assert "not computed" in out
