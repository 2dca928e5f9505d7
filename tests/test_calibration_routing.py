"""Calibration of the claim-3 routing test: false-positive rate on nulls, power on a planted
head, equivalence success under the null. The same function writes
reports/calibration/claim3.md, so the committed table and this test cannot drift apart."""

from __future__ import annotations

import pytest

from harness.analyses.synthetic_routing import calibrate_routing, write_calibration_report


@pytest.fixture(scope="module")
def calibration():
    return calibrate_routing()   # 200 nulls, 100 planted (s=0.2), 2 x 50 weaker, 50 raw-mode


def test_false_positive_rates_stay_within_alpha_plus_two_mc_se(calibration):
    fpr = [r for r in calibration.rows if r.kind == "fpr"]
    assert len(fpr) == 2 and all(r.n_reps >= 200 for r in fpr)
    for r in fpr:
        assert r.rate <= 0.05 + 2 * (0.05 * 0.95 / r.n_reps) ** 0.5, r.markdown()


def test_planted_routing_head_is_found_with_power_at_least_0_8(calibration):
    (power,) = [r for r in calibration.rows if r.kind == "power"]
    assert power.rate >= 0.8, power.markdown()
    assert calibration.planted_rel_mean == pytest.approx(0.2, abs=0.03)
    assert calibration.other_heads_flagged_rate <= 0.2
    weak = calibration.power_curve
    assert weak[0.1][0] < weak[0.15][0] < power.rate     # power grows with the planted strength


def test_equivalence_succeeds_under_the_null_and_raw_mode_is_fooled_by_shared_gain(calibration):
    assert calibration.equivalence_rate >= 0.85
    assert calibration.raw_gain_routing_rate >= 0.9


def test_report_is_written_from_the_calibration(calibration, tmp_path):
    out = tmp_path / "claim3.md"
    write_calibration_report(out, calibration)
    text = out.read_text()
    assert "| claim3 routing | planted head s=0.2" in text
    assert f"{calibration.equivalence_rate:.3f}" in text
    assert text.count("| yes |") == 3
