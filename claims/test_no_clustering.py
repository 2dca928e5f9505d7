"""Claim 2 - no clustering: the plateau neurons do not form a module in activation space
(P1, claim 2; methods.md sections 6, 8, 9).

Preregistration (direction 'absent'; four verdicts, harness.verdicts; alpha = 0.05)
- Group: the plateau neurons of the rare-token boost curve (regimes.plateau_neurons, fixed
  window: the paper's ln r < 3.5 scaled to the layer width); variants top-N boost/suppress
  (--groups).
- Cross-fitting: the rows are split at random into halves A and B, balanced in rare positions.
  Fold A->B selects the group on the rare positions of A and measures it on the rare
  positions of B; fold B->A the swap. Results list both halves' rows and each fold's group.
- Effect (SPEC.effect): contrast = mean Pearson r over the group's pairs minus the mean r of
  its members with every other neuron of the layer (test half, rare positions); the effect is
  the group's contrast minus the mean contrast of null groups, in r units. A module raises it.
  The paper's Louvain Q of the group's own subgraph DROPS for a cohesive module (one block is
  not split), so Q, signed Q, module_Q and concentration are reported, never the headline.
- Nulls of the verdict family, per fold: (selection) 200 groups made by the same selection -
  the k most influential neurons of the same sign, k = the group's size - on size-matched
  draws of the selection half's common positions: any top-influence group of a trained layer
  is more co-activated than random neurons, so the group is compared with groups picked the
  same way; (matched) 200 random groups matched member by member on activation mean, SD and
  share of active positions (drawn from the 5 nearest neurons in percentile space).
  Reported only: 1,000 unmatched random groups (the paper's comparison), module_Q and Louvain
  Q of the group's own subgraph against all three nulls, weight-shuffle and rotation nulls,
  other resolutions/seeds, signed Leiden (BH within that reported family).
- Clustering methods (P1 next check 1; harness.analyses.cluster_methods): each fold's test-half
  layer is partitioned by Louvain and Leiden-modularity (resolution 0.5, 1, 2), Leiden-CPM
  (0.01, 0.03, 0.1 in r units) and spectral clustering (8, 16, 32 clusters) on the
  positive-part kNN graph (10 largest positive r per neuron: a module is positive
  co-activation and leidenalg rejects negative weights; the signed view stays reported), and
  by average-linkage hierarchical clustering on correlation distance 1 - r (cut at 8, 16, 32
  clusters). Statistic: the share of the group's pairs in one community (graph methods), the
  group's silhouette against the cut (hierarchical). Per method x resolution: effect =
  statistic minus the selection (and matched) null groups' mean, fold-averaged; p = max over
  folds and both nulls; (1 - 2 alpha) interval from a row bootstrap of the test half with the
  layer re-partitioned per draw (50 draws; 10 at the CI settings). At the CI settings
  (--power-reps <= 8) the grid is two values per method (CI_GRID) to keep the suite's cost.
  SESOIs: co-assignment 0.1 (a tenth more of the group's pairs together than null groups);
  silhouette 0.1 (a within-group r higher by the r SESOI 0.1 lowers the members' mean
  distance a by 0.1 at b ~ 1, i.e. silhouette + ~0.1).
- SESOI (SPEC.sesoi): 0.1 in r.
- Decision. The contrast family {selection, matched} x {A->B, B->A} is one member (its own
  IUT: significant iff p <= alpha in all four, non-superior iff all four upper bounds < SESOI);
  every method x resolution is another member (the same IUT over folds and nulls). Family
  of all members (11 at CI settings, 16 at full): BH over their p. 'refuted' rejects the
  global null "no method finds a module", where BH controls the family-wise error at alpha
  as Holm does; Holm could never reject (smallest empirical p 1/201 x 11 members > alpha)
  and the members, one group's cohesion seen by several methods, are positively dependent
  (PRDS: BH valid). A method named 'refuted' is an FDR-controlled discovery; one method
  alone finds a module only if its p <= alpha / 11 (more null draws than the CI's 200):
  supported    iff every member is non-superior: the upper (1 - 2 alpha) bound (row-bootstrap
               s.e., t with test rows - 1 df) below its SESOI in every fold and null - an
               intersection-union test, so no correction (a group LESS co-activated than a
               null is no module; the contrast's two-sided TOST is reported);
  refuted      iff some member is significant after BH and its fold-mean excess over both
               nulls exceeds its SESOI (a module exists for that method);
  inconclusive otherwise, and whenever a validity gate fails: matched balance (max |SMD| <=
               0.25 layer SDs per statistic) or fewer than 8 rows with rare positions in a
               test half.
  Per method the same rule over its own resolutions (details['method_verdicts']); the
  contrast-only decision is kept in details['contrast_decision'];
  untestable   iff rare tokens were not learned (claimkit.apply_precondition; the would-be
               verdict and every number are kept).
- Power on this run's own data (details['own_power'], --power-reps replicates) of the WHOLE
  family's verdict: the group's real test-half activations get a shared factor that raises its
  contrast by SESOI x (0.5, 1, 2, 4) (clustering.copula_plant: each neuron keeps its activation
  distribution, so the matching statistics do not move) and every method re-partitions the
  planted layer (the methods' bootstrap s.e. held at the run's); the null (false-positive
  rate) puts a selection-null group in the group's place.
- Synthetic calibration (generated data, not constants): reports/calibration/claim2.{md,json}.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from harness import pipeline
from harness.analyses.cluster_methods import (CI_GRID, FULL_GRID, family_own_power,
                                              family_result, method_family)
from harness.analyses.clustering import EFFECT_MEASURE, crossfit_analysis
from harness.analyses.plots_clustering import plot_methods, plot_nulls
from harness.analyses.regimes import plateau_neurons, top_neurons
from harness.claimkit import apply_precondition, check_verdict, first_result, settings_for
from harness.claimset import ClaimSpec
from harness.verdicts import Sesoi

CLAIM = "no-clustering"
SPEC = ClaimSpec(
    key=CLAIM, number=2, title="No clustering",
    hypothesis="The plateau neurons do not form a module: their co-activation at rare "
               "positions is no higher than that of groups made by the same selection or of "
               "random groups with the same activation statistics.",
    direction="absent", effect=EFFECT_MEASURE,
    sesoi=Sesoi(0.1, "excess within-minus-between correlation (r)",
                "a shared factor explaining 10% of each member's activation variance raises "
                "within-group r by about 0.1 - Cohen's 'small' correlation, the weakest "
                "co-activation that would make the group a functional unit; fixed before any "
                "calibration"))
MIN_RARE = 20  # positions a correlation graph needs (both halves together)
CI_POWER_REPS = 8  # own-data power replicates of the CI cases (pytest claims --power-reps 8)
GROUP_KINDS = ("plateau-boost", "top10-boost", "top50-boost", "top100-boost", "top10-suppress",
               "top50-suppress", "top100-suppress")

PINNED = ("precondition.rare_loss", "contrast", "module_Q", "Q",
          "family.0.estimate", "family.0.p_max", "family.0.ci_high",
          "family.1.estimate", "family.1.p_max", "family.1.ci_high",
          "unmatched_random.estimate",
          "decision.gates.matched_balance.value", "decision.gates.test_rows.value",
          "decision.gates.estimate_exceeds_sesoi.value",
          "decision.conditions.equivalent", "decision.conditions.significant",
          "crossfit.folds.0.k", "crossfit.folds.1.k",
          "own_power.power", "own_power.fpr",
          "contrast_decision.conditions.significant",
          "methods.1.estimate", "methods.1.p", "methods.1.ci_high",
          "methods.5.estimate", "methods.7.estimate", "methods.9.estimate",
          "methods.9.ci_high")


def ci_cases(prep, rarity, seed: int):
    """(golden key, compute(prep)) of every case `pytest claims` runs at the CI settings."""
    yield f"{CLAIM}/plateau-boost", lambda p: first_result(
        compute(p, rarity, seed, "plateau-boost", power_reps=CI_POWER_REPS))


def pytest_generate_tests(metafunc):
    if "group_kind" in metafunc.fixturenames:
        kinds = [k.strip() for k in metafunc.config.getoption("--groups").split(",") if k.strip()]
        unknown = sorted(set(kinds) - set(GROUP_KINDS))
        if unknown:
            raise pytest.UsageError(f"--groups: unknown {unknown}; choose from {GROUP_KINDS}")
        metafunc.parametrize("group_kind", kinds, scope="module")


def selection(prep, kind: str):
    """(select(mask) -> group, sign): the group kind's selection on a set of positions."""
    delta = prep.influence.delta
    if kind == "plateau-boost":
        return (lambda mask: plateau_neurons(delta, mask, sign="boost", method="fixed")), "boost"
    top, sign = kind.split("-")
    n = int(top.removeprefix("top"))
    return (lambda mask: top_neurons(delta, mask, n, sign=sign)), sign


