import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from harness.errors import BadInputError
from harness.stats.empirical import empirical_p, zscore
from harness.stats.inequality import gini
from harness.stats.multiple import bh_fdr
from harness.stats.permutation import (permutation_pvalue, stratified_permutation,
                                       stratified_permutations)


def test_stratified_permutation_keeps_counts_per_stratum_and_shuffles():
    rng = np.random.default_rng(0)
    strata = rng.integers(0, 20, 1000)
    labels = rng.random(1000) < 0.1
    moved = 0
    for _ in range(20):
        out = stratified_permutation(labels, strata, rng)
        for s in range(20):
            assert out[strata == s].sum() == labels[strata == s].sum()
        moved += np.sum(out != labels)
    assert moved > 20 * 50  # labels actually move


def test_stratified_permutation_uniform_within_stratum():
    rng = np.random.default_rng(1)
    labels = np.array([True, False, False, False])
    strata = np.zeros(4, dtype=int)
    hits = np.mean([stratified_permutation(labels, strata, rng) for _ in range(4000)], axis=0)
    np.testing.assert_allclose(hits, 0.25, atol=0.03)


def test_batched_permutations_keep_counts_and_are_uniform():
    rng = np.random.default_rng(3)
    strata = np.array([5, 5, 5, 5, 9, 9, 2, 2, 2])
    labels = np.array([1, 0, 0, 0, 1, 1, 0, 1, 0], dtype=bool)
    out = stratified_permutations(labels, strata, 6000, rng)
    for s in np.unique(strata):
        np.testing.assert_array_equal(out[:, strata == s].sum(1), labels[strata == s].sum())
    np.testing.assert_allclose(out.mean(0), [0.25] * 4 + [1, 1] + [1 / 3] * 3, atol=0.03)


def test_permutation_pvalue_plus_one():
    null = np.arange(99.0)
    assert permutation_pvalue(1000.0, null) == pytest.approx(1 / 100)
    assert permutation_pvalue(49.0, null) == pytest.approx(51 / 100)
    assert permutation_pvalue(-1.0, null, "less") == pytest.approx(1 / 100)
    assert permutation_pvalue(49.0, null, "two-sided") == pytest.approx(1.0)
    assert empirical_p(98.0, null) == pytest.approx(2 / 100)
    with pytest.raises(BadInputError):
        permutation_pvalue(0.0, null, "bigger")


def test_zscore():
    null = np.array([0.0, 2.0, 4.0])
    assert zscore(6.0, null) == pytest.approx(2.0 / 2.0 * 2)
    assert np.isnan(zscore(1.0, np.ones(5)))


def test_bh_matches_statsmodels():
    rng = np.random.default_rng(2)
    p = np.concatenate([rng.uniform(0, 0.01, 10), rng.uniform(0, 1, 90)])
    rej, q = bh_fdr(p, 0.05)
    rej_sm, q_sm, _, _ = multipletests(p, 0.05, method="fdr_bh")
    np.testing.assert_allclose(q, q_sm, rtol=1e-12)
    np.testing.assert_array_equal(rej, rej_sm)
    rej2, q2 = bh_fdr(np.array([0.01, np.nan, 0.04]), 0.05)
    np.testing.assert_allclose(q2[[0, 2]], [0.02, 0.04])
    assert np.isnan(q2[1]) and not rej2[1]


def test_gini():
    assert gini(np.ones(10)) == pytest.approx(0.0)
    assert gini(np.r_[np.zeros(9), 1.0]) == pytest.approx(0.9)
    assert gini(np.array([1.0, 3.0])) == pytest.approx(0.25)
    with pytest.raises(BadInputError):
        gini(np.array([-1.0, 2.0]))
