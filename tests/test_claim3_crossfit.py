"""Claim 3 cross-fitting (issue 19.1): each half of the rows is tested on a plateau selected
on the other half only, and the result says which rows did what. A stand-in for the prepared
model (no forward pass): influence planted on different neurons in the two halves, and head
effects equal to the neuron id, so every position's group influence names the group used."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from harness import pipeline
from harness.claimset import load_claims
from harness.data.rarity import RaritySpec

N_ROWS, T, D_MLP, N_HEADS = 12, 10, 64, 2


@pytest.fixture()
def claim():
    return load_claims()["no-routing"]


def _prep(claim, n_rows):
    fold = claim.cross_fit_folds(N_ROWS, n_rows, seed=0)
    row, pos = np.repeat(np.arange(N_ROWS), T), np.tile(np.arange(T), N_ROWS)
    rare = pos % 3 == 0
    delta = np.full((row.size, D_MLP), 1e-3, np.float32)
    for f, first in ((0, 0), (1, 32)):          # half f's rare positions favour its neurons
        at = rare & (fold[row] == f)
        delta[np.ix_(at, np.arange(first, first + 16))] = 1.0 + np.arange(16)[::-1] * 0.01
    influence = SimpleNamespace(delta=delta, row=row, pos=pos)
    facade = SimpleNamespace(d_mlp=D_MLP, n_layers=1, n_heads=N_HEADS)
    return SimpleNamespace(influence=influence, rows=np.zeros((N_ROWS, T), np.int64),
                           facade=facade, masks=lambda rarity: (rare, ~rare)), fold


def _fake_head_effects(prep, mode, rows, neurons, last_k_layers=None, scope=""):
    sel = np.isin(prep.influence.row, rows)
    cols = np.arange(D_MLP)
    act = np.broadcast_to(cols.astype(np.float32), (N_HEADS, int(sel.sum()), D_MLP)).copy()
    abl = SimpleNamespace(delta_act=act, heads=[(0, h) for h in range(N_HEADS)],
                          row=prep.influence.row[sel], pos=prep.influence.pos[sel],
                          delta_loss=np.zeros((N_HEADS, int(sel.sum()))))
    return abl, np.asarray(neurons)


def test_folds_split_the_ablated_rows_and_the_others_in_halves(claim):
    fold = claim.cross_fit_folds(20, 8, seed=3)
    assert fold[:8].sum() == 4 and fold[8:].sum() == 6
    assert np.array_equal(fold, claim.cross_fit_folds(20, 8, seed=3))
    assert not np.array_equal(fold, claim.cross_fit_folds(20, 8, seed=4))


def test_each_half_is_tested_on_the_plateau_selected_on_the_other(claim, monkeypatch):
    monkeypatch.setattr(pipeline, "head_effects", _fake_head_effects)
    n_rows = 8
    prep, fold = _prep(claim, n_rows)
    abl, infl, rare, common, fold_pos, plan = claim.routing_inputs(prep, "rarity", "zero", 0,
                                                                   n_rows)
    # half 0 selects on half 1's rows, whose rare positions favour neurons 32..47
    assert set(plan["plateau"][0]) <= set(range(32, 48))
    assert set(plan["plateau"][1]) <= set(range(0, 16))
    assert plan["plateau_jaccard"] == 0.0
    assert sorted(plan["test_rows"][0] + plan["test_rows"][1]) == list(range(n_rows))
    for f in (0, 1):
        assert set(plan["select_rows"][f]) == set(np.flatnonzero(fold != f).tolist())
        assert set(plan["test_rows"][f]) == set(np.flatnonzero(fold[:n_rows] == f).tolist())
    # head effect = neuron id, so a position's plateau influence names its half's plateau
    want = np.where(fold_pos == 0, sum(plan["plateau"][0]), sum(plan["plateau"][1]))
    np.testing.assert_allclose(infl[0, 0], want)
    assert np.array_equal(fold_pos, fold[abl.row])
    assert rare.shape == common.shape == (n_rows * T,)


def test_folds_of_chosen_rows_split_them_and_the_others_in_halves(claim):
    rows = np.array([1, 4, 5, 9, 12, 17])
    fold = claim.cross_fit_folds(20, rows, seed=3)
    others = np.setdiff1d(np.arange(20), rows)
    assert fold[rows].sum() == 3 and fold[others].sum() == 7
    # the first n rows as ids give exactly the folds of the int form (goldens unchanged)
    assert np.array_equal(claim.cross_fit_folds(20, np.arange(8), seed=3),
                          claim.cross_fit_folds(20, 8, seed=3))


def test_routing_rows_are_the_rows_with_most_cover_rare_positions():
    """Issue 22.5: the ablated rows are chosen by their rare positions (target or current
    rarity of the evaluated cover), not the first N; all rows when N covers them."""
    n_rows, t = 10, 6
    row, pos = np.repeat(np.arange(n_rows), t), np.tile(np.arange(t), n_rows)
    target = np.isin(row, [7, 8]) & (pos < 3)          # rows 7, 8: 3 rare targets each
    current = ((row == 2) & (pos < 4)) | ((row == 8) & (pos == 5))   # row 2: 4; row 8: +1
    seen = []

    def masks(rarity):
        seen.append(rarity)
        rare = target if rarity.which == "target" else current
        return rare, ~rare

    prep = SimpleNamespace(rows=np.zeros((n_rows, t + 1), np.int64), masks=masks,
                           influence=SimpleNamespace(row=row, pos=pos),
                           spec=SimpleNamespace(cover_q=50.0, cover_which=("target", "current")))
    assert pipeline.routing_rows(prep, 3).tolist() == [2, 7, 8]   # counts 4, 3, 4
    assert pipeline.routing_rows(prep, 4).tolist() == [0, 2, 7, 8]  # then row order
    assert seen == [RaritySpec(q=50.0, which="target"), RaritySpec(q=50.0, which="current")] * 2
    assert pipeline.routing_rows(prep, 10).tolist() == list(range(10))
    assert pipeline.routing_rows(prep, 99).tolist() == list(range(10))