def crossfit(prep, rarity, seed: int, group_kind: str = "plateau-boost", quick: bool = False,
             legacy: bool = True):
    """The cross-fitted contrast analysis of one case (CrossFit); None when too few rare
    positions. legacy=False skips the reported Louvain statistics (nothing else changes)."""
    rare, common = prep.masks(rarity)
    if rare.sum() < MIN_RARE or np.unique(prep.influence.row[rare]).size < 4:
        return None
    select, sign = selection(prep, group_kind)
    acts = pipeline.final_activations(prep)
    inf = prep.influence
    n = 199 if quick else 1000
    return crossfit_analysis(
        acts, inf.delta, inf.row, rare, common, select, sign=sign, sesoi=SPEC.sesoi.value,
        n_selection=200, n_matched=200, n_random=n, n_boot=200,
        legacy=dict(n_random=n, n_shuffle=n // 10, n_rotation=n // 10, n_boot=50,
                    n_leiden_check=10 if quick else 20) if legacy else None,
        seed=seed)


def methods(cf, seed: int, power_reps: int, quick: bool = False):
    """The clustering-method family on a CrossFit (CI grid at the CI settings)."""
    ci = power_reps <= CI_POWER_REPS
    return method_family(cf, CI_GRID if ci else FULL_GRID,
                         n_boot=10 if ci else 20 if quick else 50, seed=seed)


