"""Statistics that do not amplify float noise (issue: a float32 offset of ~7e-6 nats, amplified
by log statistics, moved the goldens between machines).

- Influence means are accumulated in float64 (harness.stats.accumulate), so they do not depend
  on the BLAS summation order of float32 GEMVs.
- Influences at or below INFLUENCE_FLOOR (1e-6 nats) never enter a log-rank curve.
- Perturbing every Delta by independent N(0, 1e-6 nats) noise - 10x the closed form's error
  bound - moves each pinned number of the claim-1 goldens by less than its tolerance.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from harness import goldens
from harness.analyses.regimes import INFLUENCE_FLOOR, influence, sorted_curve, sorted_log_top
from harness.claimkit import golden_path
from harness.claimset import CI_POWER_REPS, CI_SEED, ci_prepared, load_claims
from harness.data.rarity import RaritySpec
from harness.stats.accumulate import weighted_sums


def test_weighted_sums_are_float64_exact_in_blocks(monkeypatch):
    rng = np.random.default_rng(0)
    v = rng.normal(0, 1e-3, (5000, 7)).astype(np.float32)
    w = rng.random((3, 5000))
    exact = w @ v.astype(np.float64)
    monkeypatch.setattr("harness.stats.accumulate._BLOCK_BYTES", 8 * 7 * 64)  # 64-row blocks
    got = weighted_sums(w, v)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, exact, rtol=1e-12, atol=1e-18)
    # a float32 GEMV of the same data is off by far more than float64 rounding
    f32 = (w.astype(np.float32) @ v).astype(np.float64)
    assert np.max(np.abs(f32 - exact)) > 1e3 * np.max(np.abs(got - exact))


def test_influence_is_order_independent():
    rng = np.random.default_rng(1)
    delta = rng.normal(1e-4, 1e-3, (20000, 5)).astype(np.float32)
    mask = rng.random(20000) < 0.3
    perm = rng.permutation(20000)
    a, b = influence(delta, mask), influence(delta[perm], mask[perm])
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=0)


def test_floor_keeps_noise_level_influences_out_of_log_curves():
    v = np.array([3e-3, 2e-4, INFLUENCE_FLOOR, 5e-7, -1e-3, 2e-6])
    idx, vals = sorted_curve(v, "boost")
    assert idx.tolist() == [0, 1, 5]
    logs = sorted_log_top(v[None], 6)[0]
    assert np.isfinite(logs).sum() == 3 and np.all(np.isnan(logs[3:]))


@pytest.mark.tiny
@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-pythia"])
def test_delta_noise_moves_pinned_numbers_less_than_golden_tolerance(model):
    rarity = RaritySpec(q=50.0, which="target")
    prep = ci_prepared(model)
    module = load_claims()["dual-regimes"]
    golden = json.loads(golden_path("dual-regimes", model, CI_SEED, rarity).read_text())
    inf = prep.influence
    noise = np.random.default_rng(2024).normal(0.0, goldens.DELTA_NOISE_NATS, inf.delta.shape)
    noisy = dataclasses.replace(prep, influence=dataclasses.replace(
        inf, delta=(inf.delta + noise).astype(np.float32)))
    clean = module.compute(prep, rarity, CI_SEED, power_reps=CI_POWER_REPS)
    perturbed = module.compute(noisy, rarity, CI_SEED, power_reps=CI_POWER_REPS)
    assert goldens.mismatches(clean, golden, module.PINNED) == []
    a = goldens.pinned_numbers(clean, module.PINNED)
    b = goldens.pinned_numbers(perturbed, module.PINNED)
    for name, tol in golden["tolerance"].items():
        if a[name] is None:
            assert b[name] is None, name
            continue
        assert abs(a[name] - b[name]) < tol, (name, a[name], b[name], tol)
