"""Claim 1 end to end on a committed fixture: the claim's compute() on tiny-gpt2 (CI
settings, target rarity q = 50) returns the four-verdict decision, the width estimate and
own-data power with sensible numbers (the fixture never learned its rare tokens, so the
verdict is 'untestable' - every number is still computed)."""

from __future__ import annotations

import math

import pytest

from harness.claimset import CI_SEED, ci_prepared, load_claims
from harness.data.rarity import RaritySpec
from harness.verdicts import VERDICTS

pytestmark = pytest.mark.tiny


@pytest.fixture(scope="module")
def result():
    module = load_claims()["dual-regimes"]
    return module, module.compute(ci_prepared("tiny-gpt2"), RaritySpec(q=50.0, which="target"),
                                  CI_SEED, quick=True, power_reps=4)


def test_spec_and_decision(result):
    module, r = result
    spec = module.SPEC
    assert spec.direction == "exists" and spec.detect == "supported" and spec.number == 1
    assert spec.sesoi.value == pytest.approx(math.log(1.2))
    assert r.verdict == "untestable"  # rare-target loss ~15.4 nats > ln V = 10.8
    assert r.details["verdict_without_precondition"] in VERDICTS
    gates = r.details["decision"]["gates"]
    assert {"top_set_overlap", "top_rank_spearman", "loss_match_balance", "beyond_difficulty",
            "significant", "upper_bound_below_sesoi"} <= set(gates)
    # the fixture's rare targets are far harder than its common ones: loss matching fails
    assert gates["loss_match_balance"]["passed"] is False and gates["loss_match_balance"][
        "value"] > 0.25
    scan = r.details["scan"]
    assert 1 <= scan["width"] <= scan["max_width"] == 100 and scan["ranks"] == 200
    assert 0 < r.p_value <= 1 and r.ci_low <= r.effect <= r.ci_high


def test_own_data_power_on_the_real_matrix(result):
    _, r = result
    op = r.details["own_power"]
    assert op["n_reps"] == 4 and op["ks"] == [2, 3, 4]  # 30-50 of 6,400 neurons, at 512
    assert 0 <= op["power"] <= 1 and 0 <= op["fpr"] <= 1 and op["fpr_se"] >= 0
    rates = [op["curve"][k] for k in sorted(op["curve"], key=float)]
    assert len(rates) == 4 and all(0 <= x <= 1 for x in rates)
    assert sum(op["verdicts_null"].values()) == 4
    assert "shuffled within rows" in op["how"]
    assert set(op["by_k"]) == {"2", "3", "4"}
