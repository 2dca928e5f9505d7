"""Claim 1 - dual regimes: rare tokens recruit a plateau of final-layer MLP neurons that
common tokens lack (P1, claim 1; methods.md sections 4-5, 8, 9).

Preregistration (direction 'exists'; four verdicts, harness.verdicts; alpha = 0.05)
- Data: the model's evaluation rows (BOS + 255 tokens, shuffled with seed 42 + `seed`), the
  paper's position filters; influence of every final-layer neuron = mean over positions of
  Delta CE (nats) when that neuron is mean-ablated (exact closed form, methods.md section 4).
- Rarity: types in the lowest q% of training-token frequency (add-one smoothed), of the
  *target* x_{t+1} or the *current* x_t - both reported, q swept (`--rarity-q`).
- Hypothesis (SPEC.hypothesis): the rare-token curve (ln influence vs ln rank, boost neurons)
  has a plateau - top ranks lifted above the power law - that the common-token curve lacks.
- Effect measure (SPEC.effect): the width-free plateau lift. Both curves sorted on their own,
  d_r = ln(v_rare(r) / v_common(r)); lift(w) = mean d over ranks 1..w minus mean d over the
  next max(w, 5) ranks, for every width w = 1..W (W = min(100, half the sign group): the
  papers' 30-50-neuron plateaus at any layer width). Each width is standardised by its
  permutation null; the estimated plateau width is the argmax, and the effect is the lift
  there minus its null mean (ln units: extra log influence beyond what a random set of
  positions of the rare count shows), with a 95% row-bootstrap CI.
- Test: H0 = rare and common positions are exchangeable within rows; null = labels permuted
  within rows; statistic = the maximum standardised lift over widths, calibrated by the same
  permutations (max-statistic null: the width scan costs no multiplicity). The permutation
  repeats the whole procedure (sorting, width choice), so no cross-fitting is needed.
- SESOI (SPEC.sesoi): ln 1.2 - plateau neurons at least ~20% more influential, relative to
  the power law, than the common curve's. On the papers' log-log plots (GPT-2 large's rare
  power law alpha = 0.534) that is the offset of a 1.4x shift in rank, the smallest lift that
  reads as a regime of its own rather than scatter about the line.
- Decision (harness.verdicts.decide_exists):
  supported    iff the max-statistic p < alpha, every validity gate and every control passes;
  refuted      iff the upper (1 - 2 alpha) row-bootstrap bound of the effect < the SESOI (no
               validity gate failing);
  inconclusive otherwise, and whenever a validity gate fails:
               top_set_overlap - the two row halves' top-r sets (r = the width, >= 5) overlap
               no more than two random r-sets do (hypergeometric p >= alpha; issue 19.2: the
               gate measures the top set, not ~1,000 near-zero tail neurons);
               top_rank_spearman - split-half Spearman over the top 2r ranks (each half's own
               top, so its null is 0) <= 0;
  controls (a failed control blocks 'supported' only; a plateau absent beyond the SESOI is
  refuted whatever the controls say):
               loss_match_balance - each rare position is paired with the unused common
               position nearest in loss (without replacement); |standardised mean
               difference of the loss, rare vs partners| <= 0.25 (issue 20.1: with nothing as
               hard as the rare positions the control cannot tell rarity from difficulty);
               beyond_difficulty - the rare curve lifts above loss-matched common positions at
               the estimated width (lower (1 - 2 alpha) bootstrap bound > 0);
  untestable   iff rare tokens were not learned (claimkit.apply_precondition; the would-be
               verdict and every number are kept).
- Multiple comparisons: the verdict uses the raw per-record p - within a record the width
  scan is covered by the max-statistic null and only the preregistered sign decides; across
  records (models x seeds x rarity settings) each answers its own question, and the report
  adds BH q-values over the run's claim-1 records.
- Reported, not decided on: the fixed-window lift (ln r < 3.5, scaled) with its permutation p,
  size-matched common draws, each curve's paper-window excess, the BIC comparison of 1-3
  segment fits and the authors' Huber fit.
- Power on this run's own data (details['own_power'], --power-reps replicates): labels
  shuffled within rows (null), and for power a plateau planted at the shuffled rare positions
  on the top-k rare neurons, lifted by SESOI x (0.5, 1, 2, 4), k cycling over the papers'
  30-50-neuron plateaus scaled to the layer width.
- Synthetic calibration (generated data, not constants): reports/calibration/claim1.{md,json}.
"""

