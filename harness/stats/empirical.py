"""Observed statistic against a simulated null (random groups, rotations, shuffled graphs)."""

from __future__ import annotations

import numpy as np

from harness.stats.permutation import permutation_pvalue


def empirical_p(observed: float, null: np.ndarray, alternative: str = "greater") -> float:
    """(1 + #null at least as extreme) / (1 + n)."""
    return permutation_pvalue(observed, null, alternative)


def zscore(observed: float, null: np.ndarray) -> float:
    """(observed - mean(null)) / sd(null); NaN when the null has no spread."""
    v = np.asarray(null, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return float("nan")
    sd = v.std(ddof=1)
    return float((observed - v.mean()) / sd) if sd > 0 else float("nan")
