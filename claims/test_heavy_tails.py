"""Claim 5 - heavy-tailed specialist weights (HT-SR): the plateau neurons' final-layer MLP
weight rows have a heavier-tailed eigenvalue spectrum (lower power-law alpha) than random
groups (P2/P3's heavy-tailed self-regularisation analysis; methods.md section 1).

Preregistration (direction 'exists'; four verdicts, harness.verdicts; alpha = 0.05)
- Group and cross-fitting: exactly claims 2 and 4's (clustering.crossfit_analysis with the same
  seed: the plateau neurons of the rare-token boost curve, selected on the rare positions of
  one row half). Weights do not depend on rows, the selection does: each fold's group is
  tested, and the control is the selection null of that fold.
- Spectrum: eigenvalues of W W^T, W = the group's k rows (k x d_model) of the final-layer MLP:
  input rows (GPT-2 c_fc, NeoX dense_h_to_4h, Llama gate_proj - the gate's pre-activation is
  the one through the nonlinearity; up_proj only rescales it) and output rows (W_out). The
  authors' code used the input rows (dense_h_to_4h; Hill on a correlation matrix): input rows
  are the headline, output rows are reported and enter the family.
- alpha: density exponent, p(lambda) ~ lambda^-alpha, by Hill on the top 10% (the authors'
  estimator; with k = 10-40 it uses 1-4 eigenvalues) and by maximum likelihood with xmin
  chosen by the KS distance (Clauset et al.; >= 3 tail values).
- Effect (SPEC.effect): mean alpha of 1,000 random groups matched member by member on input
  and output row norm (norm heterogeneity alone spreads a spectrum, and the plateau is picked
  for an influence that grows with its output norm) minus the group's, input rows, ML fit,
  averaged over the two folds. Unmatched random groups (the authors' comparison) and the whole
  layer's W_in / W_out ESD fit are reported beside it.
- SESOI (SPEC.sesoi): 0.5 alpha units.
- Family and decision (heavy_tails.decide): Holm over {input, output} x {ML, Hill} (the claim
  holds if either matrix is heavier-tailed by either estimator: a union, so Holm, not IUT);
  each measure's p is the larger of its folds' one-sided empirical p vs the matched null (IUT
  over folds).
  supported    iff the lead (smallest) Holm-adjusted p <= alpha and the control passes on that
               measure: the group also lies below groups made by the same selection on
               common positions (p <= alpha in both folds) - else any top-influence group's
               heavy tail would pass for the plateau's;
  refuted      iff every measure's upper (1 - 2 alpha) bound (member-neuron bootstrap s.e.,
               t with k - 1 df, union over folds) lies below the SESOI;
  inconclusive otherwise, and whenever a validity gate fails: group size k >= 10 in both folds
               (below it Hill rests on no tail) or matched balance (max |SMD| <= 0.25);
  untestable   iff rare tokens were not learned (claimkit.apply_precondition; numbers kept).
- Resampling unit: neurons (positions do not enter weights); the interval is approximate
  (order statistics bootstrap poorly), the test is the exact empirical p.
- Power on this run's own data (details['own_power'], --power-reps replicates): the group's
  real rows get singular values s -> s^gamma (Frobenius norm kept), lowering ML alpha by
  SESOI x (0.5, 1, 2, 4) exactly; the null puts a selection-null group in its place.
"""

from __future__ import annotations

import time

import pytest

from harness.analyses.heavy_tails import (EFFECT_MEASURE, heavy_tails_analysis,
                                          heavy_tails_result, mlp_rows, own_power, plot_tails)
from harness.claimkit import (apply_precondition, check_verdict, first_result,
                              plateau_crossfit, settings_for)
from harness.claimset import ClaimSpec
from harness.verdicts import Sesoi

