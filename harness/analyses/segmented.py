"""Piecewise fits of a log-log influence curve (ln v against ln r).

Two ways to find the regimes besides the paper's fixed boundaries:
- continuous piecewise-linear least squares with 1, 2 or 3 segments, breakpoints by grid search,
  compared by BIC/AIC (is a third, "plateau", segment worth its parameters?);
- the original work's Huber three-piece fit: plateau line, power law, and a decay regime
  a + delta ln(ln N - ln r), breakpoints by differential evolution (fixed seed). The linear
  coefficients are solved exactly for each breakpoint pair (iteratively reweighted Huber
  regression), so the evolution searches only two numbers and stays cheap.
Both are descriptive: the claim's p-value comes from the permutation test in regimes.py.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import differential_evolution
from scipy.special import huber

from harness.errors import BadInputError


@dataclass(frozen=True)
class SegmentFit:
    """Continuous piecewise-linear fit. `slopes[i]` is the slope of segment i (left to right)."""

    n_segments: int
    breaks: tuple[float, ...]
    intercept: float
    slopes: tuple[float, ...]
    rss: float
    n: int

    @property
    def n_params(self) -> int:
        return 2 * self.n_segments  # n_segments + 1 coefficients, n_segments - 1 breakpoints

    @property
    def bic(self) -> float:
        return self.n * np.log(max(self.rss, 1e-300) / self.n) + self.n_params * np.log(self.n)

    @property
    def aic(self) -> float:
        return self.n * np.log(max(self.rss, 1e-300) / self.n) + 2 * self.n_params

    def segment_line(self, i: int) -> tuple[float, float]:
        """(intercept, slope) of segment i's line, valid for extrapolation."""
        a = self.intercept
        for j in range(i):
            a -= (self.slopes[j + 1] - self.slopes[j]) * self.breaks[j]
        return a, self.slopes[i]

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = self.intercept + self.slopes[0] * x
        for j, c in enumerate(self.breaks):
            out = out + (self.slopes[j + 1] - self.slopes[j]) * np.maximum(x - c, 0.0)
        return out

    def to_dict(self) -> dict:
        return {"n_segments": self.n_segments, "breaks": list(self.breaks),
                "intercept": self.intercept, "slopes": list(self.slopes), "rss": self.rss,
                "bic": self.bic, "aic": self.aic}


