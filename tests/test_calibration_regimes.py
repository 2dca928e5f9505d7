"""Claim-1 test calibration (CI-sized): false-positive rate on a null, on a difficulty-only
plateau, and power on a planted rarity plateau. Full table: reports/calibration/claim1.md."""

from harness.analyses.synthetic_regimes import POWER_EFFECT, POWER_K, calibrate


def test_claim1_calibration():
    rows = {(r.name, r.setting): r for r in calibrate(n_null=200, n_power=40, n_difficulty=40)}
    null = rows[("supported", "null (k=0)")]
    perm = rows[("permutation p<alpha", "null (k=0)")]
    diff = rows[("supported", f"difficulty k={POWER_K} effect={POWER_EFFECT}")]
    power = rows[("supported", f"planted k={POWER_K} effect={POWER_EFFECT}")]
    assert null.n_reps == 200 and null.rate <= 0.05 + 2 * (0.05 * 0.95 / 200) ** 0.5
    assert perm.passed, perm.markdown()  # the permutation test alone is calibrated
    assert diff.rate <= 0.05 + 2 * (0.05 * 0.95 / 40) ** 0.5, diff.markdown()
    assert power.rate >= 0.8, power.markdown()
