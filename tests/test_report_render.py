"""REPORT.md rendering: deterministic, complete, with the paper's numbers and BH q-values."""

from __future__ import annotations

import copy
import re

import pytest

from harness.errors import BadInputError
from harness.report.render import PAPER_NUMBERS, SUMMARY_FIGURE, assign_q_values, render_report
from harness.report.schema import SCHEMA_VERSION, claim_key, empty_results, validate
from harness.stats.result import TestResult


def _record(claim, model, seed, p, effect, verdict="supported", **details):
    res = TestResult(f"{claim} test", 2.0, p, effect, effect - 0.5, effect + 0.5, verdict,
                     effect_name="d", details=details)
    return {"nodeid": f"claims/test_{claim}.py::test[{model}]", "claim": claim, "model": model,
            "revision": None, "seed": seed, "settings": {"rarity": {"which": "target", "q": 15.0},
                                                         "dtype": "float32"},
            "result": res.to_dict(), "calibration": {"power": 0.85, "fpr": 0.05},
            "figures": {}, "wall_time_s": 1.5, "test_outcome": "passed"}


def make_results() -> dict:
    results = empty_results("run-x", {"models": ["tiny-gpt2", "tiny-pythia"], "seeds": ["0"],
                                      "rarity_which": ["target"], "rarity_q": [15.0],
                                      "quick": True, "device": "cpu"},
                            {"packages": {"torch": "2.13.0", "numpy": "2.4"},
                             "git": {"sha": "deadbeef", "dirty": True},
                             "device": {"resolved": "cpu", "name": None},
                             "python": "3.11.7", "platform": "Linux", "dtype_used": ["float32"],
                             "processing_used": ["raw"]})
    results["claims"] = [
        _record("dual-regimes", "tiny-pythia", 0, 0.04, 1.0, plateau_size=31,
                regime_split=[2.0, 11.5, 86.5]),
        _record("dual-regimes", "tiny-gpt2", 0, 0.01, 2.0),
        _record("no-clustering", "tiny-gpt2", 0, None, 0.1, "untestable",
                message="rare-target loss 12.3 nats is worse than uniform 10.8"),
        _record("no-routing", "tiny-gpt2", 0, 0.3, 0.0, "not supported", q_value=0.9),
    ]
    results["skipped"] = [{"nodeid": "claims/test_no_routing.py::test[gpt2-xl]",
                           "claim": "no-routing", "model": "gpt2-xl", "seed": 0,
                           "reason": "gpt2-xl weights not in the HF cache: set HF_HOME"}]
    return results


def test_render_is_deterministic_and_pure(tmp_path):
    results = make_results()
    before = copy.deepcopy(results)
    a = render_report(results, tmp_path / "a")
    b = render_report(results, tmp_path / "b")
    assert results == before
    assert a.read_text() == b.read_text()
    assert (tmp_path / "a" / SUMMARY_FIGURE).read_bytes() == \
        (tmp_path / "b" / SUMMARY_FIGURE).read_bytes()


def test_report_content(tmp_path):
    text = render_report(make_results(), tmp_path).read_text()
    headers = [h.strip() for h in text.split("## Summary")[1].split("\n")
               if h.startswith("| claim")][0].split("|")[1:-1]
    assert [h.strip() for h in headers] == ["claim", "model", "seed", "rarity", "variant",
                                            "verdict", "effect [CI]", "p", "q", "SESOI",
                                            "power (s.e.)", "MDE 80%", "FPR"]
    # claim order 1, 2, 3; models sorted within a claim
    summary = text.split("## Summary")[1]
    order = [m.group(1) for m in re.finditer(r"^\| (Claim \d: [^|]+?) +\| (\S+)", summary,
                                             re.M)]
    assert order == ["Claim 1: Dual regimes"] * 2 + ["Claim 2: No clustering",
                                                     "Claim 3: No routing"]
    assert re.search(r"\| tiny-gpt2 +\| 0 +\| target q15 +\| - +\| supported +\| 2 \[1\.5, 2\.5\] +"
                     r"\| 0\.01 +\| 0\.02 +\| - +\| 0\.85 +\| n/a +\| 0\.05 +\|", text)
    for paper in PAPER_NUMBERS["dual-regimes"]:
        assert paper.value in text
    assert "tiny-pythia, seed 0, target q15: 2 / 11.5 / 86.5" in text  # ours beside P3 split
    assert "tiny-pythia, seed 0, target q15: 31" in text  # ours beside plateau sizes
    assert "rare-target loss 12.3 nats is worse than uniform 10.8" in text
    assert "skipped: gpt2-xl, seed 0: gpt2-xl weights not in the HF cache: set HF_HOME" in text
    assert re.search(r"\| git sha +\| deadbeef \(uncommitted changes\) +\|", text)
    assert re.search(r"\| torch +\| 2\.13\.0 +\|", text)
    assert text.index("## Manifest") > text.index("## Claim 3: No routing")


def test_q_values_bh_within_claim_and_claim_own_q():
    records = make_results()["claims"]
    q = [assign_q_values(records)[id(r)] for r in records]
    # dual-regimes family p = (0.04, 0.01) -> BH q = (0.04, 0.02); untestable p=None -> None;
    # routing keeps the q-value its test computed over its own family of heads.
    assert q[0] == pytest.approx(0.04, rel=1e-12)
    assert q[1] == pytest.approx(0.02, rel=1e-12)
    assert q[2] is None
    assert q[3] == pytest.approx(0.9, rel=1e-12)


