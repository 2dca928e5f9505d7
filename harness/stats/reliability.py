"""Split-half reliability of a neuron-influence ranking.

A ranking that does not reproduce across two disjoint halves of the rows cannot carry a
claim about its top ("plateau") neurons. Halves are split by ROW, never by position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from harness.errors import BadInputError
from harness.stats.bootstrap import grouped_sums

SIGNS = ("boost", "suppress", "abs")


@dataclass(frozen=True)
class SplitHalf:
    """Medians over `n_splits` random row splits."""

    spearman: float
    top_overlap: float  # Jaccard of the two halves' top-k sets
    top_k: int
    n_rows_a: int
    n_rows_b: int
    n_splits: int

    def __str__(self) -> str:
        return (f"split-half Spearman={self.spearman:.3f}, top-{self.top_k} Jaccard="
                f"{self.top_overlap:.3f} (rows {self.n_rows_a}/{self.n_rows_b}, "
                f"median of {self.n_splits} splits)")

    def to_dict(self) -> dict:
        return {"spearman": self.spearman, "top_overlap": self.top_overlap, "top_k": self.top_k,
                "n_rows_a": self.n_rows_a, "n_rows_b": self.n_rows_b, "n_splits": self.n_splits}


def top_set(influence: np.ndarray, k: int, sign: str = "boost") -> np.ndarray:
    """Indices of the k most influential neurons: largest (boost), most negative (suppress), |.|."""
    if sign not in SIGNS:
        raise BadInputError(f"sign must be one of {SIGNS}, got {sign!r}")
    key = {"boost": influence, "suppress": -influence, "abs": np.abs(influence)}[sign]
    k = min(k, key.size)
    return np.argpartition(-key, k - 1)[:k] if k else np.array([], dtype=np.int64)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = set(a.tolist()), set(b.tolist())
    union = sa | sb
    return len(sa & sb) / len(union) if union else float("nan")


def split_half_from_groups(sums: np.ndarray, counts: np.ndarray, rng: np.random.Generator, *,
                           top_k: int = 50, n_splits: int = 5, sign: str = "boost") -> SplitHalf:
    """Split-half reliability from per-row sums [n_rows, k] and per-row position counts."""
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts)
    used = np.flatnonzero(counts > 0)
    if used.size < 4:
        raise BadInputError(f"split-half needs >= 4 rows with positions, got {used.size}; "
                            "evaluate more rows or loosen the rarity threshold")
    rhos, overlaps = [], []
    for _ in range(n_splits):
        perm = rng.permutation(used)
        a, b = perm[: used.size // 2], perm[used.size // 2:]
        ia = sums[a].sum(0) / counts[a].sum()
        ib = sums[b].sum(0) / counts[b].sum()
        rhos.append(stats.spearmanr(ia, ib).statistic)
        overlaps.append(jaccard(top_set(ia, top_k, sign), top_set(ib, top_k, sign)))
    return SplitHalf(float(np.nanmedian(rhos)), float(np.median(overlaps)), min(top_k, sums.shape[1]),
                     int(used.size // 2), int(used.size - used.size // 2), n_splits)


def split_half(values: np.ndarray, row: np.ndarray, rng: np.random.Generator, *,
               n_rows: int | None = None, top_k: int = 50, n_splits: int = 5,
               sign: str = "boost") -> SplitHalf:
    """Split-half reliability of per-neuron mean influence; values [n_pos, k], row [n_pos]."""
    sums, counts = grouped_sums(values, row, n_rows)
    return split_half_from_groups(sums, counts, rng, top_k=top_k, n_splits=n_splits, sign=sign)
