"""Claim-3 analysis (harness.analyses.routing): pairing, the difference-in-differences effect,
the sign-flip test, equivalence over every head, the decision and own-data power."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from harness.analyses.plots_routing import (SCALE, colour_limits, head_grid,
                                            plot_rare_common_scatter, plot_selectivity_heatmap)
from harness.analyses.routing import (SESOI, Components, Resampling, RoutingAnalysis,
                                      assemble, components, head_stats, no_routing_test,
                                      pair_positions, position_values)
from harness.analyses.synthetic_routing import synthetic_routing, with_rare_gain
from harness.errors import BadInputError

FAST = dict(n_boot=200, n_flip=1999)


def _effects(plateau, random, norm, rare, row, pos, centre):
    """(per-head effect, typical gain per half) from the per-row components."""
    pairs = pair_positions(rare, ~rare, row, pos)
    comp = components(position_values(plateau, random, norm, common=~rare), pairs, row)
    out = assemble(comp, np.ones((1, pairs.units.size)), centre)
    return out.T[0] / out.C[0], {f: float(v[0]) for f, v in out.m_median.items()}


def _analysis(d, **kw):
    return RoutingAnalysis(d.infl_plateau, d.infl_random, d.rare, d.common, d.row, d.pos,
                           d.heads, delta_loss=d.delta_loss, **{**FAST, **kw})


def test_pairs_are_nearest_same_row_common_positions_with_balance():
    row = np.array([0] * 10 + [1] * 4)
    pos = np.r_[np.arange(10), np.arange(4)]
    rare = np.zeros(14, bool)
    rare[[2, 9, 10, 11, 12, 13]] = True                 # row 1 has no common position
    p = pair_positions(rare, ~rare, row, pos)
    assert p.rare_idx.tolist() == [2, 9] and p.common_idx.tolist() == [1, 8]  # tie -> earlier
    assert p.n_rare == 6 and p.n_pairs == 2 and p.units.tolist() == [0, 1]
    s = p.summary(pos)
    assert s["n_unpaired"] == 4 and s["n_rows_paired"] == 1 and s["median_distance"] == 1.0


def test_paired_differences_recover_a_planted_difference_under_each_normalisation():
    row = np.repeat(np.arange(4), 8)
    pos = np.tile(np.arange(8), 4)
    rare = pos == 4
    plateau = np.vstack([np.where(rare, 3.0, 1.0), np.ones(32)])   # head 0: x3 at rare
    random = np.ones((2, 2, 32))
    for norm in ("none", "ratio", "did"):
        s, m = _effects(plateau, random, norm, rare, row, pos, centre=False)
        np.testing.assert_allclose(s, [2.0, 0.0])
        assert m == {0: 0.0}


def test_did_keeps_a_router_whose_push_also_moves_random_neurons():
    # one head (0) triples the plateau at rare positions and doubles the random neurons: the
    # plateau/random ratio says +50%, the difference in differences at the model's ratio (1)
    # says +100% of the plateau's common influence
    row = np.repeat(np.arange(4), 8)
    pos = np.tile(np.arange(8), 4)
    rare = pos == 4
    plateau = np.vstack([np.where(rare, 3.0, 1.0)] + [np.ones(32)] * 4)
    random = np.ones((1, 5, 32))
    random[0, 0, rare] = 2.0
    assert _effects(plateau, random, "did", rare, row, pos, False)[0][0] == pytest.approx(1.0)
    assert _effects(plateau, random, "ratio", rare, row, pos, False)[0][0] == pytest.approx(0.5)


def test_centring_divides_out_the_other_heads_typical_plateau_gain():
    # every head moves the plateau (not random neurons) 1.5x at rare positions; head 0 2x more
    row = np.repeat(np.arange(6), 8)
    pos = np.tile(np.arange(8), 6)
    rare = pos == 4
    plateau = np.vstack([np.where(rare, 3.0, 1.0)] + [np.where(rare, 1.5, 1.0)] * 4)
    random = np.ones((1, 5, 48))
    s, m = _effects(plateau, random, "did", rare, row, pos, centre=True)
    assert m == {0: pytest.approx(0.5)}
    np.testing.assert_allclose(s, [1.0, 0, 0, 0, 0], atol=1e-12)


def test_sign_flip_p_matches_exact_enumeration():
    rng = np.random.default_rng(0)
    D = rng.normal(0.3, 1.0, size=(10, 3))
    C = np.ones((10, 3))
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=10)))
    exact = ((signs @ D) >= D.sum(0) - 1e-12).mean(0)
    rs = Resampling.draw(10, 20000, 200, rng)
    comp = Components(Aa=D + C, Ac=C, Ra=None, Rc=None, Pk=None, Rk=None,
                      unit_fold=np.zeros(10, np.int64), plant={})
    hs = head_stats(comp, rs, 0.05, centre=False)
    np.testing.assert_allclose(hs.p, exact, atol=0.01)
    np.testing.assert_allclose(hs.s, D.sum(0) / 10)


def test_planted_head_is_the_only_routing_head_and_the_verdict_is_refuted():
    d = synthetic_routing(seed=3, planted_head=5, strength=0.6, rare_gain=0.5)
    r = no_routing_test(*d.test_args(), **FAST)
    assert r.verdict == "refuted"
    assert r.details["routing_heads"] == [list(d.planted)]
    assert r.details["focus_head"] == list(d.planted)
    assert r.effect == pytest.approx(0.6, abs=0.15)          # the estimand is s
    assert r.ci_low < 0.6 < r.ci_high                           # simultaneous band
    dec = r.details["decision"]
    assert dec["verdict"] == "refuted" and dec["conditions"]["significant"]
    assert dec["gates"]["estimate_exceeds_sesoi"]["value"] == pytest.approx(r.effect)
    assert r.details["message"] == dec["reason"]
    json.dumps(r.to_dict(), allow_nan=False)


def test_confounded_null_is_not_refuted_but_raw_and_ratio_are_fooled():
    d = synthetic_routing(seed=4, rare_gain=0.5, head_gain_sd=0.2, plateau_rare_gain=0.3,
                          k_sd=0.05)
    r = no_routing_test(*d.test_args(), **FAST)
    assert r.verdict != "refuted" and r.details["routing_heads"] == []
    m = r.details["typical_head_gain"]["m"]["0"]
    assert m == pytest.approx(0.3, abs=0.1)                     # the plateau-only gain
    alt = r.details["alternatives"]
    assert alt["none"]["n_routing"] == len(d.heads)              # the paper's raw statistic
    assert alt["ratio"]["n_routing"] >= len(d.heads) // 2       # plateau/random, uncentred
    assert alt["did"]["n_routing"] >= 1                          # did, uncentred


def test_null_with_many_rows_is_supported_by_equivalence_over_every_head():
    d = synthetic_routing(seed=5, n_rows=200, rare_gain=0.5)
    r = no_routing_test(*d.test_args(), **FAST)
    assert r.verdict == "supported", r.details["message"]
    assert r.details["n_heads_equivalent"] == len(d.heads)
    assert r.details["equivalence_p"] < 0.05


def test_a_low_influence_head_beyond_the_margin_blocks_supported():
    # the previous rule checked equivalence for the top-5 heads by influence only; a weak head
    # planted beyond the SESOI must keep 'no routing' from being certified
    d = synthetic_routing(seed=6, n_rows=200, n_layers=3, planted_head=0, strength=0.3,
                          head_sd=0.0)
    scaled = d.infl_plateau.copy()
    scaled[0] *= 0.05
    rnd = d.infl_random.copy()
    rnd[:, 0] *= 0.05
    r = no_routing_test(scaled, rnd, *d.test_args()[2:], **FAST)
    assert r.verdict != "supported"
    assert not r.details["per_head"][0]["equivalent"]


def test_negative_selectivity_is_not_routing():
    d = synthetic_routing(seed=7, n_rows=120, planted_head=1, strength=-0.4)
    r = no_routing_test(*d.test_args(), **FAST)
    assert r.details["routing_heads"] == []
    assert list(d.planted) in r.details["negative_heads"]


def test_tiny_sesoi_makes_the_verdict_inconclusive():
    d = synthetic_routing(seed=8)
    r = no_routing_test(*d.test_args(), sesoi=0.01, **FAST)
    assert r.verdict == "inconclusive" and r.details["routing_heads"] == []


def test_too_few_rows_fail_a_validity_gate():
    d = synthetic_routing(seed=9, n_rows=6)
    r = no_routing_test(*d.test_args(), **FAST)
    assert r.verdict == "inconclusive"
    gate = r.details["decision"]["gates"]["enough_rows"]
    assert gate["passed"] is False and gate["value"] < 10 and "more rows" in r.details["message"]


def test_folds_get_their_own_k_and_rows_must_not_span_folds():
    d = synthetic_routing(seed=10, n_rows=20)
    fold = (d.row >= 10).astype(int)
    r = _analysis(d, fold=fold).result()
    assert set(r.details["normalisation_k"]) == {"0", "1"}
    assert set(r.details["typical_head_gain"]["m"]) == {"0", "1"}
    bad = fold.copy()
    bad[0] = 1 - bad[0]
    with pytest.raises(BadInputError, match="one cross-fitting fold"):
        _analysis(d, fold=bad)


def test_bad_inputs_raise_user_errors():
    d = synthetic_routing(seed=11, n_rows=12)
    args = list(d.test_args())
    with pytest.raises(BadInputError, match="disjoint"):
        no_routing_test(*args[:2], d.rare, np.ones_like(d.rare), *args[4:])
    with pytest.raises(BadInputError, match="head labels"):
        no_routing_test(*args[:7], d.heads[:-1])
    with pytest.raises(BadInputError, match="random"):
        no_routing_test(args[0], None, *args[2:])
    with pytest.raises(BadInputError, match="infl_random"):
        no_routing_test(args[0], args[1][:, :2], *args[2:])
    with pytest.raises(BadInputError, match="normalise"):
        no_routing_test(*args, normalise="random")


def test_own_power_plants_into_one_real_head_and_shuffles_labels_for_the_null():
    d = synthetic_routing(seed=12, rare_gain=0.5)
    op = _analysis(d).own_power(reps=6, factors=(1.0, 4.0), seed=1)
    assert op.detect == "refuted" and op.sesoi == SESOI.value and op.n_reps == 6
    assert op.curve[4 * SESOI.value] >= 5 / 6                # 0.8 extra selectivity: found
    assert op.fpr <= 1 / 6
    assert "shuffled within rows" in op.how
    json.dumps(op.to_dict(), allow_nan=False)


def test_plots_use_a_fixed_colour_scale_and_write_pngs(tmp_path):
    d = synthetic_routing(seed=13, planted_head=3, strength=0.5)
    r = no_routing_test(*d.test_args(), **FAST)
    grid = head_grid(r.details["per_head"], "rel_selectivity")
    assert grid.shape == (2, 4) and np.argmax(grid.ravel()) == 3
    null = no_routing_test(*synthetic_routing(seed=14).test_args(), **FAST)
    # the scale is fixed in SESOI units: an all-null result is not stretched to saturation
    assert colour_limits(null) == colour_limits(r) == (-SCALE * SESOI.value, SCALE * SESOI.value)
    for fn, name in ((plot_selectivity_heatmap, "heat.png"),
                     (plot_rare_common_scatter, "scatter.png")):
        out = fn(r, tmp_path / name)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
