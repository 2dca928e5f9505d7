"""Claim 6 - necessary for rare tokens: jointly mean-ablating the plateau neurons costs more
loss at rare positions than ablating random groups of the same size, and more so at rare than
at common positions (P1's next check 3; issue 15.3; methods.md section 1).

Preregistration (direction 'exists'; four verdicts, harness.verdicts; alpha = 0.05)
- Group and cross-fitting: exactly claims 2 and 4's (the same row halves and the plateau
  neurons of the rare-token boost curve selected on the rare positions of one half,
  regimes.plateau_neurons 'fixed'); every ablation is measured on the other half, both ways.
- Intervention: exact joint mean ablation (harness.ablation.group, the closed form as a rank-k
  update; means = the influence's mu) at the rare and common positions of the test half (up
  to 100 rare and 100 common per half, uniform subsamples beyond that: the cost is groups x
  positions x vocabulary); loss = next-token cross-entropy.
- Effect (SPEC.effect): necessity = mean CE increase at the test half's rare positions with
  the group ablated minus the mean of 200 random groups of the same size (unmatched: P1's
  "beyond its size"), averaged over the folds; its percentile among the random groups.
- SESOI (SPEC.sesoi): 0.05 nats.
- Decision (necessity.decide), IUT over folds x {necessity, rare-minus-common difference}:
  supported    iff the empirical p of the rare-position increase among the random groups is
               < alpha in both folds and the control passes: the excess over random groups is
               larger at rare than at common positions (difference in differences, empirical
               p < alpha in both folds) - else any generally important group would pass;
  refuted      iff the upper (1 - 2 alpha) bound of the necessity (row-bootstrap s.e., t with
               test rows - 1 df) lies below the SESOI in both folds;
  inconclusive otherwise, and when a test half has fewer than 8 rows with rare positions;
  untestable   iff rare tokens were not learned (claimkit.apply_precondition; numbers kept).
- Reported, not in the verdict: sufficiency (every final-layer neuron mean-ablated except the
  group: its restored rare-position CE vs 100 random groups restored alike, and the share of the
  all-ablated loss gap it recovers) and 50 random groups matched member by member on
  single-neuron importance outside rarity (mean Delta at the selection half's common positions,
  activation SD).
- Power on this run's own data (details['own_power'], --power-reps replicates): a left-out
  random group's real increases plus SESOI x (0.5, 1, 2, 4) at rare positions (spread like its
  own increases); the null puts the same random group, unplanted, in the group's place.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from harness.analyses import necessity as nx
from harness.analyses.regimes import plateau_neurons
from harness.claimkit import apply_precondition, check_verdict, first_result, settings_for
from harness.claimset import ClaimSpec
from harness.verdicts import Sesoi

CLAIM = "necessity"
SPEC = ClaimSpec(
    key=CLAIM, number=6, title="Necessary for rare tokens",
    hypothesis="Jointly mean-ablating the plateau neurons raises the loss at rare positions "
               "more than ablating random groups of the same size, and more so at rare than "
               "at common positions (sufficiency - the group alone restored - reported).",
    direction="exists", effect=nx.EFFECT_MEASURE,
    sesoi=Sesoi(0.05, "nats of mean CE increase at rare positions beyond random groups",
                "a 5% change of rare-token perplexity (e^0.05); below it a group whose removal "
                "costs rare tokens no more than random neurons of its size is not 'necessary' "
                "in any useful sense, and single-neuron Deltas on the studied models are of "
                "order 1e-3..1e-2 nats, so a group of 10-30 that matters must reach it"))
MIN_RARE = 20
N_RANDOM = 200
N_MATCHED = 50
CI_POWER_REPS = 8
PAPER_NUMBERS_ROWS = ()  # P1 proposes the check; it reports no number for it

PINNED = ("precondition.rare_loss", "increase_rare", "random_increase_rare", "percentile",
          "difference.estimate", "difference.p_max", "family.0.p_max", "family.0.ci_high",
          "sufficiency.estimate", "sufficiency.recovered_share", "matched.estimate",
          "folds.0.k", "folds.1.k", "own_power.power", "own_power.fpr")


def ci_cases(prep, rarity, seed: int):
    """(golden key, compute(prep)) of every case `pytest claims` runs at the CI settings."""
    yield CLAIM, lambda p: first_result(compute(p, rarity, seed, power_reps=CI_POWER_REPS))


def compute(prep, rarity, seed: int, quick: bool = False, power_reps: int = 100):
    """(TestResult, Necessity) for one case; None when too few rare positions."""
    rare, common = prep.masks(rarity)
    inf = prep.influence
    if rare.sum() < MIN_RARE or np.unique(inf.row[rare]).size < 4:
        return None
    folds = nx.crossfit_groups(
        inf.row, rare, lambda mask: plateau_neurons(inf.delta, mask, sign="boost",
                                                    method="fixed"), seed)
    data = nx.measure(prep, rare, common, folds, n_random=N_RANDOM, n_matched=N_MATCHED,
                      seed=seed)
    nec = nx.analyse(data, sesoi=SPEC.sesoi.value, n_boot=200 if quick else 1000, seed=seed,
                     settings={"n_random": N_RANDOM, "n_matched": N_MATCHED,
                               "max_rare": nx.MAX_RARE, "max_common": nx.MAX_COMMON,
                               "n_restore": nx.N_RESTORE, "values": "mean (mu)",
                               "block_dtype": "float32"})
    power = nx.own_power(nec, reps=power_reps, seed=seed)
    return apply_precondition(nx.necessity_result(nec, power), prep.precondition(rarity)), nec


def test_necessity(prepared, rarity, seed, model_name, record_claim, figure_dir, request):
    quick = request.config.getoption("--quick")
    power_reps = int(request.config.getoption("--power-reps", default=100))
    start = time.perf_counter()
    out = compute(prepared, rarity, seed, quick, power_reps=power_reps)
    if out is None:
        n_rare = int(prepared.masks(rarity)[0].sum())
        pytest.skip(prepared.no_rare_reason(rarity, n_rare, MIN_RARE))
    result, nec = out
    figure = nx.plot_necessity(nec, figure_dir / f"necessity-{rarity.tag}.png",
                               model=model_name, setting=f"rarity {rarity.tag}",
                               verdict=result.verdict)
    record_claim(result, model=model_name, claim=CLAIM, seed=seed,
                 settings=settings_for(prepared, rarity, group="plateau-boost",
                                       group_size=[int(f.group.size) for f in nec.folds],
                                       n_random=N_RANDOM, n_matched=N_MATCHED,
                                       max_rare=nx.MAX_RARE, max_common=nx.MAX_COMMON,
                                       power_reps=power_reps),
                 figures={"necessity and sufficiency": figure}, calibration=None,
                 wall_time_s=time.perf_counter() - start)
    check_verdict(request, result, claim=CLAIM, model_name=model_name, seed=seed,
                  rarity=rarity, spec=prepared.spec, pinned=PINNED)
