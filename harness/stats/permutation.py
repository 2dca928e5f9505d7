"""Stratified permutation nulls.

Why stratify by row: shuffling rare/common labels within each sequence keeps each row's rare
count and its shared context, so the null has the same sample sizes and dependence as the data.
"""

from __future__ import annotations

import numpy as np

from harness.errors import BadInputError

ALTERNATIVES = ("greater", "less", "two-sided")


def stratified_permutation(labels: np.ndarray, strata: np.ndarray,
                           rng: np.random.Generator) -> np.ndarray:
    """Labels shuffled within each stratum (per-stratum label counts are preserved)."""
    labels = np.asarray(labels)
    strata = np.asarray(strata)
    if labels.shape != strata.shape:
        raise BadInputError(f"labels {labels.shape} and strata {strata.shape} differ in shape")
    # sort by (stratum, random key): within each stratum the order becomes a random permutation
    order = np.lexsort((rng.random(labels.size), strata))
    by_stratum = np.argsort(strata, kind="stable")
    out = np.empty_like(labels)
    out[by_stratum] = labels[order]
    return out


def stratified_permutations(labels: np.ndarray, strata: np.ndarray, n: int,
                            rng: np.random.Generator) -> np.ndarray:
    """[n, len(labels)]: n independent within-stratum shuffles in one vectorised sort."""
    labels = np.asarray(labels)
    strata = np.asarray(strata)
    if labels.shape != strata.shape or labels.ndim != 1:
        raise BadInputError(f"labels {labels.shape} and strata {strata.shape} must be equal 1-d")
    _, code = np.unique(strata, return_inverse=True)
    order = np.argsort(code[None, :] + rng.random((n, labels.size)), axis=1)
    out = np.empty((n, labels.size), dtype=labels.dtype)
    out[:, np.argsort(code, kind="stable")] = labels[order]
    return out


def permutation_pvalue(observed: float, null_samples: np.ndarray,
                       alternative: str = "greater") -> float:
    """(1 + #null at least as extreme) / (1 + n): never 0, valid for finite n (Phipson-Smyth)."""
    if alternative not in ALTERNATIVES:
        raise BadInputError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    null = np.asarray(null_samples, dtype=np.float64)
    null = null[np.isfinite(null)]
    n = null.size
    if alternative == "greater":
        k = np.sum(null >= observed)
    elif alternative == "less":
        k = np.sum(null <= observed)
    else:
        centre = np.mean(null) if n else 0.0
        k = np.sum(np.abs(null - centre) >= abs(observed - centre))
    return float((1 + k) / (1 + n))
