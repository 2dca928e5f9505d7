"""Claim 2 calibration: power on a planted module, false-positive rate on the null, and how
often equivalence succeeds under the null. Writes reports/calibration/claim2.md."""

from pathlib import Path

from harness.analyses.synthetic_clustering import calibration_report

REPORT = Path(__file__).resolve().parents[1] / "reports" / "calibration" / "claim2.md"


def test_claim2_calibration():
    text, raw = calibration_report(n_null=200, n_power=40)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(text)
    fpr, power = raw["rows"]
    assert fpr["n_reps"] == 200
    assert fpr["rate"] <= 0.05 + 2 * (0.05 * 0.95 / 200) ** 0.5  # 0.0808
    assert power["rate"] >= 0.8
    assert raw["null"]["clustered"] + raw["null"]["equivalent"] + raw["null"]["inconclusive"] == 200
