import math

import numpy as np
import pytest
from scipy import stats

from harness.errors import BadInputError
from harness.stats.calibration import calibration_row, calibration_table, mc_rate
from harness.stats.equivalence import tost, tost_bootstrap
from harness.stats.precondition import check_learned
from harness.stats.reliability import split_half


def test_tost_normal():
    r = tost(0.0, 0.1, -0.5, 0.5, alpha=0.05)
    assert r.equivalent
    np.testing.assert_allclose(r.p_value, stats.norm.sf(5.0), rtol=1e-9)
    np.testing.assert_allclose([r.ci_low, r.ci_high], [-0.1645, 0.1645], atol=1e-3)
    r2 = tost(0.45, 0.1, -0.5, 0.5)
    assert not r2.equivalent and r2.p_value == pytest.approx(stats.norm.cdf(-0.5), rel=1e-9)
    with pytest.raises(BadInputError):
        tost(0.0, 0.1, 1.0, -1.0)


def test_tost_bootstrap_agrees_with_normal():
    s = np.random.default_rng(0).normal(0.1, 0.2, 20000)
    r = tost_bootstrap(0.1, s, -0.5, 0.5)
    n = tost(0.1, 0.2, -0.5, 0.5)
    assert r.equivalent == n.equivalent
    np.testing.assert_allclose([r.ci_low, r.ci_high], [n.ci_low, n.ci_high], atol=0.01)
    np.testing.assert_allclose(r.p_value, n.p_value, atol=0.003)


def test_precondition():
    V = 50257
    bad = check_learned(np.full(10, 12.3), V, unigram_loss=11.0)
    assert not bad.ok and "untestable" in bad.message and "10.825" in bad.message
    good = check_learned(8.0, V)
    assert good.ok and good.uniform_loss == pytest.approx(math.log(V))


def test_split_half_reliable_vs_noise():
    rng = np.random.default_rng(1)
    n_rows, per, k = 80, 10, 200
    row = np.repeat(np.arange(n_rows), per)
    signal = rng.normal(0, 1, k)
    strong = signal + rng.normal(0, 1, (row.size, k))
    noise = rng.normal(0, 1, (row.size, k))
    s = split_half(strong, row, np.random.default_rng(2), top_k=20)
    z = split_half(noise, row, np.random.default_rng(2), top_k=20)
    assert s.spearman > 0.9 and s.top_overlap > 0.5
    assert abs(z.spearman) < 0.2 and z.top_overlap < 0.3
    assert s.n_rows_a + s.n_rows_b == n_rows


def test_calibration_rows():
    assert mc_rate(5, 100) == pytest.approx((0.05, math.sqrt(0.05 * 0.95 / 100)))
    fpr = calibration_row("claim1", "null", 200, 14, alpha=0.05)
    assert fpr.passed  # 0.07 <= 0.05 + 2*0.0154
    assert not calibration_row("claim1", "null", 200, 20, alpha=0.05).passed
    pw = calibration_row("claim1", "k=20", 100, 79, kind="power")
    assert not pw.passed and "| 0.790 |" in pw.markdown()
    assert calibration_table([fpr, pw]).count("\n") == 3
