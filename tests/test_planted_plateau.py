"""End-to-end positive controls for claims 1 and 2 (issue 19.7): real neuron ablations
(harness.ablation.neuron) and real final-layer activations of a tiny GPT-2 with a hand-wired
plateau (harness.models.planted_plateau), fed to dual_regimes_test and to the cross-fitted
claim-2 analysis as claims/test_no_clustering.py calls them.

- planted: 12 final-layer neurons read a rare-token flag and back off to the common
  vocabulary. Claim 1 must come out 'supported' with the width at ~12 and the planted neurons
  as the top set; claim 2 'refuted' - the plateau is a module (its members share the flag's
  per-token strength), and the analysis must find it against both of its nulls.
- control: the same weights and data, but nobody reads the flag (a near-exact null): claim 1
  not 'supported', claim 2 not 'refuted'.

Rare = the CURRENT token is rare (the plateau fires on the rare token and helps predict the
next one); common = every other kept position. The bounds below sit far from the rules'
thresholds (observed values in comments). Model seeds 0-2 x data seeds 1-6 at these settings
gave the same verdicts (planted: 18/18 'supported' and 'refuted'; control: claim 1 18/18
'inconclusive', claim 2 17/18 'supported', 1/18 'inconclusive'), and every assertion here
held for all 18.
"""

from __future__ import annotations

import tempfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from harness.ablation.neuron import neuron_influence
from harness.analyses.clustering import DEFAULT_SESOI, crossfit_analysis, crossfit_result
from harness.analyses.regimes import SESOI, dual_regimes_test, influence, plateau_neurons
from harness.data.packing import keep_mask
from harness.data.tokenizer import gpt2_tokenizer
from harness.models.facade import ModelFacade
from harness.models.planted_plateau import BOS, planted_plateau_model

N_ROWS, T = 96, 32      # 2,688 kept positions, ~120-150 of them rare (current token)
DATA_SEED, SEED = 2, 0  # data seeds 1-6 all give the same verdicts (see above)
C2_SESOI = DEFAULT_SESOI   # 0.1 r, as claims/test_no_clustering.py SPEC states it


def _facade(model):
    with tempfile.TemporaryDirectory(prefix="rarebench-plateau-") as tmp:
        model.config.save_pretrained(tmp)
        return ModelFacade.from_hf(model, gpt2_tokenizer(), name="planted-plateau", source=tmp)


def _run(planted: bool) -> SimpleNamespace:
    pm = planted_plateau_model(planted=planted)
    facade = _facade(pm.model)
    rows = pm.rows(N_ROWS, T, DATA_SEED)
    keep = keep_mask(rows, {BOS})
    inf = neuron_influence(facade, rows, keep)
    acts = facade.forward_final(torch.from_numpy(rows)).post[torch.from_numpy(keep)]
    acts = acts.double().numpy()                      # row-major, like the influence rows
    rare = np.isin(inf.token, pm.rare_tokens)
    common = ~rare
    c1 = dual_regimes_test(inf.delta, inf.row, rare, common, inf.loss, seed=SEED,
                           n_rows=N_ROWS, n_perm=499, n_boot=300, power_reps=0,
                           describe=False)       # the regime fits are reported, never decide

    def select(mask):
        return plateau_neurons(inf.delta, mask, sign="boost", method="fixed")

    cf = crossfit_analysis(acts, inf.delta, inf.row, rare, common, select, sign="boost",
                           sesoi=C2_SESOI, n_selection=200, n_matched=200, n_random=200,
                           n_boot=200, legacy=None, seed=SEED)
    c2 = crossfit_result(cf, None)
    return SimpleNamespace(pm=pm, inf=inf, acts=acts, rare=rare, c1=c1, cf=cf, c2=c2,
                           infl_rare=influence(inf.delta, rare),
                           infl_common=influence(inf.delta, common))


@pytest.fixture(scope="module")
def planted():
    return _run(True)


@pytest.fixture(scope="module")
def control():
    return _run(False)


def _gates(result) -> dict:
    return result.details["decision"]["gates"]


def _family(c2) -> dict:
    return {row["null"]: row for row in c2.details["family"]}


# ---------------------------------------------------------------- the wiring itself

def test_planted_plateau_is_flat_and_rare_only(planted, control):
    p = planted
    assert 100 < p.rare.sum() < 170                                        # 121
    plat = p.infl_rare[p.pm.plateau]
    # a flat plateau: every planted neuron helps at rare positions, alike within a factor 4
    assert plat.min() > 0.015 and plat.max() < 4 * plat.min()              # 0.031 .. 0.064
    # ... far above every other neuron there (others <= 0.0063) ...
    others = np.delete(p.infl_rare, p.pm.plateau)
    assert plat.min() > 2 * others.max()
    # ... and no boost at common positions: mean-ablation switches them slightly ON there,
    # which helps a little (-0.011 .. -0.007)
    common = p.infl_common[p.pm.plateau]
    assert common.max() < 0 and np.abs(common).mean() < 0.35 * plat.mean()
    # the plateau fires at rare positions only (93% vs 2% of positions active)
    act = p.acts[:, p.pm.plateau]
    assert (act[p.rare] > 0).mean() > 0.8 and (act[~p.rare] > 0).mean() < 0.1
    # control: the same neurons never fire, so they have no influence anywhere
    assert np.abs(control.infl_rare[control.pm.plateau]).max() < 0.005


