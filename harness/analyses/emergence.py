"""Emergence over training (issue 14.5): does a claim's effect trend with the training step?

Input: one effect estimate per checkpoint of one model, and its row-bootstrap replicates,
*paired* across checkpoints - replicate b resamples the same evaluation rows at every step
(the rows are the same text at every checkpoint; `RAREBENCH_SHARED_BOOTSTRAP`, see
harness.stats.bootstrap, makes the claims draw them so).

Statistic: Spearman's rho between the effect and log training step. Spearman uses ranks
only, so rho against log(step + 1), log(step) for step > 0, or the step itself is the same
number: the log enters only the figure's axis; step 0 (initialisation, which Pythia and the
fixtures keep) needs no special case and counts as the earliest checkpoint.

Interval: the percentile interval of rho recomputed in every paired replicate (rho_b over the
checkpoints' replicate-b effects): the row-sampling uncertainty of every checkpoint's
estimate, with their correlation through shared rows kept. With few checkpoints rho takes few
values (n = 4: multiples of 0.2), so the interval is coarse.

p-value (two-sided, bootstrap): p = min(1, 2 (1 + #{rho_b on the far side of 0}) / (1 + B)),
the far side being <= 0 for rho > 0 and >= 0 for rho < 0 (rho = 0: p = 1); it agrees with
whether the (1 - alpha) percentile interval excludes 0. Reported beside it, `order_p`: the
exact permutation p of rho over the order of the checkpoints (all n! orders for n <= 8, else
20,000 random ones, fixed seed) - the chance that n exchangeable estimates fall in an order
at least this monotone; it ignores the estimates' own noise, and its smallest value is
2 / n! (n = 4: 0.083, so it can never reach 0.05 with 4 checkpoints).

Untestable checkpoints: a checkpoint without a finite effect or without replicates (the
claim was inconclusive for lack of data, errored or skipped) is left out and named in
`skipped`; a replicate that is not finite at some kept checkpoint gives no rho_b (counted in
`n_boot_used`). Fewer than 3 usable checkpoints: no trend (NaN, reason given).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import stats

from harness.errors import BadInputError
from harness.stats.bootstrap import percentile_ci, resample_weights

MIN_CHECKPOINTS = 3
EXACT_ORDER_MAX = 8       # all n! checkpoint orders up to n = 8 (40,320), random ones above
N_ORDER_PERM = 20_000
METHOD = ("Spearman rho of the effect vs log training step (ranks: log(step + 1), log step "
          "and step give the same rho; step 0 included); CI: percentile of rho over the paired "
          "row-bootstrap replicates (replicate b resamples the same rows at every "
          "checkpoint); p: two-sided bootstrap sign share; order_p: exact permutation p over "
          "checkpoint order (ignores the estimates' noise)")


@dataclass(frozen=True)
class TrendResult:
    """A trend of one claim's effect over checkpoints (module docstring). `direction` is
    'increasing' / 'decreasing' when the CI excludes 0, 'no trend detected' when it covers
    0, 'untestable' when there are too few usable checkpoints or replicates."""

    rho: float
    ci_low: float
    ci_high: float
    p_value: float
    order_p: float
    n_checkpoints: int
    n_boot: int
    n_boot_used: int
    steps: tuple[int, ...]
    skipped: tuple[tuple[int, str], ...] = ()
    ci_level: float = 0.95
    direction: str = "untestable"
    reason: str = ""
    method: str = METHOD
    replicates: tuple[float, ...] = field(default=(), repr=False)

    def __str__(self) -> str:
        skipped = (f"; skipped {', '.join(f'step {s} ({why})' for s, why in self.skipped)}"
                   if self.skipped else "")
        if not math.isfinite(self.rho):
            return (f"trend vs log step: untestable ({self.reason}); "
                    f"{self.n_checkpoints} checkpoints{skipped}")
        return (f"trend vs log step: Spearman rho={self.rho:+.3f} "
                f"[{_fmt(self.ci_low)}, {_fmt(self.ci_high)}] ({100 * self.ci_level:g}% paired "
                f"row bootstrap, {self.n_boot_used}/{self.n_boot} replicates), "
                f"p={self.p_value:.3g}, order p={self.order_p:.3g}, {self.n_checkpoints} "
                f"checkpoints -> {self.direction}{skipped}")

    def to_dict(self, replicates: bool = False) -> dict[str, Any]:
        out = asdict(self)
        out["steps"] = list(self.steps)
        out["skipped"] = [{"step": s, "reason": why} for s, why in self.skipped]
        if replicates:
            out["replicates"] = list(self.replicates)
        else:
            out.pop("replicates")
        return out


def _fmt(x: float) -> str:
    return f"{x:+.3f}" if math.isfinite(x) else "nan"


def spearman_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho of x [n] with every column of y [n, B] (average ranks for ties); NaN for
    a constant column (or x)."""
    rx = stats.rankdata(np.asarray(x, dtype=np.float64))
    ry = stats.rankdata(np.asarray(y, dtype=np.float64), axis=0)
    rx = rx - rx.mean()
    ry = ry - ry.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx @ ry) / np.sqrt((rx @ rx) * (ry * ry).sum(0))


