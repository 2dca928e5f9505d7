"""Goldens catch regressions: each deliberate mutation of the analysis breaks a golden.

Each test first checks that the unmutated case reproduces its committed golden (otherwise a
mismatch would prove nothing), then applies one mutation the way a careless edit would and
requires at least one pinned number (or the verdict) to leave its tolerance:
- rare/common masks swapped;
- the loss-matched control replaced by unmatched common positions;
- the permutation unit changed from rows (labels shuffled within rows) to positions;
- the head-ablation hook broken (the ablated head left untouched).
Integration tier: the committed tiny-gpt2 fixture at the CI settings (target rarity, q = 50).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from harness import goldens
from harness.claimkit import golden_path
from harness.claimset import CI_SEED, ci_prepared, load_claims
from harness.data.rarity import RaritySpec

pytestmark = pytest.mark.tiny
MODEL = "tiny-gpt2"
RARITY = RaritySpec(q=50.0, which="target")


@pytest.fixture(scope="module")
def prep():
    return ci_prepared(MODEL)


def fresh(prep):
    """The same data with nothing memoised (head effects, activations), so a mutation of
    the engine is really run."""
    keep = {"mean_act_all": prep.extras["mean_act_all"]}
    return dataclasses.replace(prep, extras=keep)


def case(claim_key: str, prep):
    """(result, golden, pinned) of one CI case, e.g. 'no-routing/bos'."""
    base = claim_key.split("/")[0]
    module = load_claims()[base]
    compute = dict(module.ci_cases(prep, RARITY, CI_SEED))[claim_key]
    golden = json.loads(golden_path(claim_key, MODEL, CI_SEED, RARITY).read_text())
    return compute(prep), golden, module.PINNED


def assert_breaks(claim_key: str, prep, monkeypatch, target: str, replacement) -> list[str]:
    result, golden, pinned = case(claim_key, prep)
    assert goldens.mismatches(result, golden, pinned) == [], "unmutated case must match"
    monkeypatch.setattr(target, replacement)
    mutated, _, _ = case(claim_key, fresh(prep))
    diffs = goldens.mismatches(mutated, golden, pinned)
    assert diffs, f"mutation {target} left every pinned number of {claim_key} in tolerance"
    return diffs


def test_swapped_masks_break_claim_1(prep, monkeypatch):
    from harness.pipeline import Prepared

    original = Prepared.masks

    def swapped(self, rarity):
        rare, common = original(self, rarity)
        return common, rare

    diffs = assert_breaks("dual-regimes", prep, monkeypatch,
                          "harness.pipeline.Prepared.masks", swapped)
    assert any(d.startswith("statistic") or d.startswith("precondition") for d in diffs)


def test_dropped_loss_matching_breaks_claim_1(prep, monkeypatch):
    def unmatched(loss, rare_idx, common_idx, rng, n_bins=10):
        return rng.choice(common_idx, rare_idx.size, replace=False)

    diffs = assert_breaks("dual-regimes", prep, monkeypatch,
                          "harness.analyses.regimes.loss_matched", unmatched)
    assert any(d.startswith("loss_matched") for d in diffs)


def test_permutation_over_positions_breaks_claim_1(prep, monkeypatch):
    from harness.stats.permutation import stratified_permutations

    def positions(labels, strata, n, rng):
        return stratified_permutations(labels, np.zeros_like(strata), n, rng)

    diffs = assert_breaks("dual-regimes", prep, monkeypatch,
                          "harness.analyses.regimes.stratified_permutations", positions)
    assert any(d.startswith("p_value") or d.startswith("permutation") for d in diffs)


def test_broken_head_ablation_hook_breaks_claim_3(prep, monkeypatch):
    def untouched(mode, heads, queries, value):
        return lambda x, hook: x

    assert_breaks("no-routing/bos", prep, monkeypatch,
                  "harness.ablation.heads._ablation_hook", untouched)
