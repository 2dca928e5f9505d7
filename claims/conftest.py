"""Fixtures shared by the three claim tests.

Acceptance tier: one module-scoped `prepared` per (model, seed) - the model, its evaluation rows
and the all-neuron influence matrix - computed once and shared by every claim and rarity
setting (read-only). A model whose weights are absent skips with the exact fix.

Verdict policy (the same for every claim):
- committed tiny fixtures: the expected verdict and numbers live in `fixtures/golden/`; the test
  asserts they reproduce (regression), whatever the verdict (`--update-golden` rewrites them);
- other models: 'supported' passes; 'not supported' fails with the numbers in the message;
  'untestable' (the model never learned its rare tokens) is recorded and reported as an
  expected failure (xfail) with the numbers - neither a pass nor a fail.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness import pipeline
from harness.data.rarity import RaritySpec
from harness.data.tokenizer import fixtures_dir
from harness.stats.result import TestResult

GOLDEN_RTOL = 1e-3
GOLDEN_ATOL = 1e-5


def pytest_addoption(parser):
    parser.getgroup("rarebench").addoption(
        "--update-golden", action="store_true",
        help="rewrite fixtures/golden/ from this run (tiny fixtures only)")


def pytest_generate_tests(metafunc):
    if "rarity" in metafunc.fixturenames:
        which = [w.strip() for w in metafunc.config.getoption("--rarity-which").split(",") if w.strip()]
        qs = [float(q) for q in str(metafunc.config.getoption("--rarity-q")).split(",") if q.strip()]
        specs = [RaritySpec(q=q, which=w) for w in which for q in qs]
        metafunc.parametrize("rarity", specs, ids=[f"{s.which}-q{s.q:g}" for s in specs],
                             scope="module")


@pytest.fixture(scope="module")
def prepared(model_name, seed, device, cache_dir, request):
    """The model on its evaluation rows with the influence matrix (skips if weights absent)."""
    from harness.models.registry import availability, resolve

    spec = resolve(model_name)
    ok, reason = availability(spec)
    if not ok:
        pytest.skip(f"{model_name}: weights not available - {reason}")
    quick = request.config.getoption("--quick")
    eval_spec = pipeline.default_spec_for(model_name, quick=quick)
    eval_spec = pipeline.EvalSpec(**{**eval_spec.__dict__, "seed": eval_spec.seed + seed})
    return pipeline.prepare(model_name, eval_spec, device=device, store_root=cache_dir)


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
            path.write_text(json.dumps({"verdict": result.verdict, **_numbers(result)},
                                       indent=2) + "\n")
            return
        if not path.is_file():
            pytest.fail(f"no golden file {path}; run `pytest claims -m tiny --update-golden` "
                        f"and commit it. Result: {result}")
        golden = json.loads(path.read_text())
        assert result.verdict == golden["verdict"], (
            f"verdict changed: {result.verdict!r} != golden {golden['verdict']!r}\n{result}")
        for key, want in _numbers(result).items():
            ref = golden[key]
            if ref is None or (isinstance(want, float) and math.isnan(want)):
                assert ref is None and (want is None or math.isnan(want)), (key, want, ref)
                continue
            assert want == pytest.approx(ref, rel=GOLDEN_RTOL, abs=GOLDEN_ATOL), (
                f"{key} = {want} differs from golden {ref}\n{result}")
        return
    if result.verdict == "untestable":
        pytest.xfail(f"untestable on {model_name}: {result.details.get('message', result)}")
    assert result.supported, f"claim not supported on {model_name}: {result}\n" \
                             f"{result.details.get('message', '')}"
