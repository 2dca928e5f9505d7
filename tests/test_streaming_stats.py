"""RunningMoments fed in chunks == numpy on all the data at once (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.ablation.stats import RunningMoments


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    # large common offset: the naive sum-of-squares formula would lose ~8 digits here
    x = 1e4 + rng.normal(size=(1000, 12)) @ rng.normal(size=(12, 12))
    mask = rng.random(1000) < 0.3
    return x, mask


def test_chunked_masked_subset_matches_numpy():
    x, mask = _data()
    neurons = [7, 0, 3, 11]
    acc = RunningMoments(neurons=neurons)
    for start in range(0, 1000, 137):  # uneven chunks, some torch, some numpy
        chunk = x[start:start + 137]
        acc.update(torch.from_numpy(chunk) if start % 2 else chunk, mask[start:start + 137])
    sel = x[mask][:, neurons]
    assert acc.count == mask.sum()
    np.testing.assert_allclose(acc.mean, sel.mean(0), rtol=1e-13)
    np.testing.assert_allclose(acc.cov(), np.cov(sel, rowvar=False), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(acc.corr(), np.corrcoef(sel, rowvar=False), atol=1e-10)
    np.testing.assert_allclose(acc.var, sel.var(0, ddof=1), rtol=1e-9)


def test_merge_equals_one_stream_and_handles_empty():
    x, _ = _data(1)
    a, b, whole = RunningMoments(12), RunningMoments(12), RunningMoments(12)
    a.update(x[:300])
    b.update(x[300:])
    whole.update(x)
    merged = a.merge(b)
    assert merged.count == 1000 and a.count == 300  # merge does not mutate its inputs
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-13)
    np.testing.assert_allclose(merged.cov(), whole.cov(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(RunningMoments(12).merge(a).cov(), a.cov(), rtol=1e-12)
    a.update(x[:5], np.zeros(5, bool))  # an empty masked chunk changes nothing
    assert a.count == 300


def test_batched_3d_input_constant_neuron_and_errors():
    rng = np.random.default_rng(2)
    acts = rng.normal(size=(4, 6, 3))
    acts[..., 1] = 2.0  # a dead neuron
    mask = rng.random((4, 6)) < 0.5
    acc = RunningMoments(3).update(acts, mask)
    flat = acts[mask]
    np.testing.assert_allclose(acc.mean, flat.mean(0), rtol=1e-13)
    corr = acc.corr()
    assert np.isnan(corr[1]).all() and np.isnan(corr[:, 1]).all()
    np.testing.assert_allclose(corr[0, 2], np.corrcoef(flat[:, 0], flat[:, 2])[0, 1], atol=1e-12)
    assert np.isnan(RunningMoments(3).cov()).all()
    with pytest.raises(ValueError, match="columns"):
        RunningMoments(2).update(acts)