# ---------------------------------------------------------------- claim 1

def test_claim1_supported_on_the_planted_plateau(planted):
    r, pm = planted.c1, planted.pm
    d = r.details
    assert r.verdict == "supported", d["message"]
    assert r.p_value <= 0.01                                  # 0.002: the floor at 499 perms
    # effect in ln units, SESOI ln 1.2 = 0.18: 1.98, 95% CI [1.59, 2.24]
    assert r.effect > 1.0 and r.ci_low > 4 * SESOI.value
    # the scan's width estimates the planted size (12) and its top set is the planted one
    width = d["scan"]["width"]
    assert abs(width - pm.plateau.size) <= 2 and d["plateau_size"] == width
    top = np.argsort(-planted.infl_rare)[:width]
    assert np.isin(pm.plateau, top).sum() >= pm.plateau.size - 1
    gates = _gates(r)
    named = ("top_set_overlap", "top_rank_spearman", "loss_match_balance", "beyond_difficulty")
    assert all(gates[name]["passed"] for name in named)
    # validity: split-half top set and ranks agree (1.0 and 0.84; needed: Jaccard > ~0.09,
    # Spearman > 0)
    assert gates["top_set_overlap"]["value"] > 0.7
    assert gates["top_rank_spearman"]["value"] > 0.5
    # controls: the loss-matched partners are balanced (SMD -0.001; |SMD| <= 0.25 needed) and
    # the rare curve still lifts above them (lower 90% bound 1.32; > 0 needed)
    assert abs(gates["loss_match_balance"]["value"]) < 0.05
    assert d["loss_matched"]["balance"]["share_rare_matched"] > 0.9
    assert gates["beyond_difficulty"]["value"] > 0.5


def test_claim1_not_supported_without_the_wiring(control):
    r, pm = control.c1, control.pm
    assert r.verdict != "supported", r.details["message"]    # observed: 'inconclusive'
    # why: no lift over loss-matched common positions (lower 90% bound -0.20; -0.09 to -0.52
    # over 18 model x data seeds). Not asserted: p (0.19 here) - under this null it is
    # uniform (0.026 to 0.99 over the 18 seeds), so the control gate is what must hold
    assert _gates(r)["beyond_difficulty"]["value"] < 0
    # the unwired plateau neurons are nowhere near the top of the rare curve
    top = np.argsort(-control.infl_rare)[:pm.plateau.size]
    assert not np.isin(pm.plateau, top).any()


# ---------------------------------------------------------------- claim 2

def test_claim2_refuted_on_the_planted_plateau(planted):
    r, pm, cf = planted.c2, planted.pm, planted.cf
    assert r.verdict == "refuted", r.details["message"]
    # each fold's selected group is the planted plateau (fixed window: 12-13 neurons)
    for fold in cf.folds:
        assert 10 <= fold.group.size <= 14
        assert np.isin(fold.group, pm.plateau).mean() >= 0.75
    fam = _family(r)
    for name in ("selection", "matched"):
        row = fam[name]
        assert row["significant"] and row["p_max"] <= 0.01    # 1/201: the empirical floor
        # excess within-minus-between r 0.54 / 0.55 vs SESOI 0.1; 90% CI lows 0.45 / 0.45
        assert row["estimate"] > 3 * C2_SESOI and row["ci_low"] > 2 * C2_SESOI
        assert min(row["estimate_by_fold"]) > 2 * C2_SESOI
    gates = _gates(r)
    # matched null balanced: max |SMD| 0.07 (gate 0.25); >= 8 test rows per half
    assert gates["matched_balance"]["passed"] and gates["matched_balance"]["value"] < 0.2
    assert gates["test_rows"]["value"] >= 30


def test_claim2_not_refuted_without_the_wiring(control):
    r, pm, cf = control.c2, control.pm, control.cf
    assert r.verdict != "refuted", r.details["message"]       # observed: 'supported'
    for fold in cf.folds:
        assert np.isin(fold.group, pm.plateau).sum() <= 1
    fam = _family(r)
    # refuted needs every member significant AND both fold-mean estimates > SESOI; here both
    # estimates are below it (selection 0.048, matched 0.031) and the matched null is far
    # from significant (p_max 0.43)
    assert all(row["estimate"] < C2_SESOI for row in fam.values())
    assert fam["matched"]["p_max"] > 0.2
