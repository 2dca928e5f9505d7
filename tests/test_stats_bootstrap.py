import numpy as np
import pytest

from harness.errors import BadInputError
from harness.stats.bootstrap import (bootstrap_mean_from_groups, grouped_sums, percentile_ci,
                                     row_bootstrap)


def test_grouped_sums_match_loop():
    rng = np.random.default_rng(0)
    row = rng.integers(0, 7, 200)
    v = rng.normal(size=(200, 30))
    sums, counts = grouped_sums(v, row, n_rows=9)
    for r in range(9):
        np.testing.assert_allclose(sums[r], v[row == r].sum(0), rtol=1e-12, atol=1e-12)
        assert counts[r] == np.sum(row == r)
    s1, c1 = grouped_sums(v[:, 0], row)
    np.testing.assert_allclose(s1, sums[:7, 0], rtol=1e-12)
    with pytest.raises(BadInputError):
        grouped_sums(v, row, n_rows=3)


def test_bootstrap_mean_from_groups_centred_and_row_level_variance():
    rng = np.random.default_rng(1)
    n_rows, per = 60, 20
    row = np.repeat(np.arange(n_rows), per)
    row_effect = rng.normal(0, 1.0, n_rows)  # strong within-row correlation
    v = row_effect[row] + rng.normal(0, 0.1, row.size)
    sums, counts = grouped_sums(v, row)
    boot = bootstrap_mean_from_groups(sums, counts, 2000, np.random.default_rng(2))
    assert boot.shape == (2000,)
    np.testing.assert_allclose(boot.mean(), v.mean(), atol=0.03)
    # row-level s.e. ~ sd(row means)/sqrt(n_rows), far above the naive position s.e.
    expected_se = np.std(sums / counts, ddof=1) / np.sqrt(n_rows)
    np.testing.assert_allclose(boot.std(), expected_se, rtol=0.1)
    assert boot.std() > 3 * v.std() / np.sqrt(v.size)
    wide = bootstrap_mean_from_groups(np.stack([sums, 2 * sums], 1), counts, 50,
                                      np.random.default_rng(3))
    np.testing.assert_allclose(wide[:, 1], 2 * wide[:, 0], rtol=1e-12)


def test_row_bootstrap_covers_known_mean():
    rng = np.random.default_rng(4)
    x = rng.normal(3.0, 1.0, 400)
    est, lo, hi, samples = row_bootstrap(lambda ids: x[ids].mean(), 400, n_boot=1000, seed=5)
    np.testing.assert_allclose(est, x.mean(), rtol=1e-12)
    assert lo < est < hi
    np.testing.assert_allclose(hi - lo, 2 * 1.96 / 20, rtol=0.15)
    assert samples.shape == (1000,)
    assert percentile_ci(np.array([np.nan, np.nan])) != percentile_ci(np.arange(10.0))
