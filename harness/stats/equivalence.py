"""Equivalence tests (TOST): what a "no difference" claim needs instead of a large p-value.

A failure to reject says nothing about absence; TOST rejects "the effect lies outside
[low, high]" and so supports "the effect is negligibly small" at level alpha.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from harness.errors import BadInputError
from harness.stats.bootstrap import percentile_ci


@dataclass(frozen=True)
class Equivalence:
    """TOST outcome: p = max of the two one-sided p-values; CI is the (1 - 2 alpha) interval."""

    estimate: float
    low: float
    high: float
    p_value: float
    ci_low: float
    ci_high: float
    alpha: float
    equivalent: bool

    def __str__(self) -> str:
        verdict = "equivalent" if self.equivalent else "not shown equivalent"
        return (f"TOST [{self.low:.4g}, {self.high:.4g}]: {verdict} | estimate={self.estimate:.4g} "
                f"p={self.p_value:.4g} {100 * (1 - 2 * self.alpha):.0f}% CI "
                f"[{self.ci_low:.4g}, {self.ci_high:.4g}]")


def _check_bounds(low: float, high: float, alpha: float) -> None:
    if not low < high:
        raise BadInputError(f"equivalence bounds need low < high, got [{low}, {high}]")
    if not 0 < alpha < 0.5:
        raise BadInputError(f"alpha must lie in (0, 0.5), got {alpha}")


def tost(estimate: float, se: float, low: float, high: float, alpha: float = 0.05,
         df: float | None = None) -> Equivalence:
    """Normal (or t with `df`) two one-sided tests of low < effect < high."""
    _check_bounds(low, high, alpha)
    if not se > 0:
        raise BadInputError(f"standard error must be positive, got {se}")
    dist = stats.norm if df is None else stats.t(df)
    p_low = dist.sf((estimate - low) / se)    # H0: effect <= low
    p_high = dist.cdf((estimate - high) / se)  # H0: effect >= high
    z = dist.ppf(1 - alpha)
    lo, hi = estimate - z * se, estimate + z * se
    return Equivalence(float(estimate), low, high, float(max(p_low, p_high)), float(lo),
                       float(hi), alpha, bool(lo > low and hi < high))


def tost_bootstrap(estimate: float, samples: np.ndarray, low: float, high: float,
                   alpha: float = 0.05) -> Equivalence:
    """Percentile-bootstrap TOST: equivalent iff the (1 - 2 alpha) interval lies inside the bounds.

    p-value = max of the bootstrap tail fractions beyond each bound (+1 corrected).
    """
    _check_bounds(low, high, alpha)
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size < 20:
        raise BadInputError("bootstrap TOST needs at least 20 finite bootstrap samples")
    lo, hi = percentile_ci(s, 1 - 2 * alpha)
    n = s.size
    p = max((1 + np.sum(s <= low)) / (1 + n), (1 + np.sum(s >= high)) / (1 + n))
    return Equivalence(float(estimate), low, high, float(p), lo, hi, alpha,
                       bool(lo > low and hi < high))