from __future__ import annotations

import time

import pytest

from harness.analyses.plots_regimes import plot_regimes
from harness.analyses.regimes import EFFECT_NAME, SESOI, dual_regimes_test
from harness.claimkit import apply_precondition, check_verdict, settings_for
from harness.claimset import ClaimSpec

CLAIM = "dual-regimes"
SPEC = ClaimSpec(
    key=CLAIM, number=1, title="Dual regimes",
    hypothesis="Rare tokens recruit a plateau of final-layer MLP neurons lifted above the "
               "power law that serves common tokens: the rare-token influence curve has more "
               "plateau than the common-token curve, beyond difficulty.",
    direction="exists", effect=EFFECT_NAME, sesoi=SESOI)
CI_POWER_REPS = 8  # own-data power replicates of the CI cases (pytest claims --power-reps 8)

# Detail values a golden pins beside the main numbers (the decision's inputs and controls).
PINNED = ("precondition.rare_loss", "verdict_without_precondition", "scan.width",
          "scan.lift", "scan.null_mean", "fixed_window.lift", "fixed_window.p", "upper",
          "loss_matched.lift_rare_vs_matched", "loss_matched.balance.smd",
          "size_matched.lift_median", "rare_excess", "common_excess",
          "decision.gates.top_set_overlap.value", "decision.gates.top_rank_spearman.value",
          "decision.gates.loss_match_balance.value", "decision.gates.beyond_difficulty.value",
          "decision.conditions.top_set_overlap", "decision.conditions.top_rank_spearman",
          "decision.conditions.loss_match_balance", "decision.conditions.beyond_difficulty",
          "decision.conditions.significant", "decision.conditions.upper_bound_below_sesoi",
          "own_power.power", "own_power.fpr")


def ci_cases(prep, rarity, seed: int):
    """(golden key, compute(prep)) of every case `pytest claims` runs at the CI settings."""
    yield CLAIM, lambda p: compute(p, rarity, seed, power_reps=CI_POWER_REPS)


def compute(prep, rarity, seed: int, quick: bool = False, power_reps: int = 100):
    """The claim's TestResult for one case; None when there is no rare position."""
    rare, common = prep.masks(rarity)
    if not rare.any():
        return None
    inf = prep.influence
    pre = prep.precondition(rarity)  # learnedness on the positions matching the rarity definition
    result = dual_regimes_test(inf.delta, inf.row, rare, common, inf.loss, seed=seed,
                               n_rows=len(prep.rows), n_perm=199 if quick else 999,
                               n_boot=200 if quick else 500, huber=not quick,
                               sesoi=SPEC.sesoi.value, power_reps=power_reps)
    return apply_precondition(result, pre)


def test_dual_regimes(prepared, rarity, seed, model_name, record_claim, figure_dir, request):
    quick = request.config.getoption("--quick")
    power_reps = int(request.config.getoption("--power-reps", default=100))
    start = time.perf_counter()
    result = compute(prepared, rarity, seed, quick, power_reps=power_reps)
    if result is None:
        pytest.skip(prepared.no_rare_reason(rarity, 0))
    figures = {}
    if "curves" in result.details:  # absent only when the data cannot give a curve at all
        figures["regimes"] = plot_regimes(
            result, figure_dir / f"regimes-{rarity.tag}.png", model=model_name,
            setting=f"rarity {rarity.tag}")
    record_claim(result, model=model_name, claim=CLAIM, seed=seed,
                 settings=settings_for(prepared, rarity, power_reps=power_reps),
                 figures=figures, calibration=None, wall_time_s=time.perf_counter() - start)
    check_verdict(request, result, claim=CLAIM, model_name=model_name, seed=seed, rarity=rarity,
                  spec=prepared.spec, pinned=PINNED)
