"""The learnedness precondition: uncertainty-aware, and on the positions that match the rarity
definition (issues 19.6, 20.3)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.stats.precondition import check_learned

V = 50257


def test_decision_uses_the_row_bootstrap_ci_not_the_mean():
    rng = np.random.default_rng(0)
    row = np.repeat(np.arange(8), 5)
    # mean 0.2 nats below ln V but a spread of several nats over 8 rows: not shown learned
    loss = math.log(V) - 0.2 + np.repeat(rng.normal(0, 3.0, 8), 5)
    loss += -0.2 - (loss.mean() - math.log(V))
    pre = check_learned(loss, V, row=row)
    assert loss.mean() < math.log(V) and not pre.ok
    lo, hi = pre.margin_uniform[1:]
    assert lo < 0 < hi and pre.n_rows == 8 and pre.n_positions == 40
    # the same mean with little spread is learned
    tight = np.full(40, math.log(V) - 0.2) + rng.normal(0, 0.01, 40)
    assert check_learned(tight, V, row=row).ok


def test_reports_unigram_margin_and_share_of_types_learned():
    row = np.repeat(np.arange(10), 4)
    token = np.tile([7, 8, 9, 10], 10)
    loss = np.where(token == 7, 14.0, 6.0)  # one of four types above ln V = 10.8
    pre = check_learned(loss, V, unigram_loss=np.full(40, 12.0), row=row, token=token)
    assert pre.ok and pre.share_types_learned == pytest.approx(0.75) and pre.n_types == 4
    est, lo, hi = pre.margin_unigram
    assert est == pytest.approx(12.0 - loss.mean()) and lo <= est <= hi
    assert "75% of 4 rare types" in pre.message


def test_nan_losses_are_an_error_not_a_verdict():
    from harness.errors import BadInputError

    with pytest.raises(BadInputError, match="NaN"):
        check_learned(np.array([1.0, np.nan]), V)


@pytest.mark.tiny
def test_current_rarity_is_judged_on_predicting_the_rare_token_itself():
    """tiny-gpt2 never learned its rare tokens. With current-token rarity the loss at t is
    about the next (mostly common) token and beats ln V, so a check on it would pass; the
    loss of predicting the rare x_t itself does not."""
    from harness import pipeline
    from harness.claimkit import claim_eval_spec
    from harness.data.rarity import RaritySpec

    spec = claim_eval_spec("tiny-gpt2", which=("target", "current"), qs=(50.0,), eval_rows=12,
                           common_budget=50)
    prep = pipeline.prepare("tiny-gpt2", spec)
    rarity = RaritySpec(q=50, which="current")
    rare, _ = prep.masks(rarity)
    wrong = check_learned(prep.influence.loss[rare], prep.facade.d_vocab)
    assert wrong.ok  # the old check passes (mean loss at t below ln V)
    pre = prep.precondition(rarity)
    assert not pre.ok and pre.rare_loss > math.log(prep.facade.d_vocab) + 1.0
    assert "current rarity" in pre.positions and pre.n_positions == int(rare.sum())
    target = prep.precondition(RaritySpec(q=50, which="target"))
    assert "target rarity" in target.positions and not target.ok
