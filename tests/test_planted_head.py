"""End-to-end positive control for claim 3: a tiny GPT-2 with one hand-wired routing head,
real head ablations through harness.ablation.heads, and no_routing_test on the result."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest

from harness.ablation.heads import all_heads, head_ablation
from harness.models.planted_head import planted_routing_model
from harness.analyses.routing import group_influence, no_routing_test
from harness.data.tokenizer import gpt2_tokenizer
from harness.models.facade import ModelFacade

N_ROWS, T, N_GROUPS = 48, 32, 8
RARE_RATE = 0.05   # half the vocabulary is rare, drawn at 5% of positions in all


def _facade(model):
    with tempfile.TemporaryDirectory(prefix="rarebench-planted-") as tmp:
        model.config.save_pretrained(tmp)
        return ModelFacade.from_hf(model, gpt2_tokenizer(), name="planted-gpt2", source=tmp)


def _run(planted):
    pm = planted_routing_model(planted=planted, seed=0)
    facade = _facade(pm.model)
    rng = np.random.default_rng(1)
    common_types = np.setdiff1d(np.arange(1, pm.model.config.vocab_size), pm.rare_tokens)
    rows = np.where(rng.random((N_ROWS, T)) < RARE_RATE, rng.choice(pm.rare_tokens, (N_ROWS, T)),
                    rng.choice(common_types, (N_ROWS, T)))
    rows[:, 0] = 0
    keep = np.zeros(rows.shape, bool)
    keep[:, 3:T - 1] = True
    others = np.setdiff1d(np.arange(facade.d_mlp), pm.plateau)
    groups = [np.sort(rng.choice(others, pm.plateau.size, replace=False)) for _ in range(N_GROUPS)]
    neurons = np.unique(np.concatenate([pm.plateau, *groups]))
    col = {n: i for i, n in enumerate(neurons)}
    abl = head_ablation(facade, rows, keep, heads=all_heads(facade), mode="zero",
                        scope="all-positions", neurons=neurons.tolist(), batch_size=N_ROWS)
    infl = group_influence(abl.delta_act, [[col[n] for n in g] for g in [pm.plateau, *groups]])
    rare = np.isin(rows[abl.row, abl.pos], pm.rare_tokens)   # rarity of the current token
    result = no_routing_test(infl[0], infl[1:], rare, ~rare, abl.row, abl.pos, abl.delta_loss,
                             abl.heads, n_boot=300)
    return pm, infl, rare, result


@pytest.fixture(scope="module")
def planted_run():
    return _run((0, 1))


def test_planted_head_is_flagged_and_only_it(planted_run):
    pm, infl, rare, r = planted_run
    assert 40 < rare.sum() < 100
    assert r.details["routing_heads"] == [[0, 1]]
    assert r.verdict == "not supported" and r.details["focus_head"] == [0, 1]
    planted = r.details["per_head"][1]
    assert planted["rel_selectivity"] > 5.0 and planted["q"] < 1e-6
    others = [h["rel_selectivity"] for i, h in enumerate(r.details["per_head"]) if i != 1]
    assert max(abs(v) for v in others) < 0.1
    # raw view: the head moves the plateau ~15x more at rare positions, random neurons alike
    assert infl[0, 1, rare].mean() > 10 * infl[0, 1, ~rare].mean()
    np.testing.assert_allclose(infl[1:, 1, rare].mean(), infl[1:, 1, ~rare].mean(), rtol=0.2)


def test_control_model_without_the_wired_head_shows_no_routing():
    _, _, _, r = _run(None)
    assert r.details["routing_heads"] == []
    assert r.verdict == "supported"
    assert max(abs(h["rel_selectivity"]) for h in r.details["per_head"]) < 0.1
