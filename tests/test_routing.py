"""Claim-3 analysis (harness.analyses.routing): matching, paired differences, verdicts, details."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.analyses.plots_routing import (head_grid, plot_rare_common_scatter,
                                            plot_selectivity_heatmap)
from harness.analyses.routing import match_common, no_routing_test, paired_rows
from harness.analyses.synthetic_routing import synthetic_routing, with_rare_gain
from harness.errors import BadInputError


def test_match_common_same_row_window_fallback_and_nearest():
    # row 0: positions 0..9, rare at 2 and 9; row 1: positions 0..3, all rare except none
    row = np.array([0] * 10 + [1] * 4)
    pos = np.r_[np.arange(10), np.arange(4)]
    rare = np.zeros(14, bool)
    rare[[2, 9, 10, 11, 12, 13]] = True
    m = match_common(rare, ~rare, row, pos, window=2)
    assert m.rare_idx.tolist() == [2, 9, 10, 11, 12, 13]
    refs = [np.flatnonzero(m.refs[i].toarray()[0]).tolist() for i in range(6)]
    assert refs[0] == [0, 1, 3, 4]            # same row, |t - 2| <= 2
    assert refs[1] == [7, 8]                  # window cut by the row end
    assert refs[2] == [0, 1]                  # row 1 has no common: window over all rows
    assert refs[5] == [1, 3, 4, 5]            # t = 3 over all rows (row 0 only has commons)
    assert m.same_row.tolist() == [True, True, False, False, False, False]
    assert m.nearest.tolist() == [1, 8, -1, -1, -1, -1]   # tie at 1 vs 3 -> earlier
    assert m.n_unmatched == 0


def test_paired_rows_recovers_a_planted_difference():
    row = np.repeat(np.arange(4), 8)
    pos = np.tile(np.arange(8), 4)
    rare = pos == 4
    values = np.vstack([np.where(rare, 3.0, 1.0), np.ones(32)])   # head 0: +2 at rare
    pr = paired_rows(values, match_common(rare, ~rare, row, pos), row)
    np.testing.assert_allclose(pr.diff / pr.count, [[2.0, 0.0]] * 4)
    np.testing.assert_allclose(pr.diff1 / pr.count1, [[2.0, 0.0]] * 4)
    np.testing.assert_allclose(pr.ref / pr.count, 1.0)


def test_planted_head_is_the_only_routing_head():
    d = synthetic_routing(seed=3, planted_head=5, strength=0.4, rare_gain=0.5)
    r = no_routing_test(*d.test_args(), n_boot=200)
    assert r.verdict == "not supported"
    assert r.details["routing_heads"] == [list(d.planted)]
    assert r.details["inconclusive"] is False
    assert r.effect == pytest.approx(0.4, abs=0.1)        # relative selectivity ~ s
    assert r.ci_low < 0.4 < r.ci_high
    assert r.details["focus_head"] == list(d.planted)
    json.dumps(r.to_dict(), allow_nan=False)


def test_null_with_shared_gain_is_supported_with_equivalence():
    d = synthetic_routing(seed=4, rare_gain=0.5)
    r = no_routing_test(*d.test_args(), n_boot=300)
    assert r.verdict == "supported", r.details["per_head"]
    assert r.details["routing_heads"] == []
    assert all(r.details["top_heads_equivalent"]) and len(r.details["top_heads"]) == 5
    sel = r.details["selectivity_distribution"]
    assert -0.1 < sel["median"] < 0.1
    conc = r.details["concentration"]
    assert conc["spearman_rare_common"]["estimate"] > 0.8
    assert 0.2 < conc["gini_common"]["estimate"] < 0.9
    lo, hi = conc["gini_rare"]["ci95"]
    assert lo <= conc["gini_rare"]["estimate"] <= hi
    assert len(r.details["loss_effect"]["rare"]) == len(d.heads)


def test_raw_influence_calls_a_shared_gain_routing_but_normalised_does_not():
    plain = synthetic_routing(seed=5)
    gained = with_rare_gain(plain, 0.5)
    raw = no_routing_test(*gained.test_args(), normalise="none", n_boot=100)
    assert len(raw.details["routing_heads"]) == len(plain.heads)
    assert raw.details["fraction_heads_routing"] == 1.0
    # the random-group normalisation cancels the gain exactly
    a = no_routing_test(*plain.test_args(), n_boot=100)
    b = no_routing_test(*gained.test_args(), n_boot=100)
    np.testing.assert_allclose([h["rel_selectivity"] for h in a.details["per_head"]],
                               [h["rel_selectivity"] for h in b.details["per_head"]], atol=1e-5)
    assert b.details["routing_heads"] == a.details["routing_heads"]
    np.testing.assert_allclose([h["p"] for h in a.details["per_head"]],
                               [h["p"] for h in b.details["per_head"]], rtol=1e-6)


def test_negative_selectivity_is_not_routing():
    d = synthetic_routing(seed=6, planted_head=1, strength=-0.4)
    r = no_routing_test(*d.test_args(), n_boot=100)
    assert r.details["routing_heads"] == []
    assert list(d.planted) in r.details["negative_heads"]


def test_tiny_margin_makes_the_verdict_inconclusive():
    d = synthetic_routing(seed=7)
    r = no_routing_test(*d.test_args(), margin=0.01, n_boot=100)
    assert r.verdict == "not supported" and r.details["inconclusive"] is True
    assert r.details["routing_heads"] == []


def test_specificity_sees_plateau_neurons_moved_twice_as_much():
    d = synthetic_routing(seed=8, n_rows=20, n_groups=40, plateau_gain=2.0)
    spec = no_routing_test(*d.test_args(), n_boot=50).details["specificity"]
    np.testing.assert_allclose(spec["ratio"], 2.0, rtol=0.05)
    assert spec["n_heads_specific"] == len(d.heads)
    assert spec["min_attainable_p"] == pytest.approx(1 / 41)
    same = synthetic_routing(seed=8, n_rows=20, n_groups=40, plateau_gain=1.0)
    spec1 = no_routing_test(*same.test_args(), n_boot=50).details["specificity"]
    assert spec1["n_heads_specific"] == 0


def test_too_few_rows_is_untestable():
    d = synthetic_routing(seed=9, n_rows=6)
    r = no_routing_test(*d.test_args(), n_boot=50)
    assert r.verdict == "untestable" and "evaluate more rows" in r.details["reason"]


def test_bad_inputs_raise_user_errors():
    d = synthetic_routing(seed=10, n_rows=12)
    args = list(d.test_args())
    with pytest.raises(BadInputError, match="disjoint"):
        no_routing_test(*args[:2], d.rare, np.ones_like(d.rare), *args[4:])
    with pytest.raises(BadInputError, match="head labels"):
        no_routing_test(*args[:7], d.heads[:-1])
    with pytest.raises(BadInputError, match="random group"):
        no_routing_test(args[0], None, *args[2:])
    with pytest.raises(BadInputError, match="infl_random"):
        no_routing_test(args[0], args[1][:, :2], *args[2:])


def test_plots_write_pngs(tmp_path):
    d = synthetic_routing(seed=11, planted_head=3, strength=0.5)
    r = no_routing_test(*d.test_args(), n_boot=50)
    grid = head_grid(r.details["per_head"], "rel_selectivity")
    assert grid.shape == (2, 4) and np.argmax(grid.ravel()) == 3
    for fn, name in ((plot_selectivity_heatmap, "heat.png"),
                     (plot_rare_common_scatter, "scatter.png")):
        out = fn(r, tmp_path / name)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