def compute(prep, rarity, seed: int, group_kind: str = "plateau-boost", quick: bool = False,
            power_reps: int = 100):
    """(TestResult, CrossFit) for one case; None when too few rare positions."""
    cf = crossfit(prep, rarity, seed, group_kind, quick)
    if cf is None:
        return None
    fam = methods(cf, seed, power_reps, quick)
    power = family_own_power(cf, fam, reps=power_reps, seed=seed)
    pre = prep.precondition(rarity)  # learnedness on the positions matching the rarity definition
    return apply_precondition(family_result(cf, fam, power), pre), cf


def test_no_clustering(prepared, rarity, seed, model_name, group_kind, record_claim, figure_dir,
                       request):
    quick = request.config.getoption("--quick")
    power_reps = request.config.getoption("--power-reps", default=100)
    start = time.perf_counter()
    out = compute(prepared, rarity, seed, group_kind, quick, power_reps=int(power_reps))
    if out is None:
        n_rare = int(prepared.masks(rarity)[0].sum())
        pytest.skip(prepared.no_rare_reason(rarity, n_rare, MIN_RARE, " (a correlation graph)"))
    result, cf = out
    figure = plot_nulls(cf, figure_dir / f"nulls-{group_kind}-{rarity.tag}.png", model=model_name,
                        setting=f"rarity {rarity.tag}, {group_kind}", verdict=result.verdict)
    setting = f"rarity {rarity.tag}, {group_kind}"
    methods_png = plot_methods(result.details,
                               figure_dir / f"methods-{group_kind}-{rarity.tag}.png",
                               model=model_name, setting=setting, verdict=result.verdict)
    record_claim(result, model=model_name, claim=CLAIM, seed=seed,
                 settings=settings_for(prepared, rarity, group=group_kind,
                                       group_size=[int(f.group.size) for f in cf.folds],
                                       power_reps=int(power_reps)),
                 figures={f"nulls ({group_kind})": figure,
                          f"clustering methods ({group_kind})": methods_png}, calibration=None,
                 wall_time_s=time.perf_counter() - start)
    check_verdict(request, result, claim=f"{CLAIM}/{group_kind}", model_name=model_name,
                  seed=seed, rarity=rarity, spec=prepared.spec, pinned=PINNED)
