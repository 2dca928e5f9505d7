"""Power and false-positive rate measured on the run's own data.

Why: a power figure from a synthetic calibration describes the synthetic data, not the run it
is printed beside. Here each claim plants an effect of a known size - exactly the SESOI, and
multiples of it for the minimum detectable effect - into the run's real matrices (no new
forward pass), reruns its full decision rule, and does the same on label-shuffled copies for
the false-positive rate. Each rate comes with its Monte-Carlo standard error and the number
of replicates.

detect: the verdict that counts as finding the planted effect - 'supported' for a claim that
an effect exists, 'refuted' for a claim that it is absent (the planted X is the effect the
claim denies). The share of each verdict is kept too (for an absence claim, 'supported' on a
planted SESOI effect is its own false certification).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from harness.errors import BadInputError
from harness.verdicts import VERDICTS

POWER_TARGET = 0.8
DEFAULT_FACTORS = (0.5, 1.0, 2.0, 4.0)


def _rate(k: int, n: int) -> tuple[float, float]:
    return (k / n, math.sqrt((k / n) * (1 - k / n) / n)) if n else (math.nan, math.nan)


@dataclass(frozen=True)
class OwnDataPower:
    """Power at the SESOI, minimum detectable effect at 80% power, false-positive rate."""

    sesoi: float
    detect: str
    power: float
    power_se: float
    fpr: float
    fpr_se: float
    n_reps: int
    mde80: float | None          # None: not reached within the grid (see mde80_above)
    mde80_above: float | None    # the largest effect tried, when mde80 is None
    curve: dict[float, float] = field(default_factory=dict)   # effect -> power
    verdicts_at_sesoi: dict[str, int] = field(default_factory=dict)
    verdicts_null: dict[str, int] = field(default_factory=dict)
    how: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"sesoi": self.sesoi, "detect": self.detect, "power": self.power,
                "power_se": self.power_se, "fpr": self.fpr, "fpr_se": self.fpr_se,
                "n_reps": self.n_reps, "mde80": self.mde80, "mde80_above": self.mde80_above,
                "curve": {str(k): v for k, v in self.curve.items()},
                "verdicts_at_sesoi": self.verdicts_at_sesoi,
                "verdicts_null": self.verdicts_null, "how": self.how}

    def __str__(self) -> str:
        mde = (f"{self.mde80:.3g}" if self.mde80 is not None
               else f"> {self.mde80_above:.3g}" if self.mde80_above is not None else "n/a")
        return (f"power at SESOI {self.sesoi:g}: {self.power:.2f} (s.e. {self.power_se:.2f}); "
                f"MDE(80%) {mde}; false-positive rate {self.fpr:.2f} (s.e. {self.fpr_se:.2f}); "
                f"{self.n_reps} replicates each")


def own_data_power(decide: Callable[[Any], str], plant: Callable[[np.random.Generator, float], Any],
                   null: Callable[[np.random.Generator], Any], *, sesoi: float, detect: str,
                   reps: int, factors: tuple[float, ...] = DEFAULT_FACTORS, seed: int = 0,
                   how: str = "") -> OwnDataPower:
    """Rerun `decide` (data -> verdict) on `reps` planted copies per effect size
    (factor x sesoi, via `plant(rng, effect)`) and `reps` null copies (`null(rng)`)."""
    if detect not in VERDICTS:
        raise BadInputError(f"detect must be a verdict, got {detect!r}")
    if reps < 1:
        raise BadInputError(f"--power-reps must be >= 1, got {reps}")
    if 1.0 not in factors:
        factors = tuple(sorted(set(factors) | {1.0}))
    rng = np.random.default_rng([seed, 4242])
    curve: dict[float, float] = {}
    at_sesoi: Counter = Counter()
    for f in sorted(factors):
        counts = Counter(decide(plant(rng, f * sesoi)) for _ in range(reps))
        curve[f * sesoi] = counts[detect] / reps
        if f == 1.0:
            at_sesoi = counts
    nulls = Counter(decide(null(rng)) for _ in range(reps))
    power, power_se = _rate(at_sesoi[detect], reps)
    fpr, fpr_se = _rate(nulls[detect], reps)
    mde, above = mde_from_curve(curve)
    return OwnDataPower(sesoi, detect, power, power_se, fpr, fpr_se, reps, mde, above, curve,
                        dict(at_sesoi), dict(nulls), how)


def mde_from_curve(curve: dict[float, float], target: float = POWER_TARGET
                   ) -> tuple[float | None, float | None]:
    """(smallest effect with power >= target, linearly interpolated between grid points;
    None and the largest effect tried when the grid never reaches it)."""
    pts = sorted(curve.items())
    if not pts:
        return None, None
    prev = None
    for eff, pw in pts:
        if pw >= target:
            if prev is None or prev[1] >= target:
                return eff, None
            (e0, p0) = prev
            return e0 + (target - p0) * (eff - e0) / (pw - p0), None
        prev = (eff, pw)
    return None, pts[-1][0]
