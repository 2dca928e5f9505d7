import json
import math

import numpy as np
import pytest

from harness.analyses.plots_regimes import plot_regimes
from harness.analyses.regimes import (dual_regimes_test, fixed_regimes, huber_regimes, influence,
                                      plateau_lift, plateau_neurons, rank_window, resolve_bounds,
                                      segmented_regimes, sorted_curve, top_neurons, window_excess)
from harness.analyses.segmented import compare_segments, huber_three_piece, log_bin
from harness.analyses.synthetic_regimes import make_regimes_data
from harness.errors import BadInputError
from harness.stats.precondition import check_learned

FAST = {"n_perm": 99, "n_boot": 100, "n_size_draws": 10, "n_loss_draws": 5}


def three_regime_curve(n=2000, b1=3.0, b2=5.5, noise=0.0, seed=0):
    x = np.log(np.arange(1, n + 1))
    y = np.where(x < b1, 1.0 - 0.1 * x, 1.0 - 0.1 * b1 - 0.6 * (x - b1))
    top = np.log(n + 1)
    y = np.where(x > b2, y[np.searchsorted(x, b2)] + 1.5 * (np.log(top - x) - np.log(top - b2)), y)
    return np.exp(y + np.random.default_rng(seed).normal(0, noise, n))


def test_paper_boundaries_reproduce_p3_shares():
    assert rank_window((3.5, 5.5)) == (33, 244)
    assert resolve_bounds(1940) == pytest.approx((3.5, 5.5))
    assert resolve_bounds(5000) == pytest.approx((3.5, 5.5))
    f = math.log(128) / math.log(1940)
    assert resolve_bounds(128) == pytest.approx((3.5 * f, 5.5 * f))
    fit = fixed_regimes(np.arange(1940, 0, -1.0) ** 2.0)
    np.testing.assert_allclose(fit.shares, (0.017, 0.109, 0.874), atol=5e-4)


def test_window_excess_matches_fixed_fit_and_is_zero_on_a_power_law():
    r = np.arange(1, 301, dtype=float)
    pure = 3.0 * r ** -0.7
    np.testing.assert_allclose(window_excess(pure[None], 33, 244), 0.0, atol=1e-9)
    raised = pure.copy()
    raised[:10] *= 2.0
    exc = window_excess(raised[::-1][None], 33, 244)[0]  # order of neurons is irrelevant
    np.testing.assert_allclose(exc, 10 * math.log(2.0), rtol=1e-9)
    fit = fixed_regimes(raised, (3.5, 5.5))
    np.testing.assert_allclose(fit.plateau_excess, exc, rtol=1e-9)
    assert fit.plateau_size == 10 and fit.slope == pytest.approx(0.7, rel=1e-9)


def test_plateau_lift_is_scale_free_and_detects_a_raised_top():
    rng = np.random.default_rng(0)
    base = rng.permutation(np.arange(1, 201, dtype=float) ** -0.8)
    assert plateau_lift(base, base, 9, 34)[0] == pytest.approx(0.0, abs=1e-12)
    assert plateau_lift(5.0 * base, base, 9, 34)[0] == pytest.approx(0.0, abs=1e-9)
    top = np.argsort(-base)[:9]
    lifted = base.copy()
    lifted[top] *= np.e
    assert plateau_lift(lifted, base, 9, 34)[0] == pytest.approx(1.0, rel=1e-9)


def test_influence_and_sorted_curve():
    rng = np.random.default_rng(1)
    delta = rng.normal(size=(50, 20)).astype(np.float32)
    mask = rng.random(50) < 0.3
    infl = influence(delta, mask)
    np.testing.assert_allclose(infl, delta[mask].mean(0), rtol=1e-5)
    idx, v = sorted_curve(infl, "suppress")
    assert np.all(infl[idx] < 0) and np.all(np.diff(v) <= 0)
    np.testing.assert_array_equal(top_neurons(delta, mask, 3, "boost"), np.argsort(-infl)[:3])
    with pytest.raises(BadInputError):
        influence(delta, np.zeros(50, bool))