CLAIM = "heavy-tails"
SPEC = ClaimSpec(
    key=CLAIM, number=5, title="Heavy-tailed specialist weights (HT-SR)",
    hypothesis="The plateau neurons' final-layer MLP weight rows have a lower power-law alpha "
               "(heavier-tailed eigenvalue spectrum) than random groups with the same row "
               "norms (and than groups made by the same selection on common positions).",
    direction="exists", effect=EFFECT_MEASURE,
    sesoi=Sesoi(0.5, "reduction of power-law alpha (density exponent)",
                "HT-SR reads alpha 2-4 as heavy-tailed (well-trained) and > 6 as random-like: "
                "0.5 is a quarter of that band, and about one standard error of an ML alpha "
                "from ~10 tail eigenvalues ((alpha - 1) / sqrt(n_tail)); a smaller gap is no "
                "spectral difference a group of 10-40 neurons can carry"))
MIN_RARE = 20  # as claim 4: the selection's cross-fit needs rare positions in both halves
CI_POWER_REPS = 8
PAPER_NUMBERS_ROWS = (("HT-SR alpha, specialists vs random (input rows)", "P2/P3 models",
                       "lower (no number)", "P2/P3", "alpha_input_hill"),
                      ("HT-SR alpha, norm-matched random groups (input rows)", "P2/P3 models",
                       "-", "P2/P3", "matched_alpha_input_hill"))

PINNED = ("precondition.rare_loss", "alpha_group.input-mle", "alpha_group.input-hill",
          "alpha_group.output-mle", "alpha_group.output-hill", "alpha_matched.input-mle",
          "family.1.p_max", "family.2.estimate", "family.3.p_holm", "family.0.selection_p_max",
          "layer.input.mle", "layer.output.hill", "folds.0.k", "folds.1.k",
          "decision.gates.matched_balance.value", "own_power.power", "own_power.fpr")


def ci_cases(prep, rarity, seed: int):
    """(golden key, compute(prep)) of every case `pytest claims` runs at the CI settings."""
    yield CLAIM, lambda p: first_result(compute(p, rarity, seed, power_reps=CI_POWER_REPS))


def compute(prep, rarity, seed: int, quick: bool = False, power_reps: int = 100):
    """(TestResult, HeavyTails) for one case; None when too few rare positions."""
    cf = plateau_crossfit(prep, rarity, seed, MIN_RARE)
    if cf is None:
        return None
    n = 199 if quick else 1000
    ht = heavy_tails_analysis(cf, mlp_rows(prep.facade), sesoi=SPEC.sesoi.value, n_matched=n,
                              n_random=n, n_boot=200, seed=seed)
    power = own_power(ht, reps=power_reps, seed=seed)
    return apply_precondition(heavy_tails_result(ht, power), prep.precondition(rarity)), ht


def test_heavy_tails(prepared, rarity, seed, model_name, record_claim, figure_dir, request):
    quick = request.config.getoption("--quick")
    power_reps = int(request.config.getoption("--power-reps", default=100))
    start = time.perf_counter()
    out = compute(prepared, rarity, seed, quick, power_reps=power_reps)
    if out is None:
        n_rare = int(prepared.masks(rarity)[0].sum())
        pytest.skip(prepared.no_rare_reason(rarity, n_rare, MIN_RARE, " (a cross-fit)"))
    result, ht = out
    figure = plot_tails(ht, figure_dir / f"heavy-tails-{rarity.tag}.png", model=model_name,
                        setting=f"rarity {rarity.tag}", verdict=result.verdict)
    record_claim(result, model=model_name, claim=CLAIM, seed=seed,
                 settings=settings_for(prepared, rarity, group="plateau-boost",
                                       group_size=[int(f.group.size) for f in ht.cf.folds],
                                       power_reps=power_reps),
                 figures={"weight spectra": figure}, calibration=None,
                 wall_time_s=time.perf_counter() - start)
    check_verdict(request, result, claim=CLAIM, model_name=model_name, seed=seed,
                  rarity=rarity, spec=prepared.spec, pinned=PINNED)
