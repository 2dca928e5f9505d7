"""Claim 1 - dual regimes: rare tokens recruit a plateau of final-layer MLP neurons that
common tokens lack (P1, claim 1; methods.md sections 4-5, 8).

Preregistration
- Data: the model's evaluation rows (BOS + 255 tokens, shuffled with seed 42 + `seed`), the
  paper's position filters; influence of every final-layer neuron = mean over positions of
  Delta CE (nats) when that neuron is mean-ablated (exact closed form, methods.md section 4).
- Rarity: types in the lowest q% of training-token frequency (add-one smoothed), of the
  *target* x_{t+1} or the *current* x_t - both reported, q swept (`--rarity-q`).
- H0: rare and common positions are exchangeable within rows, so the rare-token curve
  (ln influence vs ln rank, boost neurons) has no more plateau than the common-token curve.
- Statistic: plateau lift = mean ln(v_rare / v_common) over the plateau ranks (ln r < 3.5,
  scaled to the layer width) minus the same over the power-law ranks (3.5 <= ln r <= 5.5).
  It fits nothing and is invariant to rescaling; the paper-window excess over a fitted power
  law is reported beside it (it loses power when the plateau reaches into the fit window,
  see reports/CALIBRATION.md).
- Null: rare/common labels permuted within each row (n_perm draws), which keeps the rare
  sample size, so the winner's-curse inflation of a small noisy set is in the null too.
- Effect size: the lift with a 95% row-bootstrap CI.
- Controls (reported): size-matched common draws; loss-matched common positions; split-half
  reliability; the BIC comparison of 1-3 segment fits and the authors' Huber fit.
- Decision: 'supported' iff rare tokens were learned (rare loss < ln V, else 'untestable'),
  split-half Spearman >= 0.5, permutation p < alpha = 0.05, and the CI of the lift of rare
  over loss-matched common lies above 0. Multiple comparisons: BH-FDR across the records of
  this claim in a run (models x seeds x rarity settings), reported as q-values.
- Calibration (synthetic, reports/CALIBRATION.md): power 1.00 at a planted plateau of k=9
  neurons with effect 1.0; null false-positive rate 0.007 (MC s.e. 0.004) over 400 replicates.
"""

from __future__ import annotations

import time

import pytest

from harness.claimkit import check_verdict, settings_for
from harness.analyses.plots_regimes import plot_regimes
from harness.analyses.regimes import dual_regimes_test
from harness.stats.precondition import check_learned

CLAIM = "dual-regimes"
CALIBRATION = {"power": 1.0, "power_setting": "synthetic, planted k=9 neurons, effect 1.0",
               "fpr": 0.007, "fpr_mc_se": 0.004, "n_null": 400,
               "source": "reports/CALIBRATION.md (claim 1)"}


def run_claim(prep, rarity, seed: int, quick: bool):
    rare, common = prep.masks(rarity)
    if not rare.any():
        pytest.skip(f"no {rarity} positions in {prep.n_pos} kept positions; evaluate more rows")
    inf = prep.influence
    pre = check_learned(inf.loss[rare], prep.facade.d_vocab, prep.unigram_loss(rare))
    return dual_regimes_test(inf.delta, inf.row, rare, common, inf.loss, seed=seed,
                             precondition=pre, n_rows=len(prep.rows),
                             n_perm=199 if quick else 999, n_boot=200 if quick else 500,
                             huber=not quick)


def test_dual_regimes(prepared, rarity, seed, model_name, record_claim, figure_dir, request):
    quick = request.config.getoption("--quick")
    start = time.perf_counter()
    result = run_claim(prepared, rarity, seed, quick)
    figures = {}
    if "curves" in result.details:  # absent only when the data cannot give a curve at all
        figures["regimes"] = plot_regimes(
            result, figure_dir / f"regimes-{rarity.which}-q{rarity.q:g}.png")
    record_claim(result, model=model_name, claim=CLAIM, seed=seed,
                 settings=settings_for(prepared, rarity), figures=figures,
                 calibration=CALIBRATION, wall_time_s=time.perf_counter() - start)
    check_verdict(request, result, claim=CLAIM, model_name=model_name, seed=seed, rarity=rarity)
