"""Co-activation graphs of neurons (methods.md section 6).

Nodes are neuron indices; the edge weight is the Pearson correlation of two neurons'
activations over a position set (rare positions, or all positions as a variant). The sign is
kept on purpose: anti-correlated neurons are evidence *against* a module, and dropping them
would make every group look more modular than it is.
"""

from __future__ import annotations

import numpy as np

from harness.errors import BadInputError

_CHUNK = 4096


def correlation_matrix(acts: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Pearson correlation [m, m] (float64) of the columns of acts [n_pos, m].

    `weights` [n_pos] are position multiplicities (a row bootstrap). Centring and the matmul run
    in float32 chunks with float64 accumulation: exact enough for r, and m = 6,400 neurons stay
    within memory. Constant neurons get correlation 0 (not NaN) with everything, diagonal 1.
    """
    return corr_from_cov(covariance_matrix(acts, weights))


def covariance_matrix(acts: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted covariance [m, m] float64 (population normalisation; only ratios matter here)."""
    acts = np.asarray(acts)
    if acts.ndim != 2 or acts.shape[0] < 2:
        raise BadInputError(f"acts must be [n_pos >= 2, m], got shape {acts.shape}")
    w = np.ones(acts.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (acts.shape[0],) or w.sum() <= 0:
        raise BadInputError("weights must be [n_pos] non-negative with a positive sum")
    total = w.sum()
    mean = np.zeros(acts.shape[1])
    for s in range(0, acts.shape[0], _CHUNK):
        mean += w[s:s + _CHUNK] @ acts[s:s + _CHUNK].astype(np.float64)
    mean /= total
    mean32 = mean.astype(np.float32)
    cov = np.zeros((acts.shape[1], acts.shape[1]))
    for s in range(0, acts.shape[0], _CHUNK):
        x = acts[s:s + _CHUNK].astype(np.float32) - mean32
        cov += (x * w[s:s + _CHUNK, None].astype(np.float32)).T @ x
    return cov / total


def corr_from_cov(cov: np.ndarray) -> np.ndarray:
    """Covariance -> correlation; zero-variance rows/columns become 0, diagonal 1.

    Works on a batch [..., m, m] as well (the rotation null converts many at once).
    """
    cov = np.asarray(cov, dtype=np.float64)
    cov = (cov + np.swapaxes(cov, -1, -2)) / 2  # float32 matmul leaves 1e-7 asymmetry
    var = np.diagonal(cov, axis1=-2, axis2=-1)
    ok = var > 1e-12 * max(float(np.max(var, initial=0.0)), 1e-300)
    sd = np.where(ok, np.sqrt(np.where(ok, var, 1.0)), np.inf)
    corr = cov / sd[..., :, None] / sd[..., None, :]
    corr = np.clip(corr, -1.0, 1.0)
    idx = np.arange(cov.shape[-1])
    corr[..., idx, idx] = 1.0
    return corr


def group_graph(corr: np.ndarray, group: np.ndarray, threshold: float | None = None
                ) -> np.ndarray:
    """Signed weight matrix [k, k] of the group's complete graph, zero diagonal.

    threshold: the paper's optional variant keeps only |r| >= threshold (e.g. 0.3).
    """
    g = np.asarray(group, dtype=np.int64)
    w = np.array(np.asarray(corr)[np.ix_(g, g)], dtype=np.float64)
    np.fill_diagonal(w, 0.0)
    if threshold is not None:
        w[np.abs(w) < threshold] = 0.0
    return w


def batch_group_graphs(corr: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Weight matrices [G, k, k] of many equal-size groups (rows of `groups`), zero diagonal."""
    groups = np.asarray(groups, dtype=np.int64)
    w = np.asarray(corr)[groups[:, :, None], groups[:, None, :]].astype(np.float64)
    idx = np.arange(groups.shape[1])
    w[:, idx, idx] = 0.0
    return w


def knn_edges(corr: np.ndarray, k: int = 10, threshold: float | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse whole-layer graph: each node keeps its top-k |r| partners (union, so symmetric).

    Returns (i, j, w) with i < j and signed weights. A complete graph of 6,400 neurons has
    20M edges; community detection on it is dominated by noise-level correlations, so the
    whole-layer map keeps the strongest few per neuron (optionally also |r| >= threshold).
    """
    c = np.array(corr, dtype=np.float64)
    m = c.shape[0]
    if not 1 <= k < m:
        raise BadInputError(f"knn k must lie in [1, {m - 1}], got {k}")
    np.fill_diagonal(c, 0.0)
    a = np.abs(c)
    top = np.argpartition(-a, k - 1, axis=1)[:, :k]
    rows = np.repeat(np.arange(m), k)
    cols = top.ravel()
    keep = a[rows, cols] > 0
    if threshold is not None:
        keep &= a[rows, cols] >= threshold
    i, j = np.minimum(rows, cols)[keep], np.maximum(rows, cols)[keep]
    pairs = np.unique(i * m + j)
    i, j = pairs // m, pairs % m
    return i, j, c[i, j]
