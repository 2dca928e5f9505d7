"""Claim 3 - no preferential routing: no attention head routes rare tokens to the plateau
neurons (P1, claim 3; methods.md sections 7, 8).

Preregistration
- Targets: the plateau neurons of the rare-token boost curve (claim 1, fixed rank window) and
  R = 8 random neuron groups of the same size (specificity normaliser).
- Intervention: every head ablated alone; modes `bos` (the head's attention row set to one-hot
  on position 0, the paper), `zero` and `mean` (on attn.hook_z). Which heads, on how many rows
  and in which scope are run options (root conftest), each recorded in the result's settings
  (`layers`, `rows_ablated`, `scope`):
  - `--routing-layers` auto (default) | all | k. auto: on CPU every layer of models with <= 12
    layers and the last 6 layers of deeper ones (as the paper did for GPT-2 XL); on CUDA every
    layer. k: the heads of the last k layers.
  - `--routing-rows` auto (default) | N. auto: on CPU the first 12 evaluation rows (8 with
    --quick) of models deeper than 12 layers, else 64 (32 with --quick); on CUDA every row of
    the evaluation set. Always capped at the evaluation rows (`--eval-rows` sets those).
  - `--routing-scope` comma list of `all-positions` (default: the head ablated at every query
    in one pass) and `single-query` (ablated at one query position at a time); each scope is
    its own test case, and a case id gains `-single-query` for the latter.
  The tiny fixtures' goldens (key `no-routing/<mode>`) hold for the default options only
  (all-positions, the CPU 'auto' rows and layers, the default evaluation set). Another scope,
  or other rows/layers, get their own golden key (`<mode>-single-query`, `<mode>-rows4-last2`,
  see harness.claimkit.routing_variant) with no committed golden, so they follow the generic
  verdict policy (harness.claimkit); `--eval-rows` / `--common-budget` change the evaluation
  set itself (documented in claims/conftest.py).
- Influence: head influence at a position = sum over the group of |change of activation|;
  plateau influence is divided by the mean random-group influence of the same head at the
  same position, so a difficulty effect that moves every neuron alike cancels.
- Pairing: each rare position with the nearest common position in the same row (1:1) for the
  rank test; window means (+-16 positions, same row) for the effect size.
- H0 per head: selectivity (rare - matched common) <= 0. Test: one-sided Wilcoxon signed-rank
  on per-row paired means (rows are the unit), BH-FDR across all heads of the model
  (the multiple-comparison family).
- Effect size: relative selectivity (a head (1 + s)x stronger on the plateau in rare contexts
  has s), row-bootstrap CI; equivalence: the top-5 heads by influence have their 90% CI inside
  +-20% (TOST by interval inclusion).
- Decision: 'supported' iff rare tokens were learned, no head survives BH at q = 0.05 and the
  equivalence holds; 'not supported' if a head routes, or (inconclusive) if neither.
- Reported beside: Gini of per-head influence (rare, common), rare/common correlation of
  per-head influence (P2: "highly correlated"), specificity vs random groups, loss effects.
- Calibration (synthetic, reports/CALIBRATION.md): power 0.94 at a planted routing strength
  s = 0.2; null false-positive rate 0.055 (MC s.e. 0.016) over 200 replicates; and a tiny GPT-2
  with a hand-wired routing head is flagged exactly (tests/test_planted_head.py).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from harness import pipeline
from harness.analyses.plots_routing import plot_rare_common_scatter, plot_selectivity_heatmap
from harness.analyses.regimes import plateau_neurons
from harness.analyses.routing import group_influence, no_routing_test
from harness.claimkit import (DEFAULT_ROUTING_SCOPE, ROUTING_DEEP_LAYERS, apply_precondition,
                              check_verdict, layers_label, resolve_routing_layers,
                              resolve_routing_rows, routing_variant, settings_for)
from harness.stats.precondition import check_learned

CLAIM = "no-routing"
CALIBRATION = {"power": 0.94, "power_setting": "synthetic, planted routing head s = 0.2",
               "fpr": 0.055, "fpr_mc_se": 0.016, "n_null": 200,
               "source": "reports/CALIBRATION.md (claim 3)"}
MODES = ["bos", "zero", "mean"]
N_RANDOM_GROUPS = 8


def routing_inputs(prep, rarity, mode: str, seed: int, n_rows: int,
                   last_k_layers: int | None = None, scope: str = DEFAULT_ROUTING_SCOPE):
    """Plateau + random groups, and their head influences on the first `n_rows` rows."""
    inf = prep.influence
    rare_all, common_all = prep.masks(rarity)
    plateau = np.asarray(plateau_neurons(inf.delta, rare_all, sign="boost", method="fixed"))
    rng = np.random.default_rng(seed)
    others = np.setdiff1d(np.arange(prep.facade.d_mlp), plateau)
    groups = [plateau] + [rng.choice(others, plateau.size, replace=False)
                          for _ in range(N_RANDOM_GROUPS)]
    ablation, cols = pipeline.head_effects(prep, mode, n_rows, np.concatenate(groups),
                                           last_k_layers=last_k_layers, scope=scope)
    offsets = np.cumsum([0] + [g.size for g in groups])
    infl = group_influence(ablation.delta_act,
                           [cols[offsets[i]:offsets[i + 1]] for i in range(len(groups))])
    sel = inf.row < n_rows
    return ablation, infl, rare_all[sel], common_all[sel], plateau


# `mode` x `routing_scope` are parametrised by claims/conftest.py (from MODES and
# --routing-scope), after model/seed/rarity, so the default case ids end with `-<mode>`.
def test_no_routing(prepared, rarity, seed, model_name, mode, routing_scope, device,
                    record_claim, figure_dir, request):
    config = request.config
    quick = config.getoption("--quick")
    start = time.perf_counter()
    n_layers = prepared.facade.n_layers
    last_k = resolve_routing_layers(config.getoption("--routing-layers"), n_layers, device)
    # deep models: the partial forwards from the last layers dominate; fewer rows on CPU
    deep = n_layers > ROUTING_DEEP_LAYERS
    n_rows = resolve_routing_rows(config.getoption("--routing-rows"), len(prepared.rows),
                                  deep=deep, quick=quick, device=device)
    ablation, infl, rare, common, plateau = routing_inputs(prepared, rarity, mode, seed, n_rows,
                                                           last_k, routing_scope)
    if rare.sum() < 10:
        pytest.skip(f"only {int(rare.sum())} {rarity} positions in the first {n_rows} rows")
    result = no_routing_test(infl[0], infl[1:], rare, common, ablation.row, ablation.pos,
                             ablation.delta_loss, ablation.heads, n_boot=200 if quick else 500,
                             seed=seed)
    inf = prepared.influence
    rare_all, _ = prepared.masks(rarity)
    pre = check_learned(inf.loss[rare_all], prepared.facade.d_vocab,
                        prepared.unigram_loss(rare_all))
    result = apply_precondition(result, pre)
    # the default options keep their golden keys; another scope, or rows/layers other than
    # the CPU defaults, get their own (no golden: the generic verdict policy applies)
    variant = routing_variant(
        mode, routing_scope, n_rows, last_k,
        default_rows=resolve_routing_rows("auto", len(prepared.rows), deep=deep, quick=quick,
                                          device="cpu"),
        default_last_k=resolve_routing_layers("auto", n_layers, "cpu"))
    tag = f"{variant}-{rarity.which}-q{rarity.q:g}"
    figures = {}
    if result.details.get("per_head"):  # none when too few rows hold a matched rare position
        figures = {
            f"selectivity ({variant})": plot_selectivity_heatmap(
                result, figure_dir / f"heads-{tag}.png"),
            f"rare vs common ({variant})": plot_rare_common_scatter(
                result, figure_dir / f"scatter-{tag}.png")}
    record_claim(result, model=model_name, claim=CLAIM, seed=seed,
                 settings=settings_for(prepared, rarity, mode=mode, scope=routing_scope,
                                       layers=layers_label(last_k), rows_ablated=n_rows,
                                       plateau_size=int(plateau.size),
                                       random_groups=N_RANDOM_GROUPS),
                 figures=figures, calibration=CALIBRATION, wall_time_s=time.perf_counter() - start)
    check_verdict(request, result, claim=f"{CLAIM}/{variant}", model_name=model_name, seed=seed,
                  rarity=rarity)
