"""Claim 2 calibration is data: reports/calibration/claim2.json (written by
`python -m harness.analyses.synthetic_clustering`) is regenerated here at reduced replicate
counts, with other seeds and the same settings, and every row must agree with the committed
one within Monte-Carlo error (harness.stats.calibration.agrees) - so a change to the test
that moves its power or false-positive rate fails CI until the file is regenerated."""

import json
from pathlib import Path

from harness.analyses.synthetic_clustering import (CODE_FILES, FULL, REDUCED_REPS, SHAPE,
                                                   calibration_report)
from harness.stats.calibration import agrees

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "reports" / "calibration" / "claim2.json"


def test_committed_calibration_meets_its_targets():
    record = json.loads(COMMITTED.read_text())
    assert record["claim"] == "claim2" and record["code_files"] == sorted(CODE_FILES)
    assert record["settings"]["shape"] == SHAPE and record["settings"]["sizes"] == FULL
    rows = {r["name"]: r for r in record["rows"]}
    assert all(r["passed"] for r in rows.values()), [n for n, r in rows.items() if not r["passed"]]
    fpr = rows["refuted on the selection-artefact null"]
    assert fpr["n_reps"] >= 200 and fpr["rate"] <= 0.05 + 2 * (0.05 * 0.95 / fpr["n_reps"]) ** 0.5
    assert rows["refuted on a module at 3 x SESOI"]["rate"] >= 0.8
    md = (COMMITTED.parent / "claim2.md").read_text()
    assert all(name in md for name in rows)


def test_reduced_calibration_agrees_with_the_committed_file():
    committed = {r["name"]: r for r in json.loads(COMMITTED.read_text())["rows"]}
    _, fresh = calibration_report(REDUCED_REPS, seed0=7_000_000)
    assert fresh["settings"]["sizes"] == FULL
    for row in fresh["rows"]:
        assert agrees(committed[row["name"]], row), (row["name"], committed[row["name"]], row)
