"""The committed tiny fixtures' expected claim results exist for every CI case that yields a
result, carry tolerances derived from measured noise (harness.goldens), and say what made
them. A case with no rare type under the default strict rule (every type at the q-quantile
is tied at the minimum count) must have no golden: it skips with that reason.
Settings: seed 0, target rarity, q 15 and 50, claim 2 group plateau-boost, claim 3 modes
bos/zero/mean (harness.claimset.ci_rarities)."""

import json

import pytest

from harness import goldens
from harness.claimkit import golden_path
from harness.data.frequency import FrequencyTable
from harness.data.rarity import RaritySpec, rare_vocab
from harness.data.tokenizer import fixtures_dir
from harness.stats.result import VERDICTS

CLAIMS = ["dual-regimes", "no-clustering/plateau-boost", "no-routing/bos", "no-routing/zero",
          "no-routing/mean", "coordination", "heavy-tails", "necessity"]


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-pythia"])
@pytest.mark.parametrize("claim", CLAIMS)
@pytest.mark.parametrize("q", [15.0, 50.0])
def test_golden_present_and_well_formed(model, claim, q):
    rarity = RaritySpec(q=q, which="target")
    path = golden_path(claim, model, 0, rarity)
    counts = FrequencyTable.load(fixtures_dir() / "models" / model / "train_counts")
    if not rare_vocab(counts, rarity).any():
        assert not path.exists(), f"{path} pins a case that has no rare type and must skip"
        return
    assert path.is_file(), f"missing {path}: run `python -m harness.goldens`"
    golden = json.loads(path.read_text())
    assert golden["schema"] == goldens.SCHEMA
    assert golden["verdict"] in VERDICTS
    assert set(goldens.MAIN) <= set(golden["numbers"])
    assert len(golden["numbers"]) > len(goldens.MAIN), "no decision detail is pinned"
    for name, value in golden["numbers"].items():
        tol, spread = golden["tolerance"][name], golden["spread"][name]
        if value is None:
            assert tol is None
            continue
        assert tol >= goldens.ABS_FLOOR + goldens.REL_FLOOR * abs(value) - 1e-15
        assert tol >= goldens.SAFETY * spread - 1e-15
    variants = tuple(golden["variant_verdicts"])
    assert set(goldens.VARIANTS) <= set(variants)  # at least the default noise variants
    assert golden["rule"] == goldens.rule(variants)
    env = golden["environment"]
    assert env["kernel"] == goldens.REFERENCE_KERNEL and env["packages"].get("torch")
    if golden["numbers"]["p_value"] is not None:
        assert 0.0 < golden["numbers"]["p_value"] <= 1.0
    if golden["numbers"]["ci_low"] is not None:
        assert golden["numbers"]["ci_low"] <= golden["numbers"]["ci_high"]


def test_mismatch_reports_each_number_beyond_its_tolerance():
    from harness.stats.result import TestResult

    golden = {"schema": goldens.SCHEMA, "verdict": "untestable",
              "numbers": {"statistic": 1.0, "p_value": 0.5, "effect": 1.0, "ci_low": None,
                          "ci_high": 2.0, "a.b": 3.0},
              "tolerance": {"statistic": 1e-3, "p_value": 1e-3, "effect": 1e-3,
                            "ci_low": None, "ci_high": 1e-3, "a.b": 0.1}}
    r = TestResult("x", 1.0005, 0.5, 1.0, float("nan"), 2.0, "untestable",
                   details={"a": {"b": 3.05}})
    assert goldens.mismatches(r, golden, ("a.b",)) == []
    r2 = TestResult("x", 1.01, 0.5, 1.0, 0.0, 2.0, "supported", details={"a": {"b": 3.2}})
    diffs = goldens.mismatches(r2, golden, ("a.b",))
    assert len(diffs) == 4 and diffs[0].startswith("verdict")
    assert any(d.startswith("statistic") for d in diffs)
    assert any(d.startswith("ci_low") for d in diffs) and any(d.startswith("a.b") for d in diffs)
