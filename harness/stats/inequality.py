"""Concentration of influence (e.g. how unequally heads share the effect on plateau neurons)."""

from __future__ import annotations

import numpy as np

from harness.errors import BadInputError


def gini(x: np.ndarray) -> float:
    """Gini coefficient of non-negative values: 0 = equal shares, (n-1)/n = one holds all."""
    v = np.sort(np.asarray(x, dtype=np.float64).ravel())
    if v.size == 0:
        raise BadInputError("gini of an empty array is undefined")
    if np.any(v < 0):
        raise BadInputError("gini needs non-negative values; pass |influence|")
    total = v.sum()
    if total == 0:
        return 0.0
    n = v.size
    return float((2.0 * np.sum(np.arange(1, n + 1) * v) / (n * total)) - (n + 1.0) / n)
