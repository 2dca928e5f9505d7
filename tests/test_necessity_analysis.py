"""Claim 6 (necessary for rare tokens): the verdict on synthetic per-position losses with a
known answer (a planted necessary group is supported; a random group is not; a group that is
important everywhere is stopped by the rare-beyond-common control), own-data power and
false-positive rate, claim 2's cross-fit groups reproduced, and the golden's sensitivity to a
deliberate mutation of the analysis."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness.analyses import necessity as nx

SESOI = 0.05


def _fold(name: str, rng: np.random.Generator, *, extra_rare: float, extra_common: float,
          n_random: int = 200, n_rows: int = 16) -> nx.FoldData:
    """Per-position CE increases of a group (row 0) and n_random random groups on n_rows test
    rows; group and position effects shared by all groups (the real data's structure), the
    group's own extra cost at rare / common positions planted."""
    row_r = np.repeat(np.arange(n_rows), 3)
    row_c = np.repeat(np.arange(n_rows), 8)
    G = 1 + n_random + 20

    def inc(n, row):
        pos = np.abs(rng.standard_normal(n)) * 0.05 + rng.standard_normal(n_rows)[row] * 0.01
        scale = rng.gamma(4.0, 0.25, (G, 1))
        scale[0] = 1.0  # the group's generic cost = the random groups' mean (planted: extra)
        return pos[None] * scale + rng.normal(0, 0.02, (G, n))

    inc_r, inc_c = inc(row_r.size, row_r), inc(row_c.size, row_c)
    inc_r[0] += extra_rare
    inc_c[0] += extra_common
    clean_r, clean_c = rng.gamma(8, 1, row_r.size), rng.gamma(3, 1, row_c.size)
    rest_r = clean_r + 2.0 + rng.normal(0, 0.1, (1 + n_random, row_r.size))
    rest_c = clean_c + 2.0 + rng.normal(0, 0.1, (1 + n_random, row_c.size))
    return nx.FoldData(name, np.arange(12), np.zeros((G, 12), int), n_random, row_r, row_c,
                       inc_r, inc_c, clean_r, clean_c, clean_r + 2.5, clean_c + 2.5, rest_r,
                       rest_c, {"max_abs_smd": 0.1}, (row_r.size, row_c.size))


def _analyse(extra_rare: float, extra_common: float = 0.0, seed: int = 0) -> nx.Necessity:
    rng = np.random.default_rng(seed)
    folds = [_fold(n, rng, extra_rare=extra_rare, extra_common=extra_common)
             for n in ("A->B", "B->A")]
    return nx.analyse(folds, sesoi=SESOI, n_boot=300, seed=seed)


@pytest.mark.parametrize("data_seed", [0, 1])
def test_planted_necessary_group_is_supported_and_a_random_group_is_not(data_seed):
    planted = _analyse(0.3, seed=data_seed)
    assert planted.decision.verdict == "supported", planted.decision.reason
    assert planted.headline["estimate"] == pytest.approx(0.3, abs=0.05)
    assert planted.headline["ci_low"] > 0.1
    assert all(f["necessity"]["percentile"] > 0.95 for f in planted.per_fold)
    null = _analyse(0.0, seed=data_seed)
    assert null.decision.verdict != "supported", null.decision.reason
    assert abs(null.headline["estimate"]) < 0.05
    tiny = _analyse(0.005, seed=data_seed)  # detectable maybe, but far below the SESOI: refuted
    assert tiny.decision.verdict in ("refuted", "supported")
    assert tiny.headline["ci_high"] < SESOI


def test_generally_important_group_is_stopped_by_the_rare_beyond_common_control():
    nec = _analyse(0.3, extra_common=0.3)
    gates = {g.name: g for g in nec.decision.gates}
    assert nec.family[0]["significant"]               # more than random groups at rare ...
    assert not gates["rare_beyond_common"].passed     # ... but as much at common positions
    assert nec.decision.verdict != "supported"
    assert abs(nec.family[1]["estimate"]) < 0.05


def test_bootstrap_interval_covers_the_planted_effect_and_resamples_rows():
    nec = _analyse(0.2, seed=3)
    fold = nec.per_fold[0]["necessity"]
    assert fold["ci_low"] < 0.2 < fold["ci_high"]
    # row resampling: a replicate equals the excess recomputed on the resampled rows
    fd = nec.folds[0]
    rows = np.unique(np.concatenate([fd.row_r, fd.row_c]))
    w = np.zeros((1, rows.size))
    w[0, :4] = 2.0  # rows 0-3 twice, the rest dropped
    ex, diff, _ = nx._excess(fd.inc_r[0], fd.inc_c[0], fd.inc_r[1:201], fd.inc_c[1:201],
                             fd.row_r, fd.row_c, w)
    d_r = fd.inc_r[0] - fd.inc_r[1:201].mean(0)
    d_c = fd.inc_c[0] - fd.inc_c[1:201].mean(0)
    keep_r, keep_c = fd.row_r < 4, fd.row_c < 4
    assert ex[0] == pytest.approx(d_r[keep_r].mean())
    assert diff[0] == pytest.approx(d_r[keep_r].mean() - d_c[keep_c].mean())


def test_own_power_finds_the_planted_effect_and_holds_its_false_positive_rate():
    nec = _analyse(0.0, seed=4)
    power = nx.own_power(nec, reps=8, seed=0, factors=(1.0, 4.0), n_boot=100)
    assert power.curve[4 * SESOI] >= 0.75, power.curve
    assert power.fpr <= 0.25, power  # IUT over two folds: expected ~alpha^2


def test_sufficiency_and_result_are_reported():
    nec = _analyse(0.3)
    result = nx.necessity_result(nec)
    suf = result.details["sufficiency"]
    assert abs(suf["estimate"]) < 0.1 and 0.0 < suf["recovered_share"] < 0.5
    assert result.effect == pytest.approx(nec.headline["estimate"])
    assert result.p_value == nec.headline["p_max"] and result.verdict == "supported"
    json.dumps(result.details)  # JSON-ready


@pytest.mark.tiny
def test_crossfit_groups_are_claim_2s_and_measure_matches_the_closed_form():
    """crossfit_groups reproduces crossfit_analysis's halves and groups; measure's plateau row
    equals a float64 ablate_groups on the same positions."""
    from harness.ablation.group import ablate_groups
    from harness.ablation.neuron import prepare_closed_form
    from harness.analyses.clustering import crossfit_analysis
    from harness.analyses.regimes import plateau_neurons
    from harness.claimset import CI_SEED, ci_prepared, ci_rarities
    from harness.pipeline import final_activations

    prep = ci_prepared("tiny-pythia-learned")
    rare, common = prep.masks(ci_rarities()[0])
    inf = prep.influence

    def select(mask):
        return plateau_neurons(inf.delta, mask, sign="boost", method="fixed")

    acts = final_activations(prep)
    cf = crossfit_analysis(acts, inf.delta, inf.row, rare, common, select, n_selection=2,
                           n_matched=2, n_random=2, n_boot=2, legacy=None, graph_stats=False,
                           seed=CI_SEED)
    folds = nx.crossfit_groups(inf.row, rare, select, CI_SEED)
    for f, (name, sel, test, group) in zip(cf.folds, folds):
        assert f.name == name
        np.testing.assert_array_equal(f.group, group)
        np.testing.assert_array_equal(f.test_rows, test)
    data = nx.measure(prep, rare, common, folds[:1], n_random=3, n_matched=2, seed=0,
                      max_rare=10 ** 6, max_common=5)[0]
    fac = prep.facade
    op = prepare_closed_form(fac.W_out, fac.W_U, fac.b_U, fac.final_norm, dtype=torch.float64)
    idx = np.flatnonzero(rare & np.isin(inf.row, folds[0][2]))
    _, ref = ablate_groups(op, torch.from_numpy(nx.final_resid(prep)[idx]),
                           torch.from_numpy(acts[idx]), torch.from_numpy(inf.target[idx]),
                           torch.from_numpy(prep.extras["mean_act_all"]),
                           torch.from_numpy(data.groups[:1]))
    np.testing.assert_allclose(data.inc_r[0], ref[0].numpy(), atol=2e-5, rtol=0)
    np.testing.assert_allclose(data.clean_r, inf.loss[idx], atol=1e-4, rtol=0)


@pytest.mark.tiny
def test_additive_mutation_breaks_the_golden(monkeypatch):
    """Replace the exact joint ablation by the sum of the members' single-neuron Deltas (the
    shortcut the claim must not take) and the committed golden of the learned fixture must no
    longer match."""
    from harness import goldens
    from harness.ablation import group
    from harness.ablation.neuron import closed_form_delta
    from harness.claimkit import golden_path
    from harness.claimset import CI_SEED, ci_prepared, ci_rarities, load_claims

    claim = load_claims()["necessity"]
    rarity = ci_rarities()[0]  # q15: fewer rare positions, the cheaper case
    golden = json.loads(golden_path("necessity", "tiny-pythia-learned", CI_SEED,
                                    rarity).read_text())
    prep = ci_prepared("tiny-pythia-learned")
    real = group.ablate_groups

    def additive(op, resid, acts, targets, values, groups, block_elements=group.BLOCK_ELEMENTS):
        clean, _ = real(op, resid, acts, targets, values, groups[:0])
        single = closed_form_delta(op, resid, acts, targets, values, method="eager")  # [P, m]
        return clean, single.double().T[groups].sum(1)

    monkeypatch.setattr(group, "ablate_groups", additive)
    mutated = claim.compute(prep, rarity, CI_SEED, power_reps=claim.CI_POWER_REPS)[0]
    assert goldens.mismatches(mutated, golden, claim.PINNED)
