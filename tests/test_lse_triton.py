"""The Triton closed-form kernel (harness/ablation/lse_triton.py) on CPU, under Triton's
interpreter: the same program the GPU compiles, checked against float64 at small size.

Triton reads TRITON_INTERPRET when first imported, so the cases (tests/lse_triton_cases.py)
run in one child process. Speed is not tested here: `rarebench bench` measures it on a GPU
(reports/BENCHMARKS.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.ablation import lse_triton, neuron
from harness.ablation.neuron import resolve_method
from harness.errors import BadInputError

pytestmark = pytest.mark.tiny
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cases() -> dict:
    pytest.importorskip("triton", reason="Triton is not installed: it is the optional `gpu` extra "
                        "(pip install -c constraints.txt -e '.[gpu]')")
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAREBENCH_LSE_TILE", None)
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "lse_triton_cases.py")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ok(result: dict) -> dict:
    assert "error" not in result, result["error"]
    return result


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("tile", ["1x16x32x4", "4x32x64x4", "8x16x16x8", "4x16x32x4+nobound",
                                  "2x16x32x4+acc3d", "4x16x32x4+nobound+acc3d+flush3"])
def test_triton_closed_form_matches_float64(cases, kind, tile):
    """Tile shapes and code variants, ragged sizes, both norms: Deltas within 1e-5 nats of
    float64."""
    for name in ("closed_form_cases",):
        assert name not in cases, cases.get(name)
    res = _ok(cases[f"closed_form-{kind}-{tile}"])
    assert res["ref_absmax"] > 1.0  # large Deltas: agreement is not trivial
    assert res["err"] < 1e-5


def test_kernel_output_is_a_logsumexp(cases):
    """The raw kernel vs torch.logsumexp under a bound that is not the max."""
    assert "raw_kernel_case" not in cases, cases.get("raw_kernel_case")
    assert _ok(cases["raw"])["err"] < 2e-6


def test_underflowing_bound_falls_back_to_exact(cases):
    """Pairs whose exps all underflow come back non-finite and are recomputed exactly."""
    assert "underflow_case" not in cases, cases.get("underflow_case")
    res = _ok(cases["underflow"])
    assert res["non_finite"] == 3
    assert res["err"] < 1e-5


def test_overflowing_sum_falls_back_to_exact(cases):
    """The default (unbounded) variant: pairs whose exp overflows are recomputed exactly."""
    assert "overflow_case" not in cases, cases.get("overflow_case")
    res = _ok(cases["overflow"])
    assert res["default_bound"] is False
    assert res["non_finite"] >= 1
    assert res["err"] < 1e-5


def test_out_of_memory_halves_positions(cases):
    assert "oom_case" not in cases, cases.get("oom_case")
    res = _ok(cases["oom"])
    assert res["sizes"][:3] == [7, 4, 2]  # 8 asked (7 exist), then halved until it fits
    assert max(res["sizes"][2:]) <= 2
    assert res["err"] < 1e-5


def test_kernel_config_parsing():
    cfg = lse_triton.KernelConfig.parse("8,32,64,4,nobound,ftz")
    assert cfg == (8, 32, 64, 4, False, True, False, lse_triton.FLUSH)
    assert cfg.label() == "8x32x64x4+nobound+ftz"
    cfg = lse_triton.KernelConfig.parse("8,32,64,4,acc3d,flush4")
    assert cfg.flush == 4 and cfg.label() == "8x32x64x4+acc3d+flush4"
    assert lse_triton.KernelConfig.parse("8,32,64,4,acc3d").label() == "8x32x64x4+acc3d"
    assert lse_triton.KernelConfig.parse(lse_triton.DEFAULT_CONFIG.label().replace("x", ",")
                                         .split("+")[0])[:4] == lse_triton.DEFAULT_CONFIG[:4]
    for bad in ("8,32,64", "8,32,64,4,fast", "a,b,c,d", "8,32,64,4,flush0",
                "8,32,64,4,flush2,flush4"):
        with pytest.raises(ValueError):
            lse_triton.KernelConfig.parse(bad)


def test_method_resolution():
    assert resolve_method("auto", "cpu", torch.float32) in ("compiled", "triton")
    assert resolve_method("auto", "cpu", torch.float64) == "compiled"
    with pytest.raises(BadInputError, match="method="):
        resolve_method("fast", "cpu", torch.float32)
    if not lse_triton.available("cpu"):
        with pytest.raises(BadInputError, match="CUDA"):
            resolve_method("triton", "cpu", torch.float32)
    assert neuron.METHODS[0] == "auto"
