"""Claim 3 - no preferential routing: no attention head routes rare tokens to the plateau
neurons (P1, claim 3; methods.md sections 7-9).

Preregistration (direction 'absent'; four verdicts, harness.verdicts; alpha = 0.05)
- Hypothesis (SPEC.hypothesis): ablating any single attention head changes the plateau
  neurons' activations about as much in rare-token contexts as in matched common contexts.
- Cross-fitting (issue 19.1): the evaluation rows are split at random (seed) into two halves,
  balanced within the ablated rows. The plateau of half A (the rare-token boost curve's fixed
  rank window, claim 1) is selected on the rare positions of half B's rows only, and the
  other way round; head effects of a row are always measured on the plateau selected without
  it, with R = 8 random neuron groups of the same size drawn outside that plateau. The two
  halves are pooled: one analysis over all ablated rows (each row's values come from the
  other half's selection); per-half estimates and which rows did what are in
  `details['cross_fit']`. Head effects exist for the `--routing-rows` ablated rows only
  (harness.pipeline.routing_rows: every row, or the rows holding the most rare positions of
  the evaluated cover - chosen by the input tokens, never by an outcome), so those are the
  tested rows of both halves, while the selection uses every evaluation row of the other
  half.
- Intervention: every head ablated alone; modes `bos` (attention row one-hot on position 0,
  the paper), `zero` and `mean` (on attn.hook_z); which heads, on how many rows and in which
  scope are run options (root conftest), each recorded in the result's settings (`layers`,
  `rows_ablated`, `scope`):
  - `--routing-layers` auto (default) | all | k. auto: on CPU every layer of models with <= 12
    layers and the last 6 layers of deeper ones (as the paper did for GPT-2 XL); on CUDA every
    layer. k: the heads of the last k layers.
  - `--routing-rows` auto (default) | N. auto: on CPU 12 evaluation rows (8 with --quick) of
    models deeper than 12 layers, else 64 (32 with --quick); on CUDA every row of the
    evaluation set. Always capped at the evaluation rows (`--eval-rows` sets those); fewer than
    all: the rows with the most rare positions (issue 22.5: SmolLM2's first 12 rows held 4).
  - `--routing-scope` comma list of `all-positions` (default) and `single-query`; each scope is
    its own test case (id suffix `-single-query`).
  The tiny fixtures' goldens (key `no-routing/<mode>`) hold for the default options only;
  other scopes, rows or layers get their own golden key (harness.claimkit.routing_variant)
  with no committed golden and follow the generic verdict policy.
- Influence: head influence at a position = sum over the group of |change of activation|.
- Pairing: each rare position with the nearest common position of its row (1:1); the same
  pairs give the effect, the test and the intervals (issue 19.5).
- Effect measure (SPEC.effect, harness.analyses.routing): per head,
  s_h = sum over pairs [P(rare) / (1 + m_h) - P(common) - k (R(rare) - R(common))] / sum of
  P(common), with P / R the plateau / mean random-group influence. k = the median over heads
  of the plateau-to-random ratio on common positions (a difference in differences against
  random groups at the model's typical ratio); m_h = the median over the other heads of the
  rare gain of P over R (centring on the typical head). Together they remove what moves every
  neuron more at rare positions (difficulty; a head working harder there; LayerNorm scale) and
  what moves the plateau more for every head (the plateau neurons' own state at rare
  positions), and keep a single head's extra push on the plateau even when, in a small
  residual stream, its write moves random neurons too (issue 20.2: a per-position
  plateau/random ratio cancels such a router). The typical head's gain is reported; the
  ratio-normalised and the paper's raw statistics, centred or not, are reported beside.
- Tests: per head, a one-sided sign-flip randomisation test of the per-row sums of the paired
  differences (H1: s_h > 0), BH-FDR over all ablated heads of the model (the family: every
  head passed to the analysis, named in `details['fdr_family']`); row-bootstrap (1 - 2 alpha)
  intervals of s_h.
- SESOI (SPEC.sesoi): 0.2 - a head that moves the plateau 20% more in rare than in matched
  common contexts (beyond what random neurons predict); fixed before any calibration.
- Decision (harness.verdicts.decide_absent):
  refuted      iff some head is significant after BH and its estimate s_h > 0.2;
  supported    iff equivalence holds for every head at once: every head's 90% interval
               inside +-0.2 (intersection-union test over all heads, level alpha; issue 19.4);
  inconclusive otherwise, or when a validity gate fails: enough_rows (>= 10 rows hold a pair)
               and pairing_balance (|standardised difference of position, rare vs matched
               common| <= 0.25);
  untestable   iff rare tokens were not learned (claimkit.apply_precondition; the would-be
               verdict and every number kept).
- Reported, not decided on: the ratio-normalised and raw selectivities (`alternatives`), a
  simultaneous max-|t| band over all heads, Gini of per-head influence (rare, common), the
  rare/common correlation of per-head influence (P2: "highly correlated"), specificity vs
  random groups, loss effects.
- Power on this run's own data (details['own_power'], --power-reps replicates): rare/common
  labels shuffled within rows (null); for power, on such a shuffled copy, SESOI x (0.5, 1, 2,
  4) extra selectivity added to one real head at its rare positions; the full rule reruns.
- Synthetic calibration (generated data): reports/calibration/claim3.{md,json}; the
  hand-wired routers: tests/test_planted_head.py (synthetic model, and a head of the trained
  tiny-gpt2 rewired at test time).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from harness import pipeline
from harness.analyses.plots_routing import plot_rare_common_scatter, plot_selectivity_heatmap
from harness.analyses.regimes import plateau_neurons
from harness.analyses.routing import SESOI, RoutingAnalysis, group_influence
from harness.claimkit import (DEFAULT_ROUTING_SCOPE, ROUTING_DEEP_LAYERS, apply_precondition,
                              check_verdict, first_result, layers_label,
                              resolve_routing_layers,
                              resolve_routing_rows, routing_variant, settings_for)
from harness.claimset import ClaimSpec
from harness.errors import BadInputError

CLAIM = "no-routing"
SPEC = ClaimSpec(
    key=CLAIM, number=3, title="No preferential routing",
    hypothesis="No attention head routes rare-token contexts to the plateau neurons "
               "preferentially: ablating any single head changes the plateau's activations "
               "about as much in rare-token contexts as in matched common contexts.",
    direction="absent",
    effect="relative routing selectivity s_h of the most selective head: extra plateau "
           "influence in rare vs matched common contexts beyond k x the random groups' "
           "(difference in differences) and beyond the typical head, over the plateau "
           "influence at the matched commons",
    sesoi=SESOI)
MODES = ["bos", "zero", "mean"]
N_RANDOM_GROUPS = 8
MIN_RARE = 10  # rare positions among the ablated rows
CI_POWER_REPS = 8  # own-data power replicates of the CI cases (pytest claims --power-reps 8)
PINNED = ("precondition.rare_loss", "verdict_without_precondition", "n_rows_paired",
          "max_selectivity", "fraction_heads_routing", "fraction_heads_significant",
          "n_heads_equivalent", "equivalence_p", "normalisation_k.0", "normalisation_k.1",
          "typical_head_gain.m.0", "typical_head_gain.m.1",
          "selectivity_distribution.median", "simultaneous_band.critical_value",
          "alternatives.ratio.max_s", "alternatives.none.max_s",
          "concentration.gini_rare.estimate", "concentration.pearson_rare_common.estimate",
          "specificity.all_heads_ratio", "cross_fit.plateau_jaccard",
          "decision.gates.enough_rows.value", "decision.gates.pairing_balance.value",
          "decision.gates.estimate_exceeds_sesoi.value", "decision.conditions.equivalent",
          "decision.conditions.significant", "decision.conditions.estimate_exceeds_sesoi",
          "own_power.power", "own_power.fpr")


def ci_cases(prep, rarity, seed: int):
    """(golden key, compute(prep)) of every case `pytest claims` runs at the CI settings."""
    rows, last_k = default_sizes(prep, quick=False)
    for mode in MODES:
        yield (f"{CLAIM}/{mode}",
               lambda p, mode=mode: first_result(compute(p, rarity, seed, mode, rows, last_k,
                                                   power_reps=CI_POWER_REPS)))


def cross_fit_folds(n_eval_rows: int, rows, seed: int) -> np.ndarray:
    """Fold (0/1) of every evaluation row: a random half of the ablated rows (`rows`: ids, or
    an int n for the first n) and a random half of the others, so both halves are tested and
    select."""
    rng = np.random.default_rng([seed, 19])
    fold = np.zeros(n_eval_rows, np.int64)
    ablated = np.zeros(n_eval_rows, bool)
    ablated[pipeline.row_ids(n_eval_rows, rows)] = True
    for ids in (np.flatnonzero(ablated), np.flatnonzero(~ablated)):
        perm = ids[rng.permutation(ids.size)]
        fold[perm[ids.size // 2:]] = 1
    return fold


def routing_inputs(prep, rarity, mode: str, seed: int, rows,
                   last_k_layers: int | None = None, scope: str = DEFAULT_ROUTING_SCOPE):
    """Cross-fitted plateau and random groups, and their head influences on the ablated
    `rows` (ids; an int n: the first n): (ablation, infl [1 + R, H, n_pos], rare, common,
    fold per position, plan)."""
    inf = prep.influence
    rare_all, common_all = prep.masks(rarity)
    ids = pipeline.row_ids(len(prep.rows), rows)
    ablated = np.zeros(len(prep.rows), bool)
    ablated[ids] = True
    fold_of_row = cross_fit_folds(len(prep.rows), ids, seed)
    rng = np.random.default_rng(seed)
    plateaus, groups = [], []
    for f in (0, 1):
        select = fold_of_row[inf.row] != f          # rows of the other half select
        if not rare_all[select].any():
            raise BadInputError(f"half {1 - f} of the evaluation rows holds no {rarity} "
                                "position to select a plateau on; evaluate more rows")
        plateau = np.asarray(plateau_neurons(inf.delta[select], rare_all[select],
                                             sign="boost", method="fixed"))
        others = np.setdiff1d(np.arange(prep.facade.d_mlp), plateau)
        plateaus.append(plateau)
        groups.append([plateau] + [rng.choice(others, plateau.size, replace=False)
                                   for _ in range(N_RANDOM_GROUPS)])
    neurons = np.unique(np.concatenate([g for gs in groups for g in gs]))
    ablation, cols = pipeline.head_effects(prep, mode, ids, neurons,
                                           last_k_layers=last_k_layers, scope=scope)
    col_of = dict(zip(neurons.tolist(), cols.tolist()))
    fold = fold_of_row[ablation.row]
    infl = np.zeros((1 + N_RANDOM_GROUPS, len(ablation.heads), ablation.row.size))
    for f in (0, 1):
        at = np.flatnonzero(fold == f)
        infl[:, :, at] = group_influence(ablation.delta_act[:, at],
                                         [[col_of[n] for n in g.tolist()] for g in groups[f]])
    sel = ablated[inf.row]
    a, b = set(plateaus[0].tolist()), set(plateaus[1].tolist())
    plan = {"rule": "rows split in two halves at random (balanced within the ablated rows); "
                    "each half's plateau is selected on the other half's rare positions; "
                    "the halves are pooled for the test",
            "test_rows": [np.flatnonzero((fold_of_row == f) & ablated).tolist()
                          for f in (0, 1)],
            "select_rows": [np.flatnonzero(fold_of_row != f).tolist() for f in (0, 1)],
            "plateau": [p.tolist() for p in plateaus],
            "plateau_jaccard": len(a & b) / max(len(a | b), 1)}
    return ablation, infl, rare_all[sel], common_all[sel], fold, plan


def compute(prep, rarity, seed: int, mode: str, n_rows: int, last_k: int | None,
            scope: str = DEFAULT_ROUTING_SCOPE, quick: bool = False, power_reps: int = 100):
    """(TestResult, plateau of half 0) for one case; None when too few rare positions are
    ablated."""
    rare_all, _ = prep.masks(rarity)
    rows = pipeline.routing_rows(prep, n_rows)
    if rare_all[np.isin(prep.influence.row, rows)].sum() < MIN_RARE:
        return None
    ablation, infl, rare, common, fold, plan = routing_inputs(prep, rarity, mode, seed, rows,
                                                              last_k, scope)
    plan["ablated_rows"] = {"n": int(rows.size), "of": len(prep.rows),
                            "rule": "all" if rows.size == len(prep.rows) else
                            "the rows with the most rare positions of the evaluated cover "
                            "(pipeline.routing_rows)"}
    analysis = RoutingAnalysis(infl[0], infl[1:], rare, common, ablation.row, ablation.pos,
                               ablation.heads, delta_loss=ablation.delta_loss, fold=fold,
                               n_boot=400 if quick else 1000, seed=seed,
                               sesoi=SPEC.sesoi.value)
    result = analysis.result()
    per_fold = {}
    for f in (0, 1):
        ids = set(plan["test_rows"][f])
        per_fold[str(f)] = _fold_summary(analysis, ids)
    result.details["cross_fit"] = {**plan, "per_fold": per_fold}
    result.details["own_power"] = analysis.own_power(power_reps, seed=seed).to_dict()
    return apply_precondition(result, prep.precondition(rarity)), np.asarray(plan["plateau"][0])


def _fold_summary(analysis: RoutingAnalysis, rows: set) -> dict:
    """Largest selectivity and routing heads when only one half's rows are analysed."""
    keep = np.isin(analysis.row, list(rows))
    if analysis.rare[keep].sum() == 0:
        return {"n_rows": len(rows), "max_selectivity": None, "routing_heads": []}
    sub = RoutingAnalysis(analysis.infl_plateau[:, keep],
                          None if analysis.infl_random is None else
                          np.asarray(analysis.infl_random)[:, :, keep],
                          analysis.rare[keep], analysis.common[keep], analysis.row[keep],
                          analysis.pos[keep], analysis.heads, fold=analysis.fold[keep]
                          if analysis.fold is not None else None, n_boot=200,
                          seed=analysis.seed, sesoi=analysis.sesoi)
    r = sub.result()
    return {"n_rows": len(rows), "n_rows_paired": r.details["n_rows_paired"],
            "max_selectivity": r.details["max_selectivity"],
            "routing_heads": r.details["routing_heads"],
            "would_be_verdict": r.verdict}


