"""What every claim test does after computing its result: the settings it records, the
golden regression for the committed fixtures, and the verdict policy.

Verdict policy (the same for every claim):
- committed tiny fixtures: where `fixtures/golden/` holds the expected verdict and numbers for
  the setting (the CI settings always do: tests/test_goldens.py), the test asserts they
  reproduce (regression), whatever the verdict; `--update-golden` rewrites them. Other
  settings of the tiny fixtures follow the rule below;
- other models: 'supported' passes; 'not supported' fails with the numbers in the message;
  'untestable' (the model never learned its rare tokens) is recorded and reported as an
  expected failure (xfail) with the numbers - neither a pass nor a fail.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from harness.data.rarity import RaritySpec
from harness.data.tokenizer import fixtures_dir
from harness.stats.precondition import LearnedPrecondition
from harness.stats.result import TestResult

GOLDEN_RTOL = 1e-3
GOLDEN_ATOL = 1e-5


def settings_for(prep, rarity: RaritySpec, **extra) -> dict:
    info = prep.facade.info()
    return {"rarity": {"q": rarity.q, "which": rarity.which, "elbow": rarity.elbow},
            "eval": dict(prep.spec.__dict__), "n_pos": prep.n_pos,
            "frequency": prep.freq_note, "dtype": str(info.get("dtype")),
            "processing": info.get("processing"), "device": str(info.get("device")), **extra}


def golden_path(claim: str, model_name: str, seed: int, rarity: RaritySpec) -> Path:
    return (fixtures_dir() / "golden" / claim /
            f"{model_name}-seed{seed}-{rarity.which}-q{rarity.q:g}.json")


def _numbers(result: TestResult) -> dict[str, float]:
    return {k: getattr(result, k) for k in ("statistic", "p_value", "effect", "ci_low", "ci_high")}


def check_verdict(request, result: TestResult, *, claim: str, model_name: str, seed: int,
                  rarity: RaritySpec) -> None:
    """Apply the verdict policy above (call after record_claim)."""
    if model_name.startswith("tiny-"):
        path = golden_path(claim, model_name, seed, rarity)
        if request.config.getoption("--update-golden"):
            path.parent.mkdir(parents=True, exist_ok=True)
            numbers = {k: (None if _missing(v) else v) for k, v in _numbers(result).items()}
            path.write_text(json.dumps({"verdict": result.verdict, **numbers}, indent=2) + "\n")
            return
        if path.is_file():
            _assert_golden(result, json.loads(path.read_text()))
            return
    if result.verdict == "untestable":
        pytest.xfail(f"untestable on {model_name}: {result.details.get('message', result)}")
    assert result.supported, f"claim not supported on {model_name}: {result}\n" \
                             f"{result.details.get('message', '')}"


def _assert_golden(result: TestResult, golden: dict) -> None:
    """Verdict equal, numbers within GOLDEN_RTOL/ATOL (NaN only where the golden has none)."""
    assert result.verdict == golden["verdict"], (
        f"verdict changed: {result.verdict!r} != golden {golden['verdict']!r}\n{result}")
    for key, want in _numbers(result).items():
        ref = golden[key]
        if _missing(ref) or _missing(want):
            assert _missing(ref) and _missing(want), f"{key}: {want} vs golden {ref}"
            continue
        assert want == pytest.approx(ref, rel=GOLDEN_RTOL, abs=GOLDEN_ATOL), (
            f"{key} = {want} differs from golden {ref}\n{result}")


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def apply_precondition(result: TestResult, pre: LearnedPrecondition) -> TestResult:
    """An unlearned model makes any claim 'untestable'; its numbers stay in the result."""
    details = {**result.details, "precondition": pre.to_dict()}
    if pre.ok:
        return dataclasses.replace(result, details=details)
    details["message"] = (f"{pre.message}. Numbers shown for information only; without the "
                          f"precondition the verdict would be {result.verdict!r}"
                          + (f" ({result.details['message']})" if result.details.get("message") else ""))
    return dataclasses.replace(result, verdict="untestable", details=details)
