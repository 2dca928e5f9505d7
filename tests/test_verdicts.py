"""The four-verdict rule (harness.verdicts), own-data power (harness.stats.own_power), and the
report's reading of version-1 results."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from harness.stats.multiple import bh_fdr
from harness.stats.own_power import mde_from_curve, own_data_power
from harness.verdicts import (Gate, Sesoi, decide_absent, decide_exists, from_v1,
                              pytest_outcome)

ROOT = Path(__file__).resolve().parents[1]


def test_exists_rule():
    ok = decide_exists(p_value=0.01, alpha=0.05, upper=0.9, sesoi=0.2)
    assert ok.verdict == "supported"
    assert decide_exists(p_value=0.4, alpha=0.05, upper=0.1, sesoi=0.2).verdict == "refuted"
    inc = decide_exists(p_value=0.4, alpha=0.05, upper=0.5, sesoi=0.2)
    assert inc.verdict == "inconclusive" and "does not exclude the SESOI" in inc.reason
    ctrl = Gate("beyond_difficulty", False, reason="explained by difficulty")
    assert decide_exists(p_value=0.01, alpha=0.05, upper=0.9, sesoi=0.2,
                         controls=(ctrl,)).verdict == "inconclusive"
    bad = Gate("reliable", False, 0.1, 0.5, "unreliable top set")
    d = decide_exists(p_value=0.001, alpha=0.05, upper=0.1, sesoi=0.2, validity=(bad,))
    assert d.verdict == "inconclusive" and d.reason == "unreliable top set"
    assert d.to_dict()["conditions"] == {"reliable": False, "significant": True,
                                         "upper_bound_below_sesoi": True}


def test_absent_rule():
    kw = dict(sesoi=0.2, family="BH over 24 heads")
    assert decide_absent(equivalent=True, significant=False, estimate=0.05, **kw).verdict \
        == "supported"
    assert decide_absent(equivalent=False, significant=True, estimate=0.5, **kw).verdict \
        == "refuted"
    assert decide_absent(equivalent=False, significant=True, estimate=0.1, **kw).verdict \
        == "inconclusive"
    assert decide_absent(equivalent=False, significant=False, estimate=0.5, **kw).verdict \
        == "inconclusive"
    gate = Gate("balanced", False, reason="matching failed")
    assert decide_absent(equivalent=True, significant=False, estimate=0.0, validity=(gate,),
                         **kw).verdict == "inconclusive"


def test_sesoi_must_be_positive():
    from harness.errors import BadInputError

    with pytest.raises(BadInputError):
        Sesoi(0.0, "x", "y")


@pytest.mark.parametrize("verdict,outcome", [("supported", "pass"), ("refuted", "fail"),
                                             ("inconclusive", "xfail"), ("untestable", "xfail")])
def test_pytest_outcome(verdict, outcome):
    assert pytest_outcome(verdict) == outcome


def test_version_1_words():
    assert from_v1("not supported", {"inconclusive": True}) == "inconclusive"
    assert from_v1("not supported", {"clustered": True}) == "refuted"
    assert from_v1("not supported", {"routing_heads": [[1, 2]]}) == "refuted"
    assert from_v1("not supported", {}) == "inconclusive"
    assert from_v1("supported", {}) == "supported"


def _toy(n=40, sd=1.0):
    """A one-sample mean test as a claim that an effect exists: supported iff one-sided
    t-test p < 0.05; its power at a planted mean shift is known analytically."""
    base = np.random.default_rng(0).normal(0, sd, n)

    def decide(x):
        p = stats.ttest_1samp(x, 0.0, alternative="greater").pvalue
        return "supported" if p < 0.05 else "inconclusive"

    def plant(rng, effect):
        return rng.choice(base - base.mean(), n) + effect

    def null(rng):
        return rng.choice(base - base.mean(), n) * rng.choice([-1, 1], n)
    return decide, plant, null, base.std()


def test_own_data_power_matches_analytic_power():
    decide, plant, null, sd = _toy()
    op = own_data_power(decide, plant, null, sesoi=0.4, detect="supported", reps=400, seed=1)
    # resampling the run's own data: its own spread sets the power
    analytic = stats.nct.sf(stats.t.ppf(0.95, 39), 39, 0.4 / sd * math.sqrt(40))
    assert abs(op.power - analytic) < 3 * op.power_se + 0.02
    assert op.fpr <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 400)
    assert op.power_se == pytest.approx(math.sqrt(op.power * (1 - op.power) / 400))
    assert 0.2 <= op.mde80 <= 0.4  # power 0.8 is reached between 0.5 and 1 SESOI
    assert set(op.verdicts_at_sesoi) <= {"supported", "inconclusive"}
    assert op.to_dict()["n_reps"] == 400


def test_mde_interpolates_and_says_when_out_of_reach():
    assert mde_from_curve({0.5: 0.4, 1.0: 0.6, 2.0: 1.0}) == (pytest.approx(1.5), None)
    assert mde_from_curve({0.5: 0.1, 1.0: 0.2}) == (None, 1.0)


def test_bh_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = np.random.default_rng(3).uniform(0, 0.2, 60) ** 2
    rej, q = bh_fdr(p, 0.05)
    rej_sm, q_sm, _, _ = multipletests(p, 0.05, method="fdr_bh")
    np.testing.assert_allclose(q, q_sm, rtol=1e-12)
    assert (rej == rej_sm).all()


def test_version_1_results_still_render(tmp_path):
    """`rarebench report` keeps reading schema version 1 files (three verdicts)."""
    from harness.report.render import render_report
    from harness.report.schema import SCHEMA_VERSION, load_results

    src = ROOT / "reports" / "example"
    shutil.copytree(src, tmp_path / "example")
    data = load_results(tmp_path / "example" / "results.json")
    assert data["schema_version"] == SCHEMA_VERSION and data["upgraded_from"] == 1
    verdicts = {r["result"]["verdict"] for r in data["claims"]}
    assert verdicts <= {"supported", "refuted", "inconclusive", "untestable"}
    assert any(r["result"]["details"].get("verdict_v1") == "not supported"
               for r in data["claims"]) or "not supported" not in str(data)
    report = render_report(data, tmp_path / "out", source_dir=tmp_path / "example")
    text = report.read_text()
    assert "not supported" not in text.split("## Claim")[0]
    assert "power (s.e.)" in text