def test_validate_rejects_wrong_version_and_shape():
    results = make_results()
    validate(results)
    with pytest.raises(BadInputError, match="schema_version 99"):
        validate({**results, "schema_version": 99})
    with pytest.raises(BadInputError, match=r"claims\[0\] lacks result"):
        validate({**results, "claims": [{"claim": "x", "model": "m"}]})
    with pytest.raises(BadInputError, match="not a rarebench results file"):
        validate([1, 2])
    assert SCHEMA_VERSION == results["schema_version"]


@pytest.mark.parametrize("name, key", [("test_dual_regimes", "dual-regimes"),
                                       ("claim1", "dual-regimes"),
                                       ("No clustering", "no-clustering"),
                                       ("test_claim3_routing", "no-routing"),
                                       ("test_effective_dim", "effective-dim")])
def test_claim_key(name, key):
    assert claim_key(name) == key


def test_calibration_rows_become_power_and_fpr():
    from harness.report.plugin import _calibration_dict
    from harness.stats.calibration import calibration_row

    rows = [calibration_row("t", "null", 200, 9), calibration_row("t", "d=0.5", 200, 170,
                                                                   kind="power")]
    cal = _calibration_dict(rows)
    assert cal["fpr"] == pytest.approx(9 / 200) and cal["power"] == pytest.approx(170 / 200)
    assert [r["kind"] for r in cal["rows"]] == ["fpr", "power"]
    assert _calibration_dict({"power": 0.9}) == {"power": 0.9}


def test_variant_and_verdict_labels():
    """Records of one claim that differ only by ablation mode/scope/group are told apart, and
    the verdict is printed as one of the four words (version-1 files are upgraded on load)."""
    from harness.report.render import _variant, _verdict

    assert _variant({"mode": "bos", "scope": "all-positions", "layers": "all",
                     "rows_ablated": 64}) == "bos 64 rows"
    assert _variant({"mode": "zero", "scope": "single-query", "layers": "last 6",
                     "rows_ablated": 12}) == "zero single-query last 6 12 rows"
    assert _variant({"group": "plateau-boost"}) == "plateau-boost"
    assert _variant({"rarity": {"q": 50}}) == "-"
    for word in ("supported", "refuted", "inconclusive", "untestable"):
        assert _verdict({"verdict": word, "details": {"inconclusive": True}}) == word
    assert _verdict({"verdict": "supported"}) == "supported"


def test_report_opens_with_a_claims_by_models_glance_and_what_gave_no_verdict(tmp_path):
    """Issue 22.1: one screen first - the four verdicts per claim x model with effect [CI]
    and power - then everything without a verdict or not as expected, never '0 errors' when
    a claim test failed."""
    results = make_results()
    failed = results["claims"][1]
    failed["test_outcome"] = "failed"
    failed["result"]["details"]["golden"] = {"matches": False, "diff": ["effect 2 vs 1.9"]}
    results["errors"] = [{"nodeid": "claims/test_no_clustering.py::test[tiny-pythia]",
                          "claim": "no-clustering", "model": "tiny-pythia", "seed": 0,
                          "reason": "RuntimeError: boom", "when": "call"}]
    text = render_report(results, tmp_path).read_text()
    glance = text.split("## At a glance", 1)[1].split("## Run settings", 1)[0]
    assert text.index("## At a glance") < text.index("## Run settings") < text.index("## Summary")
    assert ("4 claim results (1 inconclusive, 2 supported, 1 untestable); 1 skipped, 1 errors, "
            "1 failed claim tests, 1 golden mismatches.") in glance
    header = next(line for line in glance.splitlines() if line.startswith("| claim"))
    assert re.fullmatch(r"\| claim +\| tiny-gpt2 +\| tiny-pythia +\|", header)
    row = next(line for line in glance.splitlines() if line.startswith("| Claim 1"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "**supported** 2 [1.5, 2.5], power 0.85 (target q15)"
    assert cells[2] == "**supported** 1 [0.5, 1.5], power 0.85 (target q15)"
    routing = next(line for line in glance.splitlines() if line.startswith("| Claim 3"))
    assert routing.rstrip().endswith("| -           |") or routing.split("|")[-2].strip() == "-"
    for needle in ("- error: tiny-pythia no-clustering: RuntimeError: boom",
                   "- claim test failed: tiny-gpt2, seed 0, target q15 dual-regimes",
                   "- golden mismatch: tiny-gpt2, seed 0, target q15 dual-regimes: effect 2 vs 1.9",
                   "- skipped (1: gpt2-xl no-routing): gpt2-xl weights not in the HF cache"):
        assert needle in glance, needle


def test_papers_vs_this_run_filled_from_nested_details(tmp_path):
    """Issue 22.2: claim 2's Q-vs-random test and claim 3's head statistics are filled."""
    results = make_results()
    clus = results["claims"][2]["result"]["details"]
    clus["legacy"] = [{"fold": "A->B", "comparisons": [
        {"metric": "Q", "null": "random", "p": 0.143},
        {"metric": "Q_signed", "null": "random", "p": 0.5}]}]
    rout = results["claims"][3]["result"]["details"]
    rout.update(per_head=[{}] * 18, significant_heads=[], n_heads_equivalent=9,
                loss_effect={"spearman_rare_common": -0.0774})
    text = render_report(results, tmp_path).read_text()
    assert re.search(r"\| specialist vs random Q .*\| tiny-gpt2, seed 0, target q15: "
                     r"p = 0\.143 \(A->B\) +\|", text)
    assert "0 of 18 heads significant (BH q 0.05), 9 equivalent within +-SESOI" in text
    assert re.search(r"per-head ablation effect on the loss .*: -0\.0774 +\|", text)
