"""Chunk sizes from free memory, and out-of-memory back-off.

Why: the closed-form ablation materialises [positions, neurons, vocab] blocks whose best size
depends on the device; a fixed size either wastes a large GPU or dies on a small one. We pick
a size from the memory actually free and halve it whenever an allocation fails.
"""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

import torch

log = logging.getLogger(__name__)
T = TypeVar("T")

# On CPU bigger blocks stop paying off long before memory runs out (cache, 2 cores in CI).
CPU_BLOCK_CAP_BYTES = 512 * 2**20


def is_oom(exc: BaseException) -> bool:
    """True for the errors an allocation failure raises on CUDA or on the host."""
    if isinstance(exc, MemoryError):
        return True
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_bytes(device: torch.device | str) -> int:
    """Memory a new block may use on `device`: half of what is free on CUDA, a quarter of the
    available host memory on CPU, capped at CPU_BLOCK_CAP_BYTES."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    try:
        import psutil

        available = psutil.virtual_memory().available
    except ImportError:  # psutil is optional: assume a modest machine
        available = 4 * 2**30
    return int(min(available * 0.25, CPU_BLOCK_CAP_BYTES))


def with_oom_backoff(step: Callable[[int], T], size: int, what: str = "chunk") -> tuple[T, int]:
    """Run `step(size)`; on out-of-memory halve `size` and retry until size 1 also fails.

    Returns the result and the size that worked, so callers keep using the smaller size.
    """
    while True:
        try:
            return step(size), size
        except (RuntimeError, MemoryError) as exc:
            if not is_oom(exc) or size <= 1:
                raise
            size = max(1, size // 2)
            log.warning("out of memory; retrying with %s size %d (finished work is kept)",
                        what, size)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
