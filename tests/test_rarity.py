"""Rare vocabulary (percentile, Zipf elbow) and rare/common position masks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from harness.data.frequency import FrequencyTable
from harness.data.rarity import RaritySpec, position_masks, rare_vocab, zipf_elbow
from harness.errors import BadInputError


@pytest.mark.parametrize("kw", [{"q": 0}, {"q": 100}, {"q": -5}, {"which": "next"},
                                {"ties": "some"}])
def test_spec_validation(kw):
    with pytest.raises(BadInputError):
        RaritySpec(**kw)


@settings(max_examples=40, deadline=None)
@given(q=st.floats(1.0, 99.0), seed=st.integers(0, 10**6))
def test_rare_fraction_matches_q_without_ties(q, seed):
    counts = np.random.default_rng(seed).permutation(5000) * 3  # distinct counts
    rare = rare_vocab(FrequencyTable(counts, "t"), RaritySpec(q=q))
    assert abs(rare.mean() - q / 100) <= 1 / 5000 + 1e-12
    p = FrequencyTable(counts, "t").probs
    assert p[rare].max() < p[~rare].min()  # rare = the lowest-probability types


def test_ties_at_cutoff_are_all_rare_with_include():
    counts = np.array([0] * 60 + list(range(1, 41)))
    rare = rare_vocab(FrequencyTable(counts, "t"), RaritySpec(q=50, ties="include"))
    assert rare[:60].all() and not rare[60:].any()


def test_strict_rule_is_the_originals_p_below_cutoff():
    """Original code: rare iff p < quantile(p, q). A cutoff on a tied minimum selects nothing;
    above the ties it selects the tied block and everything below the cutoff."""
    counts = np.array([0] * 60 + list(range(1, 41)))
    table = FrequencyTable(counts, "t")
    assert not rare_vocab(table, RaritySpec(q=50)).any()
    rare = rare_vocab(table, RaritySpec(q=70))
    p = table.probs
    np.testing.assert_array_equal(rare, p < np.quantile(p, 0.70))
    assert rare[:60].all() and rare.sum() == 70  # counts 0..10 lie below the cutoff


def test_tag_names_ties_only_when_not_default():
    assert RaritySpec(q=15, which="target").tag == "target-q15"
    assert RaritySpec(q=15, which="current", ties="include").tag == "current-q15-include"


def _planted_zipf(n, elbow, noise, seed):
    r = np.arange(1, n + 1)
    lp = -np.log(r)
    lp[elbow:] = lp[elbow] - 4.0 * (np.log(r[elbow:]) - np.log(r[elbow]))
    return np.exp(lp + np.random.default_rng(seed).normal(0, noise, n))


def _reference_elbow(probs, window):
    """Direct transcription of the P2 loop (scipy linregress per window) for cross-checking."""
    y = np.log(np.sort(probs)[::-1])
    x = np.log(np.arange(1, y.size + 1))
    idx = list(range(max(int(y.size * 0.5), 2 * window), y.size - window))
    slopes = np.array([stats.linregress(x[i:i + window], y[i:i + window]).slope for i in idx])
    jumps = np.abs(np.diff(slopes))
    big = np.flatnonzero(jumps > jumps.mean() + 3 * jumps.std())
    return None if big.size == 0 else idx[big[np.argmax(jumps[big])] + 1] + 1


@settings(max_examples=8, deadline=None)
@given(frac=st.sampled_from([0.6, 0.7, 0.8, 0.9]), seed=st.integers(0, 1000))
def test_planted_elbow_found_within_5_percent(frac, seed):
    n = 50_000
    elbow = int(frac * n)
    found = zipf_elbow(_planted_zipf(n, elbow, 0.002, seed))
    assert found is not None and abs(found - elbow) <= 0.05 * n


def test_elbow_matches_reference_loop():
    probs = _planted_zipf(4000, 3100, 0.01, 3)
    assert zipf_elbow(probs, window=300) == _reference_elbow(probs, 300)
    assert zipf_elbow(probs[:800], window=300) is None  # fewer than 3 windows of types


def test_elbow_cut_removes_only_the_extreme_tail():
    probs = _planted_zipf(50_000, 40_000, 0.002, 0)
    plain = rare_vocab(probs, RaritySpec(q=50))
    cut = rare_vocab(probs, RaritySpec(q=50, elbow=True))
    order = np.argsort(-probs)
    tail = np.zeros_like(cut)
    tail[order[zipf_elbow(probs):]] = True
    assert not (cut & ~plain).any() and not (cut & tail).any()
    assert 0.15 < (plain & tail).mean() < 0.25 and np.array_equal(cut, plain & ~tail)


def test_position_masks_target_vs_current():
    rows = np.array([[0, 5, 1, 5, 2, 5]])
    keep = np.array([[0, 0, 0, 1, 1, 0]], dtype=bool)
    rare_mask = np.zeros(6, dtype=bool)
    rare_mask[5] = True
    r_t, c_t = position_masks(rows, keep, rare_mask, "target")
    np.testing.assert_array_equal(r_t, [[0, 0, 0, 0, 1, 0]])  # x_{t+1} = 5 at t = 4
    np.testing.assert_array_equal(c_t, [[0, 0, 0, 1, 0, 0]])
    r_c, c_c = position_masks(rows, keep, rare_mask, "current")
    np.testing.assert_array_equal(r_c, [[0, 0, 0, 1, 0, 0]])
    np.testing.assert_array_equal(c_c, [[0, 0, 0, 0, 1, 0]])
    assert not (r_t & c_t).any() and ((r_t | c_t) == keep).all()


def test_position_masks_from_frequencies_and_spec():
    counts = np.array([100, 50, 1, 0])
    rows = np.array([[0, 1, 2, 3, 0, 1]])
    keep = np.ones_like(rows, dtype=bool)
    rare, common = position_masks(rows, keep, FrequencyTable(counts, "t"), RaritySpec(q=50))
    np.testing.assert_array_equal(rare, [[0, 1, 1, 0, 0, 0]])  # targets 2, 3 are the rare half
    assert (common == keep & ~rare).all()
    with pytest.raises(BadInputError):
        position_masks(rows, keep, FrequencyTable(counts, "t"), "target")


def test_proxy_tables_rank_only_the_types_they_observed():
    """A proxy corpus says nothing about types it never contains: under `observed_only` the
    q-th percentile is over observed types and an unobserved type is never rare. Without it a
    vocabulary mostly unseen by the proxy (Gemma-3: 2/3 of 262k types) has no rare type at
    q50 under the strict rule."""
    counts = np.array([0] * 60 + list(range(1, 41)))  # 60 unseen types, 40 seen (counts 1..40)
    exact = FrequencyTable(counts, "exact")
    proxy = FrequencyTable(counts, "proxy", observed_only=True)
    spec = RaritySpec(50.0)
    assert not rare_vocab(exact, spec).any()  # the cutoff is the unseen types' minimum
    rare = rare_vocab(proxy, spec)
    np.testing.assert_array_equal(np.nonzero(rare)[0], np.arange(60, 80))  # counts 1..20
    assert not rare_vocab(proxy, RaritySpec(50.0, ties="include"))[:60].any()