def default_sizes(prep, quick: bool) -> tuple[int, int | None]:
    """(rows, last_k) of the CPU 'auto' options: the setting the goldens were made with."""
    n_layers = prep.facade.n_layers
    deep = n_layers > ROUTING_DEEP_LAYERS
    return (resolve_routing_rows("auto", len(prep.rows), deep=deep, quick=quick, device="cpu"),
            resolve_routing_layers("auto", n_layers, "cpu"))


# `mode` x `routing_scope` are parametrised by claims/conftest.py (from MODES and
# --routing-scope), after model/seed/rarity, so the default case ids end with `-<mode>`.
def test_no_routing(prepared, rarity, seed, model_name, mode, routing_scope, device,
                    record_claim, figure_dir, request):
    config = request.config
    quick = config.getoption("--quick")
    power_reps = int(config.getoption("--power-reps", default=100))
    start = time.perf_counter()
    n_layers = prepared.facade.n_layers
    last_k = resolve_routing_layers(config.getoption("--routing-layers"), n_layers, device)
    # deep models: the partial forwards from the last layers dominate; fewer rows on CPU
    deep = n_layers > ROUTING_DEEP_LAYERS
    n_rows = resolve_routing_rows(config.getoption("--routing-rows"), len(prepared.rows),
                                  deep=deep, quick=quick, device=device)
    out = compute(prepared, rarity, seed, mode, n_rows, last_k, routing_scope, quick,
                  power_reps=power_reps)
    if out is None:
        rows = pipeline.routing_rows(prepared, n_rows)
        n_rare = int(prepared.masks(rarity)[0][np.isin(prepared.influence.row, rows)].sum())
        pytest.skip(prepared.no_rare_reason(
            rarity, n_rare, MIN_RARE, f" in the {rows.size} rows ablated (--routing-rows; the "
                                      "rows with the most rare positions)"))
    result, plateau = out
    # the default options keep their golden keys; another scope, or rows/layers other than
    # the CPU defaults, get their own (no golden: the generic verdict policy applies)
    default_rows, default_last_k = default_sizes(prepared, quick)
    variant = routing_variant(mode, routing_scope, n_rows, last_k, default_rows=default_rows,
                              default_last_k=default_last_k)
    tag = f"{variant}-{rarity.tag}"
    figures = {}
    if result.details.get("per_head"):
        figures = {
            f"selectivity ({variant})": plot_selectivity_heatmap(
                result, figure_dir / f"heads-{tag}.png", model=model_name,
                setting=f"rarity {rarity.tag}, {variant}"),
            f"rare vs common ({variant})": plot_rare_common_scatter(
                result, figure_dir / f"scatter-{tag}.png", model=model_name,
                setting=f"rarity {rarity.tag}, {variant}")}
    record_claim(result, model=model_name, claim=CLAIM, seed=seed,
                 settings=settings_for(prepared, rarity, mode=mode, scope=routing_scope,
                                       layers=layers_label(last_k), rows_ablated=n_rows,
                                       plateau_size=int(plateau.size),
                                       random_groups=N_RANDOM_GROUPS, power_reps=power_reps),
                 figures=figures, calibration=None, wall_time_s=time.perf_counter() - start)
    check_verdict(request, result, claim=f"{CLAIM}/{variant}", model_name=model_name, seed=seed,
                  rarity=rarity, spec=prepared.spec, pinned=PINNED)
