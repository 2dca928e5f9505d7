"""Claim 4 - coordinated, not modular: the plateau neurons' co-activation at rare positions
spans fewer dimensions than groups with the same activation statistics (P3's effective
dimensionality; P2/P3 read it with claim 2 as "coordinated but not modular"; methods.md
section 1).

Preregistration (direction 'exists'; four verdicts, harness.verdicts; alpha = 0.05)
- Group and cross-fitting: exactly claim 2's (clustering.crossfit_analysis with the same seed:
  the plateau neurons of the rare-token boost curve, selected on the rare positions of one
  row half and measured on the other, both ways).
- Effect (SPEC.effect): effective dimension PR/k = participation ratio of the eigenvalues of
  the group's correlation matrix at the test half's rare positions, over the group size;
  effect = mean PR/k of 1,000 random groups matched member by member on activation mean, SD,
  share active and strength outside the group, minus the group's PR/k, averaged over the two
  folds. P3's measure (components for 95% of the variance, over k) and the unmatched random
  groups (P3's comparison) are reported beside it.
- SESOI (SPEC.sesoi): 0.05 of group size.
- Decision (dimensionality.decide), IUT over folds A->B and B->A (no correction needed):
  supported    iff the one-sided empirical p vs the matched null is <= alpha in both folds
               and the control passes: the group also lies below groups made by the same
               selection on common positions (p <= alpha in both folds) - else any
               top-influence group's coordination would pass for the plateau's;
  refuted      iff the upper (1 - 2 alpha) bound (row-bootstrap s.e., t with test rows - 1
               df) lies below the SESOI in both folds;
  inconclusive otherwise, and whenever a validity gate fails: matched balance (max |SMD| <=
               0.25) or fewer than 8 rows with rare positions in a test half;
  untestable   iff rare tokens were not learned (claimkit.apply_precondition; numbers kept).
- Power on this run's own data (details['own_power'], --power-reps replicates): the group's
  real test-half activations share a planted factor (copula_plant: marginals unchanged) that
  lowers PR/k by SESOI x (0.5, 1, 2, 4); the null puts a selection-null group in its place.
"""

from __future__ import annotations

import time

import pytest

from harness.analyses.dimensionality import (EFFECT_MEASURE, dimensionality_analysis,
                                             dimensionality_result, own_power, plot_dimension)
from harness.claimkit import (apply_precondition, check_verdict, first_result,
                              plateau_crossfit, settings_for)
from harness.claimset import ClaimSpec
from harness.verdicts import Sesoi

CLAIM = "coordination"
SPEC = ClaimSpec(
    key=CLAIM, number=4, title="Coordinated, not modular",
    hypothesis="The plateau neurons' co-activation at rare positions has a lower effective "
               "dimensionality than random groups with the same activation statistics (and "
               "than groups made by the same selection on common positions).",
    direction="exists", effect=EFFECT_MEASURE,
    sesoi=Sesoi(0.05, "reduction of participation ratio / group size",
                "P3's reported gap is 0.07 of group size (0.49 vs 0.56, components for 95% "
                "of the variance); a reduction below 0.05 of the group size is less than one "
                "dimension in groups of up to 20 neurons - no coordinated unit"))
MIN_RARE = 20  # positions a correlation matrix needs (both halves together)
CI_POWER_REPS = 8
PAPER_NUMBERS_ROWS = (("components for 95% variance / k, specialists", "P3 models", "0.49",
                       "P3", "n95_over_k"),
                      ("components for 95% variance / k, random groups", "P3 models", "0.56",
                       "P3", "matched_n95_over_k"))

PINNED = ("precondition.rare_loss", "pr_over_k", "n95_over_k", "matched_pr_over_k",
          "family.0.p_max", "family.0.ci_high", "family.1.estimate", "family.1.p_max",
          "random.estimate", "folds.0.k", "folds.1.k",
          "decision.gates.matched_balance.value", "own_power.power", "own_power.fpr")


def ci_cases(prep, rarity, seed: int):
    """(golden key, compute(prep)) of every case `pytest claims` runs at the CI settings."""
    yield CLAIM, lambda p: first_result(compute(p, rarity, seed, power_reps=CI_POWER_REPS))


def compute(prep, rarity, seed: int, quick: bool = False, power_reps: int = 100):
    """(TestResult, Dimensionality) for one case; None when too few rare positions."""
    cf = plateau_crossfit(prep, rarity, seed, MIN_RARE)
    if cf is None:
        return None
    n = 199 if quick else 1000
    dim = dimensionality_analysis(cf, sesoi=SPEC.sesoi.value, n_matched=n, n_random=n,
                                  n_boot=200, seed=seed)
    power = own_power(dim, reps=power_reps, seed=seed)
    return apply_precondition(dimensionality_result(dim, power), prep.precondition(rarity)), dim


def test_coordination(prepared, rarity, seed, model_name, record_claim, figure_dir, request):
    quick = request.config.getoption("--quick")
    power_reps = int(request.config.getoption("--power-reps", default=100))
    start = time.perf_counter()
    out = compute(prepared, rarity, seed, quick, power_reps=power_reps)
    if out is None:
        n_rare = int(prepared.masks(rarity)[0].sum())
        pytest.skip(prepared.no_rare_reason(rarity, n_rare, MIN_RARE, " (a correlation matrix)"))
    result, dim = out
    figure = plot_dimension(dim, figure_dir / f"dimension-{rarity.tag}.png", model=model_name,
                            setting=f"rarity {rarity.tag}", verdict=result.verdict)
    record_claim(result, model=model_name, claim=CLAIM, seed=seed,
                 settings=settings_for(prepared, rarity, group="plateau-boost",
                                       group_size=[int(f.group.size) for f in dim.cf.folds],
                                       power_reps=power_reps),
                 figures={"effective dimension": figure}, calibration=None,
                 wall_time_s=time.perf_counter() - start)
    check_verdict(request, result, claim=CLAIM, model_name=model_name, seed=seed,
                  rarity=rarity, spec=prepared.spec, pinned=PINNED)
