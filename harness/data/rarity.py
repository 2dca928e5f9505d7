"""Which vocabulary types are rare, and which kept positions are rare vs common
(methods.md section 3)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.data.frequency import FrequencyTable
from harness.errors import BadInputError


@dataclass(frozen=True)
class RaritySpec:
    """q: rare = types in the lowest q percent of smoothed probability; which: rarity of the
    *target* x_{t+1} (what the loss predicts) or the *current* x_t (what the original code
    used); elbow: also drop the extreme tail beyond the Zipf elbow (P2); ties: 'strict' (the
    original code: rare iff p < the q-quantile) or 'include' (p <= it, so every type tied at
    the cutoff is rare). The two differ when many types share the cutoff count: with exact
    counts of a small training set 40% of GPT-2's types never occur, so at q = 15 the
    quantile is the minimum and 'strict' finds no rare type at all while 'include' makes 40%
    of types rare (measured: fixtures q15 0.0% vs 40.4% of types; SmolLM2 proxy q15 14.1% vs
    17.3%, q50 49.4% vs 50.4%)."""

    q: float = 50.0
    which: str = "target"
    elbow: bool = False
    ties: str = "strict"

    def __post_init__(self) -> None:
        if not 0.0 < float(self.q) < 100.0:
            raise BadInputError(f"rarity percentile q must be in (0, 100), got {self.q}")
        if self.which not in ("target", "current"):
            raise BadInputError(f"rarity 'which' must be 'target' or 'current', got {self.which!r}")
        if self.ties not in RARITY_TIES:
            raise BadInputError(f"rarity ties must be one of {', '.join(RARITY_TIES)}, "
                                f"got {self.ties!r}")

    @property
    def tag(self) -> str:
        """Short id used in test ids, golden file names and figure names."""
        return f"{self.which}-q{self.q:g}" + ("" if self.ties == "strict" else f"-{self.ties}")

    def __str__(self) -> str:
        extra = (", elbow-cut" if self.elbow else "") + (", ties included" if
                                                           self.ties == "include" else "")
        return f"rare = lowest {self.q:g}% of types ({self.which} token{extra})"


RARITY_TIES = ("strict", "include")


def _probs(freq: FrequencyTable | np.ndarray) -> np.ndarray:
    return freq.probs if isinstance(freq, FrequencyTable) else np.asarray(freq, dtype=np.float64)


def rare_vocab(freq: FrequencyTable | np.ndarray, spec: RaritySpec) -> np.ndarray:
    """bool [V]. `spec.ties` decides the types tied at the cutoff (every never-seen type has
    the same smoothed p): 'strict' (the original) leaves them out, so the rare fraction can
    fall below q (to 0 when the cutoff is the minimum); 'include' counts them all, so it can
    exceed q. A proxy table (`observed_only`) ranks only the types its corpus contains."""
    p = _probs(freq)
    seen = freq.counts > 0 if getattr(freq, "observed_only", False) else None
    cutoff = np.quantile(p if seen is None else p[seen], spec.q / 100.0)
    rare = p < cutoff if spec.ties == "strict" else p <= cutoff
    if seen is not None:  # a proxy: percentiles over the types it observed, never the others
        rare &= seen
    if spec.elbow:
        rank = zipf_elbow(p)
        if rank is not None:
            rare &= p >= np.sort(p)[::-1][rank - 1]
    return rare


def zipf_elbow(probs: np.ndarray, window: int = 2000, threshold_sd: float = 3.0) -> int | None:
    """1-based rank where the Zipf tail bends (P2 code): sort p descending, x = ln rank,
    y = ln p; OLS slopes of windows of `window` types sliding by one over the tail half of
    ranks; the elbow is the start of the window after the largest absolute slope change,
    provided that change exceeds mean + 3 SD of all changes. None when there are fewer than
    3 * window types or no change is that large."""
    y = np.log(np.sort(np.asarray(probs, dtype=np.float64))[::-1])
    n = y.size
    if n < 3 * window:
        return None
    x = np.log(np.arange(1, n + 1, dtype=np.float64))
    start = max(n // 2, 2 * window)
    xs, ys = x[start:], y[start:]
    xs, ys = xs - xs.mean(), ys - ys.mean()  # centring keeps the windowed sums well conditioned
    sx, sy, sxx, sxy = (np.concatenate([[0.0], np.cumsum(v)]) for v in (xs, ys, xs * xs, xs * ys))
    n_win = xs.size - window  # window starts i = start .. n - window - 1, as in the P2 loop
    w = slice(window, window + n_win)
    Sx, Sy = sx[w] - sx[:n_win], sy[w] - sy[:n_win]
    Sxx, Sxy = sxx[w] - sxx[:n_win], sxy[w] - sxy[:n_win]
    slopes = (window * Sxy - Sx * Sy) / (window * Sxx - Sx * Sx)
    jumps = np.abs(np.diff(slopes))
    if jumps.size == 0:
        return None
    big = np.flatnonzero(jumps > jumps.mean() + threshold_sd * jumps.std())
    if big.size == 0:
        return None
    best = big[np.argmax(jumps[big])]
    return int(start + best + 1) + 1


def position_masks(rows: np.ndarray, keep: np.ndarray,
                   rare: np.ndarray | FrequencyTable,
                   which: str | RaritySpec = "target") -> tuple[np.ndarray, np.ndarray]:
    """(rare, common) bool [n_rows, T] over kept positions; common = kept and not rare.

    `rare` is a bool [V] mask from `rare_vocab`, or a FrequencyTable / probability vector
    together with a RaritySpec. `target` looks at x_{t+1}, `current` at x_t; the last column
    has no target and is never kept anyway.
    """
    spec = which if isinstance(which, RaritySpec) else None
    which = spec.which if spec else which
    mask = np.asarray(rare) if not isinstance(rare, FrequencyTable) else None
    if mask is None or mask.dtype != bool:
        if spec is None:
            raise BadInputError("pass a bool rare-vocabulary mask, or frequencies with a RaritySpec")
        mask = rare_vocab(rare, spec)
    rows, keep = np.asarray(rows), np.asarray(keep, dtype=bool)
    is_rare = mask[rows]
    if which == "target":
        tok_rare = np.zeros_like(is_rare)
        tok_rare[:, :-1] = is_rare[:, 1:]
    elif which == "current":
        tok_rare = is_rare
    else:
        raise BadInputError(f"which must be 'target' or 'current', got {which!r}")
    return keep & tok_rare, keep & ~tok_rare
