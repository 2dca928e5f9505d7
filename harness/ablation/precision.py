"""Precision of the model's own (clean) forward under the closed-form neuron ablation.

Why: at GPT-2-XL scale on a GPU the clean forward, not the closed form, bounds the influence
rate; TF32 or bf16 matmuls make it several times faster but move the residual and the
activations the (float32/float64) closed form starts from. The ablation must stay exact to
TOLERANCE_NATS, so the mode is chosen by measuring, on the run's own first row batch, each
candidate's max |delta CE - delta CE from a float32 forward|, never assumed.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

import torch

from harness.errors import BadInputError

log = logging.getLogger(__name__)
CLEAN_PRECISIONS = ("fp32", "tf32", "bf16", "auto")
TOLERANCE_NATS = 1e-4
# fastest first: what 'auto' tries on a GPU (on CPU neither is faster, so fp32)
_GPU_CANDIDATES = ("bf16", "tf32")


def check(precision: str, device: torch.device | str) -> str:
    """The precision, validated for the device (tf32 exists on CUDA only)."""
    if precision not in CLEAN_PRECISIONS:
        raise BadInputError(f"clean precision {precision!r}; use one of {CLEAN_PRECISIONS}")
    if precision == "tf32" and torch.device(device).type != "cuda":
        raise BadInputError("clean precision 'tf32' needs a CUDA device; use fp32 or bf16")
    return precision


@contextlib.contextmanager
def clean_precision(precision: str, device: torch.device | str) -> Iterator[None]:
    """Context for the clean forward: fp32 as is, TF32 matmuls (CUDA), or bf16 autocast."""
    device = torch.device(device)
    if precision == "fp32":
        yield
    elif precision == "tf32":
        old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    elif precision == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        raise BadInputError(f"clean precision {precision!r}; use one of {CLEAN_PRECISIONS}")


def precision_errors(delta_of: Any, precisions: tuple[str, ...]) -> dict[str, float]:
    """{precision: max |delta_of(p) - delta_of('fp32')|} in nats; delta_of(p) -> Tensor."""
    ref = delta_of("fp32").double()
    return {p: float((delta_of(p).double() - ref).abs().max()) for p in precisions}


def choose(delta_of: Any, device: torch.device | str,
           tolerance: float = TOLERANCE_NATS) -> tuple[str, dict[str, float]]:
    """('auto' resolved, measured errors): the fastest candidate within `tolerance` on CUDA,
    fp32 on CPU (no faster mode there)."""
    if torch.device(device).type != "cuda":
        return "fp32", {}
    errors = precision_errors(delta_of, _GPU_CANDIDATES)
    for p in _GPU_CANDIDATES:
        if errors[p] <= tolerance:
            log.info("clean forward in %s: max delta CE error %.2e <= %.0e nats", p,
                     errors[p], tolerance)
            return p, errors
    log.info("clean forward in fp32: bf16/tf32 errors %s exceed %.0e nats", errors, tolerance)
    return "fp32", errors
