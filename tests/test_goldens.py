"""The committed tiny fixtures' expected claim results exist for every CI setting, so the
claim tests in CI are regression tests (a deleted golden would otherwise silently turn them
into plain verdict checks). Settings: conftest defaults (seed 0, target rarity, q 15 and 50,
claim 2 group plateau-boost, claim 3 modes bos/zero/mean)."""

import json

import pytest

from harness.claimkit import golden_path
from harness.data.rarity import RaritySpec
from harness.stats.result import VERDICTS

CLAIMS = ["dual-regimes", "no-clustering/plateau-boost", "no-routing/bos", "no-routing/zero",
          "no-routing/mean"]


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-pythia"])
@pytest.mark.parametrize("claim", CLAIMS)
@pytest.mark.parametrize("q", [15.0, 50.0])
def test_golden_present_and_well_formed(model, claim, q):
    path = golden_path(claim, model, 0, RaritySpec(q=q, which="target"))
    assert path.is_file(), f"missing {path}: run `pytest claims -m tiny --update-golden`"
    golden = json.loads(path.read_text())
    assert golden["verdict"] in VERDICTS
    assert set(golden) == {"verdict", "statistic", "p_value", "effect", "ci_low", "ci_high"}
    if golden["p_value"] is not None:
        assert 0.0 < golden["p_value"] <= 1.0
    if golden["ci_low"] is not None:
        assert golden["ci_low"] <= golden["ci_high"]