def log_bin(x: np.ndarray, y: np.ndarray, width: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Mean (x, y) in bins of equal width in x = ln r.

    Why: ranks are dense at large ln r, so an unweighted fit over all neurons is dominated by the
    decay tail and never spends a breakpoint on the few dozen plateau ranks. Equal-width bins in
    ln r weight the curve as it is plotted; the top ranks stay single points (ln 2 - ln 1 > width).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    key = np.floor((x - x[0]) / width).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    counts = np.diff(np.r_[starts, x.size])
    return np.add.reduceat(x, starts) / counts, np.add.reduceat(y, starts) / counts


def _hinge_design(x: np.ndarray, breaks: tuple[float, ...]) -> np.ndarray:
    return np.column_stack([np.ones_like(x), x, *(np.maximum(x - c, 0.0) for c in breaks)])


def _fit_breaks(x: np.ndarray, y: np.ndarray, breaks: tuple[float, ...]) -> SegmentFit:
    coef, *_ = np.linalg.lstsq(_hinge_design(x, breaks), y, rcond=None)
    rss = float(np.sum((y - _hinge_design(x, breaks) @ coef) ** 2))
    slopes = tuple(float(s) for s in np.cumsum(coef[1:]))
    return SegmentFit(len(breaks) + 1, tuple(float(c) for c in breaks), float(coef[0]), slopes,
                      rss, x.size)


def segmented_fit(x: np.ndarray, y: np.ndarray, n_segments: int, grid: int = 30,
                  min_points: int = 3) -> SegmentFit:
    """Best continuous fit with `n_segments` pieces; breakpoints on an even grid in x."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if n_segments not in (1, 2, 3):
        raise BadInputError(f"n_segments must be 1, 2 or 3, got {n_segments}")
    if x.size < n_segments * min_points + 1:
        raise BadInputError(f"{x.size} points are too few for {n_segments} segments")
    if n_segments == 1:
        return _fit_breaks(x, y, ())
    cands = np.linspace(x[min_points], x[-min_points - 1], grid)
    counts = np.searchsorted(x, cands)
    best = None
    for combo in itertools.combinations(range(grid), n_segments - 1):
        idx = counts[list(combo)]
        if len(combo) == 2 and idx[1] - idx[0] < min_points:
            continue
        fit = _fit_breaks(x, y, tuple(cands[list(combo)]))
        if best is None or fit.rss < best.rss:
            best = fit
    return best


def compare_segments(x: np.ndarray, y: np.ndarray, grid: int = 30) -> dict[int, SegmentFit]:
    """1-, 2- and 3-segment fits keyed by segment count (those the data can support)."""
    return {k: segmented_fit(x, y, k, grid) for k in (1, 2, 3) if x.size >= 3 * k + 1}


@dataclass(frozen=True)
class HuberFit:
    """Three-piece fit: plateau line for x < c1, power law a + s_mid x on [c1, c2], and decay
    f(c2) + delta [ln(L - x) - ln(L - c2)] for x > c2, with L = ln(N + 1)."""

    c1: float
    c2: float
    intercept: float  # of the power-law line
    slope: float  # power-law slope (negative: -alpha)
    plateau_slope: float
    decay_coef: float
    loss: float

    def power_line(self, x: np.ndarray) -> np.ndarray:
        return self.intercept + self.slope * x

    def to_dict(self) -> dict:
        return {"c1": self.c1, "c2": self.c2, "intercept": self.intercept, "slope": self.slope,
                "plateau_slope": self.plateau_slope, "decay_coef": self.decay_coef,
                "loss": self.loss}


def _huber_design(x: np.ndarray, c1: float, c2: float, top: float) -> np.ndarray:
    decay = np.log(top - np.maximum(x, c2)) - np.log(top - c2)
    return np.column_stack([np.ones_like(x), np.clip(x, c1, c2), np.minimum(x - c1, 0.0), decay])


def _huber_regression(design: np.ndarray, y: np.ndarray, h: float, iters: int = 6
                      ) -> tuple[np.ndarray, float]:
    """IRLS for the Huber loss with threshold h; returns (coef, total Huber loss)."""
    w = np.ones_like(y)
    for _ in range(iters):
        sw = np.sqrt(w)
        coef, *_ = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)
        r = np.abs(y - design @ coef)
        w = np.where(r <= h, 1.0, h / np.maximum(r, 1e-12))
    return coef, float(np.sum(huber(h, y - design @ coef)))


def huber_three_piece(x: np.ndarray, y: np.ndarray, seed: int = 0, h: float = 0.1,
                      popsize: int = 8, maxiter: int = 25) -> HuberFit:
    """The original work's three-regime Huber fit (h in ln-influence units)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size < 10:
        raise BadInputError(f"the three-piece fit needs >= 10 points, got {x.size}")
    top = np.log(np.exp(x[-1]) + 1.0)
    lo, hi = x[1], x[-3]

    def breaks(p: np.ndarray) -> tuple[float, float]:
        c1 = lo + p[0] * (hi - lo)
        return c1, c1 + p[1] * (hi - c1)

    def objective(p: np.ndarray) -> float:
        c1, c2 = breaks(p)
        if c2 - c1 < 1e-6:
            return np.inf
        return _huber_regression(_huber_design(x, c1, c2, top), y, h)[1]

    res = differential_evolution(objective, [(0.0, 1.0), (0.0, 1.0)], seed=seed, popsize=popsize,
                                 maxiter=maxiter, tol=1e-4, polish=False)
    c1, c2 = breaks(res.x)
    coef, loss = _huber_regression(_huber_design(x, c1, c2, top), y, h)
    # f = a + s clip(x, c1, c2) + p min(x - c1, 0) + delta decay(x): for x < c1 the slope is p
    return HuberFit(float(c1), float(c2), float(coef[0]), float(coef[1]), float(coef[2]),
                    float(coef[3]), loss)