def test_segmented_fit_finds_the_regimes_and_bic_prefers_three():
    v = three_regime_curve(noise=0.05)
    fit = segmented_regimes(v)
    assert fit.plateau_end == pytest.approx(3.0, abs=0.3)
    assert fit.slope == pytest.approx(0.6, abs=0.08)
    assert fit.extra["bic_best_segments"] == 3 and fit.extra["plateau_preferred"]
    x, y = log_bin(*(np.log(np.arange(1, 1001)), -0.5 * np.log(np.arange(1, 1001))))
    fits = compare_segments(x, y)
    assert fits[1].rss == pytest.approx(0.0, abs=1e-18)
    assert fits[1].slopes[0] == pytest.approx(-0.5, rel=1e-9)


def test_huber_fit_recovers_breakpoints_and_slope():
    v = three_regime_curve(noise=0.02)
    x, y = log_bin(np.log(np.arange(1, v.size + 1)), np.log(v))
    h = huber_three_piece(x, y, seed=0)
    assert h.c1 == pytest.approx(3.0, abs=0.25)
    assert h.c2 == pytest.approx(5.5, abs=0.4)
    assert h.slope == pytest.approx(-0.6, abs=0.05)
    assert h.decay_coef == pytest.approx(1.5, abs=0.3)
    fit = huber_regimes(v)
    assert fit.plateau_end == pytest.approx(3.0, abs=0.25) and fit.slope == pytest.approx(0.6, abs=0.05)
    # a continuous knee (flat, then steeper) lies BELOW the backward power-law extrapolation:
    # by the methods.md definition (top ranks above the line) it is not a plateau
    assert fit.plateau_size <= 2 and fit.plateau_excess < 0


def test_planted_plateau_is_supported_and_details_are_json():
    d = make_regimes_data(seed=5, k=9, effect=1.0)
    r = dual_regimes_test(d.delta, d.row, d.rare, d.common, d.loss, seed=1, **FAST)
    assert r.verdict == "supported", r.details["decision"]
    assert r.p_value == pytest.approx(0.01) and r.ci_low > 0.1
    assert r.details["loss_matched"]["ci"][0] > 0
    assert r.details["size_matched"]["frac_lift_ge_rare"] == 0.0
    assert r.details["reliability"]["spearman"] >= 0.5
    assert {"fixed", "segmented", "huber"} <= set(r.details["fits"]["rare"])
    text = json.dumps(r.to_dict(), allow_nan=False)
    assert "curves" in text
    found = set(plateau_neurons(d.delta, d.rare).tolist())
    assert len(found & set(d.planted.tolist())) >= 8


def test_difficulty_plateau_is_not_called_rarity():
    d = make_regimes_data(seed=6, k=9, effect=1.0, mode="difficulty")
    r = dual_regimes_test(d.delta, d.row, d.rare, d.common, d.loss, describe=False, **FAST)
    assert r.verdict == "not supported"
    assert not r.details["decision"]["conditions"]["beyond_difficulty"]
    assert any("difficulty" in f for f in r.details["decision"]["failed"])


def test_untestable_paths_and_bad_input():
    d = make_regimes_data(seed=7)
    pre = check_learned(12.3, 50257)
    r = dual_regimes_test(d.delta, d.row, d.rare, d.common, d.loss, precondition=pre, **FAST)
    assert r.verdict == "untestable" and "12.300" in r.details["message"]
    # the numbers are still computed and shown beside the untestable verdict
    assert np.isfinite(r.statistic) and 0 < r.p_value <= 1 and r.ci_low <= r.ci_high
    assert r.details["precondition"]["ok"] is False
    few = np.zeros_like(d.rare)
    few[:2] = True
    r2 = dual_regimes_test(d.delta, d.row, few, ~few, d.loss, **FAST)
    assert r2.verdict == "untestable" and "too few rare" in r2.details["reason"]
    with pytest.raises(BadInputError):
        dual_regimes_test(d.delta, d.row, d.rare, d.rare, d.loss, **FAST)
    with pytest.raises(BadInputError):
        dual_regimes_test(d.delta, d.row[:-1], d.rare, d.common, d.loss, **FAST)


def test_plot_writes_png(tmp_path):
    d = make_regimes_data(seed=8, k=9, effect=1.0)
    r = dual_regimes_test(d.delta, d.row, d.rare, d.common, d.loss, huber=False, **FAST)
    out = plot_regimes(r.to_dict()["details"], tmp_path / "regimes.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    with pytest.raises(BadInputError):
        plot_regimes({}, tmp_path / "x.png")
