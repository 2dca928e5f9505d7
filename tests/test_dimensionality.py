"""Claim 4 (coordinated, not modular): the effective-dimension maths, the cross-fitted verdict on
synthetic data with a known answer (a shared factor is found; none is not; a selection
artefact is stopped by the control), and the golden's sensitivity to a deliberate mutation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.analyses import dimensionality as dm
from harness.analyses.clustering import CorrView, crossfit_analysis
from harness.analyses.graphs import correlation_matrix
from harness.stats.bootstrap import resample_weights


def test_participation_ratio_and_components_limits():
    k = 8
    assert dm.participation_ratio(np.ones((1, k)))[0] == pytest.approx(1.0)
    one = np.zeros((1, k))
    one[0, 0] = k
    assert dm.participation_ratio(one)[0] == pytest.approx(1 / k)
    ev = np.array([[4.0, 2.0, 1.0, 1.0]])  # cumulative 0.5, 0.75, 0.875, 1.0
    assert dm.components_for(ev, 0.95)[0] == pytest.approx(1.0)
    assert dm.components_for(ev, 0.8)[0] == pytest.approx(0.75)
    assert dm.participation_ratio(ev)[0] == pytest.approx(64 / 22 / 4)


def test_block_spectra_equal_numpy_correlation_eigenvalues():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 40)) + 0.8 * rng.standard_normal((300, 1))
    x[:, 7] = 3.0  # a constant neuron: r = 0 with the rest, its own dimension
    view = CorrView(correlation_matrix(x))
    groups = np.array([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 20, 30, 31, 39]])
    got = dm.block_spectra(view, groups)
    for g, ev in zip(groups, got):
        c = np.corrcoef(x[:, g], rowvar=False)
        c = np.where(np.isfinite(c), c, 0.0)
        np.fill_diagonal(c, 1.0)
        np.testing.assert_allclose(ev, np.linalg.eigvalsh(c)[::-1], atol=1e-6)


def test_pr_bootstrap_replicate_equals_recomputation_on_resampled_rows():
    rng = np.random.default_rng(1)
    n_rows, per, k = 12, 9, 6
    row = np.repeat(np.arange(n_rows), per)
    xg = rng.standard_normal((n_rows * per, k)) + rng.standard_normal((n_rows * per, 1))
    boot = dm.pr_bootstrap(xg, row, 5, np.random.default_rng(7))
    w = resample_weights(n_rows, 5, np.random.default_rng(7))
    for b in range(5):
        idx = np.concatenate([np.flatnonzero(row == r) for r in range(n_rows)
                              for _ in range(int(w[b, r]))])
        c = np.corrcoef(xg[idx], rowvar=False)
        want = dm.participation_ratio(np.linalg.eigvalsh(c)[None])[0]
        assert boot[b] == pytest.approx(want, abs=1e-10)


def _synthetic(loading: float, *, selection_artefact: bool = False, seed: int = 0):
    """40 rows x 30 positions, m = 400 neurons; the 'plateau group' = neurons 0-11 share a
    factor with `loading` at rare positions. Delta makes neurons 0-11 the top boost neurons on
    rare positions; with selection_artefact also on common positions, where they share the
    factor too - then any top-influence group is coordinated, rarity or not."""
    rng = np.random.default_rng(seed)
    n_rows, per, m, k = 40, 30, 400, 12
    row = np.repeat(np.arange(n_rows), per)
    n = row.size
    rare = rng.random(n) < 0.25
    common = ~rare
    f = rng.standard_normal(n)
    acts = rng.standard_normal((n, m))
    where = rare | common if selection_artefact else rare
    # unit variance kept (the matched null matches SD): (z + l f) / sqrt(1 + l^2)
    acts[np.ix_(where, np.arange(k))] = ((acts[np.ix_(where, np.arange(k))]
                                          + loading * f[where, None]) / np.hypot(1, loading))
    delta = np.abs(rng.standard_normal((n, m))) * 0.01
    delta[np.ix_(where, np.arange(k))] += 1.0
    group = np.arange(k)
    cf = crossfit_analysis(acts, delta, row, rare, common, lambda mask: group, sign="boost",
                           n_selection=60, n_matched=2, n_random=2, n_boot=2, legacy=None,
                           graph_stats=False, seed=seed)
    return dm.dimensionality_analysis(cf, sesoi=0.05, n_matched=300, n_random=100, n_boot=100,
                                      seed=seed)


@pytest.mark.parametrize("data_seed", [0, 1])
def test_shared_factor_is_supported_and_its_absence_is_not(data_seed):
    planted = _synthetic(0.8, seed=data_seed)
    assert planted.decision.verdict == "supported", planted.decision.reason
    assert planted.headline["estimate"] > 0.2
    null = _synthetic(0.0, seed=data_seed)
    assert null.decision.verdict != "supported", null.decision.reason
    assert abs(null.headline["estimate"]) < 0.05
    assert null.headline["p_max"] > 0.05


def test_selection_artefact_is_stopped_by_the_selection_control():
    dim = _synthetic(0.8, selection_artefact=True)
    gates = {g.name: g for g in dim.decision.gates}
    assert dim.family[0]["significant"]            # below matched random groups ...
    assert not gates["beyond_selection"].passed    # ... but so is every group the selection makes
    assert dim.decision.verdict != "supported"


def test_own_power_finds_a_planted_factor_and_holds_its_false_positive_rate():
    dim = _synthetic(0.0, seed=3)
    power = dm.own_power(dim, reps=6, seed=0, factors=(1.0, 4.0), n_matched=100, n_boot=30)
    assert power.curve[0.2] >= 0.8, power.curve     # 4 x SESOI: found
    assert power.fpr <= 0.34, power                  # 6 reps: at most 2 false 'supported'


@pytest.mark.tiny
def test_measure_mutation_breaks_the_golden(monkeypatch):
    """Replace the effect's measure (PR/k -> P3's components/k) and the committed golden of
    the learned fixture must no longer match."""
    from harness import goldens
    from harness.claimkit import golden_path
    from harness.claimset import CI_SEED, ci_prepared, ci_rarities, load_claims

    claim = load_claims()["coordination"]
    rarity = ci_rarities()[1]
    path = golden_path("coordination", "tiny-pythia-learned", CI_SEED, rarity)
    golden = json.loads(path.read_text())
    prep = ci_prepared("tiny-pythia-learned")
    monkeypatch.setattr(dm, "participation_ratio", dm.components_for)
    mutated = claim.compute(prep, rarity, CI_SEED, power_reps=claim.CI_POWER_REPS)[0]
    assert goldens.mismatches(mutated, golden, claim.PINNED)
