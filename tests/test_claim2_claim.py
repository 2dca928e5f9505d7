"""claims/test_no_clustering.py as a claim object (SPEC, PINNED, compute) and on the committed
tiny fixture: every number of the new decision is computed although the verdict is
'untestable' (the fixture never learned its rare tokens)."""

import numpy as np
import pytest

from harness import goldens
from harness.analyses.clustering import DEFAULT_SESOI
from harness.claimset import load_claims
from harness.data.rarity import RaritySpec


@pytest.fixture(scope="module")
def claim():
    return load_claims()["no-clustering"]


def test_spec_states_the_rule(claim):
    spec = claim.SPEC
    assert (spec.key, spec.number, spec.direction, spec.detect) == ("no-clustering", 2,
                                                                   "absent", "refuted")
    assert spec.sesoi.value == DEFAULT_SESOI == 0.1 and "Cohen" in spec.sesoi.why
    assert not hasattr(claim, "CALIBRATION")
    doc = claim.__doc__
    for word in ("supported", "refuted", "inconclusive", "untestable", "Cross-fitting",
                 "selection", "matched", "SESOI", "own_power", "Clustering methods", "BH",
                 "silhouette", "CI_GRID"):
        assert word in doc, word


@pytest.mark.tiny
def test_tiny_fixture_computes_every_decision_number(claim):
    from harness.claimset import ci_prepared

    prep = ci_prepared("tiny-gpt2")
    result, cf = claim.compute(prep, RaritySpec(q=50.0, which="target"), 0, quick=True,
                               power_reps=2)
    assert result.verdict == "untestable"
    d = result.details
    assert "would be" in d["message"] and d["decision"]["direction"] == "absent"
    assert d["own_power"]["n_reps"] == 2 and d["own_power"]["detect"] == "refuted"
    assert set(d["decision"]["gates"]) >= {"matched_balance", "test_rows", "equivalent",
                                           "significant", "estimate_exceeds_sesoi"}
    halves = d["crossfit"]["halves"]
    assert sorted(halves["A"] + halves["B"]) == sorted(np.unique(prep.influence.row).tolist())
    assert [f["k"] for f in d["crossfit"]["folds"]] == [f.group.size for f in cf.folds]
    numbers = goldens.pinned_numbers(result, claim.PINNED)
    missing = [p for p, v in numbers.items() if v is None]
    assert not missing, missing
    assert d["family"][0]["null"] == "selection" and len(d["family"]) == 2
    assert len(d["legacy"]) == 2 and "Q_signed" in d["legacy"][0]
    # the clustering-method family: contrast + 5 methods x 2 resolutions (CI grid), BH
    from harness.analyses.cluster_methods import CI_GRID, METHODS

    assert [r["method"] for r in d["methods"]] == ["contrast"] + [
        m for m in METHODS for _ in CI_GRID[m]]
    assert set(d["method_verdicts"]) == {"contrast", *METHODS}
    assert d["contrast_decision"]["verdict"] == cf.decision.verdict
    for r in d["methods"]:
        assert r["q_bh"] >= r["p"] and r["ci_low"] <= r["estimate"] <= r["ci_high"], r
    assert d["decision"]["verdict"] == "untestable" and "BH" in d["correction"]
    assert len(d["methods_table"]["rows"]) == 1 + len(METHODS)
