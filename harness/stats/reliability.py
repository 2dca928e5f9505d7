"""Split-half reliability of a neuron-influence ranking.

A ranking that does not reproduce across two disjoint halves of the rows cannot carry a
claim about its top ("plateau") neurons. Halves are split by ROW, never by position.

Gate on what the claim is about (issue 19.2): `top_set_reliability` measures the top set (the
overlap of the two halves' top-k sets against the overlap of random k-sets, and the
split-half Spearman over the top ranks), not the whole vector - ~1,000 near-zero tail
neurons make a whole-vector Spearman small even when the top set reproduces perfectly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.stats import hypergeom

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


@dataclass(frozen=True)
class TopSetReliability:
    """Split-half reliability of the top of a ranking (medians over `n_splits` row splits).

    Overlap null: two random k-subsets of the n neurons overlap in X ~ Hypergeom(n, k, k)
    neurons; `p_overlap` = P(X >= the median observed overlap) and `jaccard_needed` the Jaccard
    of the smallest overlap with P < alpha. Spearman over the top ranks, cross-selected: the
    `top_ranks` neurons ranked highest by half a, Spearman of a and b over them, and the same
    with the halves' roles swapped, averaged. Selecting on the half that is then correlated
    with an independent half adds no correlation, so its null expectation is 0 (selecting on
    the whole sample, i.e. on a + b, would make noise rankings anti-correlated and veto real
    plateaus)."""

    top_k: int
    jaccard: float
    overlap: int
    chance_jaccard: float
    jaccard_needed: float
    p_overlap: float
    top_ranks: int
    spearman_top: float
    spearman_all: float
    n_neurons: int
    n_rows_a: int
    n_rows_b: int
    n_splits: int
    alpha: float

    @property
    def overlap_ok(self) -> bool:
        return bool(self.p_overlap < self.alpha)

    @property
    def spearman_ok(self) -> bool:
        return bool(self.spearman_top > 0)

    def __str__(self) -> str:
        return (f"top-{self.top_k} Jaccard {self.jaccard:.3f} (chance {self.chance_jaccard:.3f}, "
                f"needed {self.jaccard_needed:.3f}, p {self.p_overlap:.3g}); Spearman over the "
                f"top {self.top_ranks} ranks {self.spearman_top:.3f} (all {self.spearman_all:.3f})")

    def to_dict(self) -> dict:
        return {"top_k": self.top_k, "jaccard": self.jaccard, "overlap": self.overlap,
                "chance_jaccard": self.chance_jaccard, "jaccard_needed": self.jaccard_needed,
                "p_overlap": self.p_overlap, "top_ranks": self.top_ranks,
                "spearman_top": self.spearman_top, "spearman_all": self.spearman_all,
                "n_neurons": self.n_neurons, "n_rows_a": self.n_rows_a,
                "n_rows_b": self.n_rows_b, "n_splits": self.n_splits, "alpha": self.alpha,
                "overlap_ok": self.overlap_ok, "spearman_ok": self.spearman_ok}


def chance_overlap(n: int, k: int, alpha: float = 0.05) -> tuple[float, int]:
    """(expected Jaccard of two random k-subsets of n, the smallest overlap x with
    P(X >= x) < alpha under X ~ Hypergeom(n, k, k))."""
    if not 0 < k <= n:
        raise BadInputError(f"need 0 < k <= n, got k={k}, n={n}")
    xs = np.arange(k + 1)
    pmf = hypergeom.pmf(xs, n, k, k)
    chance = float(np.sum(pmf * xs / (2 * k - xs)))
    tail = hypergeom.sf(xs - 1, n, k, k)
    needed = int(xs[np.argmax(tail < alpha)]) if np.any(tail < alpha) else k + 1
    return chance, needed


def top_set_reliability(sums: np.ndarray, counts: np.ndarray, rng: np.random.Generator, *,
                        top_k: int, top_ranks: int, n_splits: int = 5, sign: str = "boost",
                        alpha: float = 0.05) -> TopSetReliability:
    """Top-set reliability from per-row sums [n_rows, n] and per-row position counts."""
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts)
    n = sums.shape[1]
    used = np.flatnonzero(counts > 0)
    if used.size < 4:
        raise BadInputError(f"split-half needs >= 4 rows with positions, got {used.size}; "
                            "evaluate more rows or loosen the rarity threshold")
    k, t = max(1, min(top_k, n)), max(3, min(top_ranks, n))
    jac, ovl, rho_top, rho_all = [], [], [], []
    for _ in range(n_splits):
        perm = rng.permutation(used)
        a, b = perm[: used.size // 2], perm[used.size // 2:]
        ia = sums[a].sum(0) / counts[a].sum()
        ib = sums[b].sum(0) / counts[b].sum()
        sa, sb = top_set(ia, k, sign), top_set(ib, k, sign)
        ovl.append(len(set(sa.tolist()) & set(sb.tolist())))
        jac.append(jaccard(sa, sb))
        ta, tb = top_set(ia, t, sign), top_set(ib, t, sign)
        rho_top.append(0.5 * (stats.spearmanr(ia[ta], ib[ta]).statistic
                              + stats.spearmanr(ia[tb], ib[tb]).statistic))
        rho_all.append(stats.spearmanr(ia, ib).statistic)
    x = int(np.median(ovl))
    chance, needed = chance_overlap(n, k, alpha)
    return TopSetReliability(
        k, float(np.median(jac)), x, chance, needed / (2 * k - needed) if needed <= k else 1.0,
        float(hypergeom.sf(x - 1, n, k, k)), t, float(np.nanmedian(rho_top)),
        float(np.nanmedian(rho_all)), n, int(used.size // 2), int(used.size - used.size // 2),
        n_splits, alpha)
