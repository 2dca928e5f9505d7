"""Benjamini-Hochberg false-discovery-rate control (e.g. across heads, thresholds, models)."""

from __future__ import annotations

import numpy as np

from harness.errors import BadInputError


def bh_fdr(pvalues: np.ndarray, q: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(rejected bool[n], qvalues float[n]) by Benjamini-Hochberg step-up at level q.

    NaN p-values are never rejected and get q-value NaN; they do not count toward n.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if not 0 < q < 1:
        raise BadInputError(f"FDR level q must lie in (0, 1), got {q}")
    qvals = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    pv = p[ok]
    n = pv.size
    if n:
        order = np.argsort(pv)
        ranked = pv[order] * n / np.arange(1, n + 1)
        adj = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
        qv = np.empty(n)
        qv[order] = adj
        qvals[ok] = qv
    rejected = np.zeros(p.shape, dtype=bool)
    rejected[ok] = qvals[ok] <= q
    return rejected, qvals
