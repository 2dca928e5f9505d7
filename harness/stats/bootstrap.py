"""Row (sequence) bootstrap.

Why rows: positions in one packed sequence share context, so resampling positions understates
the variance. Every interval in rarebench resamples whole rows with replacement.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from harness.errors import BadInputError


def grouped_sums(values: np.ndarray, row: np.ndarray, n_rows: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per-row sums of per-position values: (sums [n_rows, k] float64, counts [n_rows] int64).

    `values` is [n_pos] or [n_pos, k]; `row` holds row indices in [0, n_rows). The sums let
    a bootstrap replicate be a weighted sum over rows instead of a pass over positions.
    """
    values = np.asarray(values)
    row = np.asarray(row, dtype=np.int64)
    if values.shape[0] != row.shape[0]:
        raise BadInputError(f"values has {values.shape[0]} positions but row has {row.shape[0]}")
    if n_rows is None:
        n_rows = int(row.max()) + 1 if row.size else 0
    if row.size and (row.min() < 0 or row.max() >= n_rows):
        raise BadInputError(f"row indices must lie in [0, {n_rows})")
    squeeze = values.ndim == 1
    v = values.reshape(values.shape[0], -1)
    sums = np.zeros((n_rows, v.shape[1]), dtype=np.float64)
    if row.size:
        _sum_sorted(sums, v, row)
    counts = np.bincount(row, minlength=n_rows).astype(np.int64)
    return (sums[:, 0] if squeeze else sums), counts


def _sum_sorted(out: np.ndarray, v: np.ndarray, row: np.ndarray) -> None:
    """reduceat over row-sorted positions (np.add.at is ~10x slower for wide matrices).

    Engine output is already row-major, so the common case neither sorts nor copies `v`.
    """
    if np.all(row[1:] >= row[:-1]):
        r, vs = row, v
    else:
        order = np.argsort(row, kind="stable")
        r, vs = row[order], v[order]
    starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
    out[r[starts]] = np.add.reduceat(vs, starts, axis=0, dtype=np.float64)


def resample_weights(n_rows: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot, n_rows] multiplicities of each row in each bootstrap replicate."""
    idx = rng.integers(0, n_rows, size=(n_boot, n_rows))
    w = np.zeros((n_boot, n_rows), dtype=np.float64)
    np.add.at(w, (np.repeat(np.arange(n_boot), n_rows), idx.ravel()), 1.0)
    return w


def bootstrap_mean_from_groups(sums: np.ndarray, counts: np.ndarray, n_boot: int,
                               rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of the position mean (ratio estimator: resampled sums / counts).

    Returns [n_boot] for 1-d sums, [n_boot, k] for [n_rows, k] sums. A replicate whose rows
    contain no positions gives NaN.
    """
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    w = resample_weights(len(counts), n_boot, rng)
    tot = w @ counts
    with np.errstate(invalid="ignore", divide="ignore"):
        if sums.ndim == 1:
            return (w @ sums) / tot
        return (w @ sums) / tot[:, None]


def percentile_ci(samples: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap samples (NaN replicates ignored)."""
    a = (1.0 - ci) / 2.0
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(s, [a, 1.0 - a])
    return float(lo), float(hi)


def row_bootstrap(stat_fn: Callable[[np.ndarray], float], rows: np.ndarray | int,
                  n_boot: int = 1000, seed: int | np.random.Generator = 0, ci: float = 0.95
                  ) -> tuple[float, float, float, np.ndarray]:
    """Bootstrap a statistic over rows: (estimate, lo, hi, samples).

    `stat_fn(row_ids)` computes the statistic on the data restricted to the given row ids
    (a multiset: repeated ids count repeatedly). `rows` is the array of row ids or their count.
    Percentile interval: the statistics here are bounded/skewed enough that BCa's acceleration
    estimate is itself noisy at rarebench's row counts.
    """
    row_ids = np.arange(rows) if np.isscalar(rows) else np.asarray(rows)
    if row_ids.size < 2:
        raise BadInputError("the row bootstrap needs at least 2 rows; evaluate more rows")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    estimate = float(stat_fn(row_ids))
    samples = np.array([stat_fn(row_ids[rng.integers(0, row_ids.size, row_ids.size)])
                        for _ in range(n_boot)], dtype=np.float64)
    lo, hi = percentile_ci(samples, ci)
    return estimate, lo, hi, samples
