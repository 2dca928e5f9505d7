"""Row (sequence) bootstrap.

Why rows: positions in one packed sequence share context, so resampling positions understates
the variance. Every interval in rarebench resamples whole rows with replacement.

Shared (paired) bootstrap across runs - `RAREBENCH_SHARED_BOOTSTRAP=<seed>` (issue 14.5).
When the variable is set, `resample_weights(n_rows, n_boot, rng, key)` draws its weights from
`np.random.default_rng([seed, n_rows, n_boot, *key])` instead of from `rng`. Two runs on the
same evaluation rows - the checkpoints of one model: the rows are the same text at every
step - then resample the *same rows* in replicate b, so a statistic computed across runs per
replicate (harness.analyses.emergence: Spearman of the effect against the training step) is
a paired row bootstrap. `rng` is still advanced exactly as without the switch (its draw is
made and discarded), so every other random stream of an analysis - permutations, splits,
matched draws - is unchanged: a run with the switch differs from a normal run only by the
bootstrap draw (an interval moves by its own Monte-Carlo error). Read at call time, so it
reaches the claim tests whether pytest runs in-process (harness.api.run_claims) or in a
subprocess. With the switch, analyses also put the bootstrap replicates of their headline
effect in `details['effect_replicates']` (results.json otherwise unchanged).
Caveat: every call with the same (n_rows, n_boot, key) gets the same weights - also the
replicates of own-data power, which then share one weight matrix: their power estimate
stays unbiased (each replicate's rule sees a valid bootstrap) but its Monte-Carlo error is
no longer that of independent replicates.
"""

from __future__ import annotations

import os
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


SHARED_BOOTSTRAP_ENV = "RAREBENCH_SHARED_BOOTSTRAP"


def shared_bootstrap_seed() -> int | None:
    """The seed of `RAREBENCH_SHARED_BOOTSTRAP` (module docstring), None when unset or empty."""
    text = os.environ.get(SHARED_BOOTSTRAP_ENV, "").strip()
    if not text:
        return None
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if seed < 0:
        raise BadInputError(f"{SHARED_BOOTSTRAP_ENV}={text!r}: use a non-negative integer seed "
                            "(or unset it)")
    return seed


def resample_weights(n_rows: int, n_boot: int, rng: np.random.Generator,
                     key: tuple[int, ...] = ()) -> np.ndarray:
    """[n_boot, n_rows] multiplicities of each row in each bootstrap replicate.

    Drawn from `rng`; with `RAREBENCH_SHARED_BOOTSTRAP=<seed>` set, from
    `default_rng([seed, n_rows, n_boot, *key])` instead (`rng` still advanced as usual; see
    the module docstring): replicate b then resamples the same rows in every run on the same
    rows. `key` (non-negative ints) tells apart two resamplings of equally many rows in one
    analysis (e.g. the two cross-fit halves), which would otherwise get the same weights."""
    idx = rng.integers(0, n_rows, size=(n_boot, n_rows))
    shared = shared_bootstrap_seed()
    if shared is not None:
        idx = np.random.default_rng([shared, int(n_rows), int(n_boot), *map(int, key)]
                                    ).integers(0, n_rows, size=(n_boot, n_rows))
    w = np.zeros((n_boot, n_rows), dtype=np.float64)
    np.add.at(w, (np.repeat(np.arange(n_boot), n_rows), idx.ravel()), 1.0)
    return w


def replicate_list(samples: np.ndarray) -> list[float | None]:
    """Bootstrap replicates as a JSON-ready list (NaN/inf -> None), order kept: what the
    analyses store in `details['effect_replicates']` under the shared bootstrap."""
    return [float(x) if np.isfinite(x) else None
            for x in np.asarray(samples, dtype=np.float64).ravel()]


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