def order_pvalue(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """Two-sided permutation p of Spearman rho(x, y) over the orders of y (module docstring)."""
    rx = stats.rankdata(np.asarray(x, dtype=np.float64))
    ry = stats.rankdata(np.asarray(y, dtype=np.float64))
    n = ry.size
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = math.sqrt(float(rx @ rx) * float(ry @ ry))
    if norm == 0:
        return float("nan")
    rho = float(rx @ ry) / norm
    if n <= EXACT_ORDER_MAX:
        perms = np.array(list(itertools.permutations(range(n))), dtype=np.int64)
        null = ry[perms] @ rx / norm
        return float(np.mean(np.abs(null) >= abs(rho) - 1e-12))
    rng = np.random.default_rng(seed)
    null = ry[np.argsort(rng.random((N_ORDER_PERM, n)), axis=1)] @ rx / norm
    return float((1 + np.sum(np.abs(null) >= abs(rho) - 1e-12)) / (1 + N_ORDER_PERM))


def trend(steps: Sequence[int], effects: Sequence[float],
          replicates: Sequence[Sequence[float] | None] | np.ndarray, *, ci: float = 0.95
          ) -> TrendResult:
    """Spearman trend of `effects` (one per checkpoint) against log(step), with a paired
    row-bootstrap CI and p-value from `replicates` (one list per checkpoint, equally long,
    replicate b on the same resampled rows everywhere; None/NaN entries allowed). See the
    module docstring for the method and how unusable checkpoints are skipped."""
    steps_a = np.asarray(steps)
    effects_a = np.asarray(effects, dtype=np.float64)
    if steps_a.ndim != 1 or effects_a.shape != steps_a.shape or len(replicates) != steps_a.size:
        raise BadInputError(f"trend needs one step, effect and replicate list per checkpoint; "
                            f"got {steps_a.size} steps, {effects_a.size} effects, "
                            f"{len(replicates)} replicate lists")
    if steps_a.size and (np.any(steps_a < 0) or np.unique(steps_a).size != steps_a.size):
        raise BadInputError(f"steps must be distinct and >= 0, got {steps_a.tolist()}")
    if not 0 < ci < 1:
        raise BadInputError(f"ci must lie in (0, 1), got {ci}")
    kept, reps, skipped = [], [], []
    for i in np.argsort(steps_a, kind="stable"):
        r = replicates[i]
        r = None if r is None else np.array([np.nan if v is None else v for v in r],
                                            dtype=np.float64)
        if not math.isfinite(effects_a[i]):
            skipped.append((int(steps_a[i]), "no effect (untestable or inconclusive for lack "
                                             "of data)"))
        elif r is None or r.size == 0:
            skipped.append((int(steps_a[i]), "no bootstrap replicates"))
        else:
            kept.append(int(i))
            reps.append(r)
    lengths = sorted({r.size for r in reps})
    if len(lengths) > 1:
        raise BadInputError(f"replicate lists differ in length ({lengths}): they come from "
                            "different bootstrap sizes and are not paired; rerun every "
                            "checkpoint with the same settings")
    n_boot = lengths[0] if lengths else 0
    x = np.log1p(steps_a[kept].astype(np.float64))
    base = dict(n_checkpoints=len(kept), n_boot=n_boot, steps=tuple(int(s) for s in
                                                                     steps_a[kept]),
                skipped=tuple(skipped), ci_level=ci)
    nan = float("nan")
    if len(kept) < MIN_CHECKPOINTS:
        return TrendResult(nan, nan, nan, nan, nan, n_boot_used=0, reason=(
            f"{len(kept)} usable checkpoint(s); a trend needs at least {MIN_CHECKPOINTS}"),
            **base)
    y = effects_a[kept]
    rho = float(spearman_columns(x, y[:, None])[0])
    R = np.stack(reps)                                       # [n_kept, B]
    ok = np.isfinite(R).all(0)
    rho_b = np.full(n_boot, np.nan)
    if ok.any():
        rho_b[ok] = spearman_columns(x, R[:, ok])
    fin = rho_b[np.isfinite(rho_b)]
    order_p = order_pvalue(x, y)
    if not math.isfinite(rho) or fin.size < 20:
        why = ("the effect is the same at every checkpoint" if not math.isfinite(rho) else
               f"only {fin.size} paired replicates give a rho (need 20)")
        return TrendResult(rho, nan, nan, nan, order_p, n_boot_used=int(fin.size),
                           reason=why, replicates=tuple(rho_b.tolist()), **base)
    lo, hi = percentile_ci(fin, ci)
    if rho > 0:
        far = int(np.sum(fin <= 0))
    elif rho < 0:
        far = int(np.sum(fin >= 0))
    else:
        far = fin.size
    p = min(1.0, 2.0 * (1 + far) / (1 + fin.size))
    direction = ("increasing" if lo > 0 else "decreasing" if hi < 0 else "no trend detected")
    return TrendResult(rho, lo, hi, p, order_p, n_boot_used=int(fin.size), direction=direction,
                       replicates=tuple(rho_b.tolist()), **base)


def synthetic_checkpoints(steps: Sequence[int], trend_size: float = 0.0, *, n_rows: int = 64,
                          n_boot: int = 200, row_sd: float = 1.0, noise_sd: float = 1.0,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(effects [C], replicates [C, n_boot]) of a planted trend, for calibration and tests.

    Row i at checkpoint c has value trend_size * log1p(step_c) / log1p(max step) + u_i +
    e_ci (u_i ~ N(0, row_sd) shared by every checkpoint - the same text -, e_ci ~ N(0,
    noise_sd)); the effect is the mean over rows and its replicates use ONE weight matrix for
    every checkpoint (the shared bootstrap). trend_size = 0 is the flat null."""
    rng = np.random.default_rng(seed)
    s = np.asarray(steps, dtype=np.float64)
    level = trend_size * np.log1p(s) / np.log1p(max(s.max(), 1.0))
    y = level[:, None] + rng.normal(0, row_sd, n_rows)[None, :] + rng.normal(
        0, noise_sd, (s.size, n_rows))
    w = resample_weights(n_rows, n_boot, rng)
    return y.mean(1), (y @ w.T) / w.sum(1)[None, :]
