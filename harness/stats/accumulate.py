"""Sums of float32 engine output, accumulated in float64.

Why: influences are means of ~1e-3..1e-6 nat Deltas over thousands of positions, and the
regime statistics take their logs. A float32 GEMV carries relative rounding of ~1e-7 of the
*largest* partial sums and depends on the BLAS kernel's summation order, so the same data could
give different log-rank statistics on different machines. Upcasting a block of positions at a
time keeps the memory bound of the float32 matrix and makes every sum exact to float64.
"""

from __future__ import annotations

import numpy as np

_BLOCK_BYTES = 64 << 20  # float64 copy of one block of positions


def weighted_sums(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """weights [B, n] @ values [n, m] -> float64 [B, m], accumulated in float64."""
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    v = np.asarray(values)
    if v.dtype == np.float64:
        return w @ v
    out = np.zeros((w.shape[0], v.shape[1]), dtype=np.float64)
    step = max(1, _BLOCK_BYTES // max(1, 8 * v.shape[1]))
    for s in range(0, v.shape[0], step):
        out += w[:, s:s + step] @ v[s:s + step].astype(np.float64)
    return out
