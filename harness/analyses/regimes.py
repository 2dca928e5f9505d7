"""Claim 1, "dual regimes": rare tokens recruit a plateau of extra-influential neurons.

Influence curve of a token set: I_j = mean of Delta_j over the set's positions; the boost group
(I > 0) sorted descending (the suppress group by |I|), plotted as ln v against ln r. Regimes are
found three ways, side by side: the paper's fixed boundaries ln r = 3.5 / 5.5, segmented least
squares (1-3 pieces, BIC/AIC), and the original Huber three-piece fit. The test statistic is the
cheap rank-window `plateau_lift` of the rare over the common curve (no fitting), so the
permutation null scales to real models.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from harness.analyses.segmented import compare_segments, huber_three_piece, log_bin
from harness.errors import BadInputError
from harness.stats.accumulate import weighted_sums
from harness.stats.bootstrap import grouped_sums, percentile_ci, resample_weights
from harness.stats.permutation import permutation_pvalue, stratified_permutations
from harness.stats.precondition import LearnedPrecondition
from harness.stats.reliability import split_half_from_groups
from harness.stats.result import TestResult

PAPER_BOUNDS = (3.5, 5.5)  # ln r: plateau / power law / decay (ranks 1-33 / 34-244 / 245+)
PAPER_N_SIGN = 1940  # boost neurons behind the paper's boundaries (P3's 1.7 / 10.9 / 87.4 % split)
SIGNS = ("boost", "suppress")
# Influences at or below this many nats count as zero: they join neither sign group and never
# enter a log-rank curve. ln v amplifies absolute error by 1/v, so without a floor a neuron of
# influence ~1e-8 (float noise) would sit in the curve's tail and move every statistic that
# averages ln v when summation order changes between machines. 1e-6 nats is 10x the closed
# form's per-position error bound (tests/test_kernel_exactness.py) and 100x below the
# smallest influence any claim is about; tests/test_numeric_stability.py shows the pinned
# statistics move by less than their golden tolerance under 1e-6-nat noise on every Delta.
INFLUENCE_FLOOR = 1e-6
MIN_SPEARMAN = 0.5
EFFECT_NAME = "plateau lift (rare vs common, ln units)"
_CHUNK = 32


# ---------------------------------------------------------------- curves

def influence(delta: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean Delta per neuron over the masked positions, float64 [m] (accumulated in float64)."""
    mask = np.asarray(mask, dtype=bool)
    n = int(mask.sum())
    if n == 0:
        raise BadInputError("empty position set: no positions to average influence over")
    return weighted_sums(mask, delta)[0] / n


def _signed(x: np.ndarray, sign: str) -> np.ndarray:
    if sign not in SIGNS:
        raise BadInputError(f"sign must be one of {SIGNS}, got {sign!r}")
    return x if sign == "boost" else -x


def sorted_curve(infl: np.ndarray, sign: str = "boost") -> tuple[np.ndarray, np.ndarray]:
    """(neuron indices, values) of the sign group, most influential first; values above
    INFLUENCE_FLOOR."""
    v = _signed(np.asarray(infl, dtype=np.float64), sign)
    idx = np.flatnonzero(v > INFLUENCE_FLOOR)
    order = np.argsort(-v[idx], kind="stable")
    return idx[order], v[idx][order]


def log_curve(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.log(np.arange(1, v.size + 1, dtype=np.float64)), np.log(v)


def resolve_bounds(n_sign: int, bounds: tuple[float, float] | None = None) -> tuple[float, float]:
    """Fixed ln-r boundaries: the paper's, or for curves shorter than the paper's (~1,940
    neurons) the same boundaries scaled by ln n / ln 1940, so tiny models keep three regimes."""
    if bounds is not None:
        if not 0 < bounds[0] < bounds[1]:
            raise BadInputError(f"bounds must satisfy 0 < low < high, got {bounds}")
        return float(bounds[0]), float(bounds[1])
    f = min(1.0, math.log(max(n_sign, 2)) / math.log(PAPER_N_SIGN))
    return PAPER_BOUNDS[0] * f, PAPER_BOUNDS[1] * f


def rank_window(bounds: tuple[float, float]) -> tuple[int, int]:
    """(r1, r2): plateau = ranks 1..r1 (ln r < b1), power-law fit = ranks r1+1..r2."""
    return int(math.floor(math.exp(bounds[0]))), int(math.floor(math.exp(bounds[1])))


def sorted_log_top(curves: np.ndarray, k: int) -> np.ndarray:
    """ln of the k largest values of each row of `curves` [B, m], descending; NaN where
    <= INFLUENCE_FLOOR."""
    c = np.atleast_2d(np.asarray(curves, dtype=np.float64))
    m = c.shape[1]
    k = min(k, m)
    top = np.partition(c, m - k, axis=1)[:, m - k:] if k < m else c
    top = -np.sort(-top, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.where(top > INFLUENCE_FLOOR, top, np.nan))


def window_excess(curves: np.ndarray, r1: int, r2: int) -> np.ndarray:
    """Paper-window plateau excess of each signed influence vector in `curves` [B, m].

    Power law = OLS of ln v on ln r over ranks r1+1..r2; excess = sum over ranks 1..r1 of
    (ln v - line). Non-positive values are dropped from the fit; NaN when < 3 remain or a plateau
    rank is not positive. Descriptive: a plateau that reaches into the fit window makes the
    line steeper and the excess negative (see `plateau_lift` for the test statistic).
    """
    y = sorted_log_top(curves, r2)
    x = np.log(np.arange(1, y.shape[1] + 1, dtype=np.float64))
    xf, yf = x[r1:], y[:, r1:]
    w = np.isfinite(yf)
    n = w.sum(1)
    y0 = np.where(w, yf, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mx = (w * xf).sum(1) / n
        my = y0.sum(1) / n
        dx = np.where(w, xf - mx[:, None], 0.0)
        slope = (dx * (y0 - my[:, None])).sum(1) / (dx ** 2).sum(1)
        pred = (my - slope * mx)[:, None] + slope[:, None] * x[:r1]
        exc = (y[:, :r1] - pred).sum(1)
    exc[n < 3] = np.nan
    return exc


def plateau_lift(curves_a: np.ndarray, curves_b: np.ndarray, r1: int, r2: int) -> np.ndarray:
    """How much more the top of curve a stands out than the top of curve b (per pair of rows).

    lift = mean over ranks 1..r1 of ln(v_a / v_b) - mean over ranks r1+1..r2 of ln(v_a / v_b),
    each curve sorted on its own. Scale-free (a uniform rescaling of a cancels), 0 when the two
    curves have the same shape, > 0 when a has extra plateau. Why not the difference of the two
    curves' excesses over their own extrapolated power laws: a plateau that reaches into the
    fit window (the paper's plateaus, 30-50 ranks, straddle its rank-33 boundary) steepens the
    fitted line and turns the excess negative; in calibration that difference had power ~0 for
    plateaus of >= r1 neurons. The shared-baseline lift has no fitted slope to corrupt.
    """
    ya, yb = sorted_log_top(curves_a, r2), sorted_log_top(curves_b, r2)
    k = min(ya.shape[1], yb.shape[1])
    ratio = ya[:, :k] - yb[:, :k]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lift = ratio[:, :r1].mean(1) - np.nanmean(ratio[:, r1:], axis=1)
    lift[np.isfinite(ratio[:, r1:]).sum(1) < 3] = np.nan
    return lift


# ---------------------------------------------------------------- regime fits

@dataclass(frozen=True)
class RegimeFit:
    """One regime decomposition of one curve (ln r boundaries; slope = alpha > 0 for decay)."""

    method: str
    n: int
    plateau_size: int  # plateau-regime ranks lying above the backward power-law extrapolation
    plateau_excess: float  # sum over plateau-regime ranks of (ln v - extrapolated line)
    plateau_end: float
    decay_start: float
    slope: float
    intercept: float
    r2: float
    shares: tuple[float, float, float]
    extra: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return (f"{self.method}: plateau {self.plateau_size} ranks (excess {self.plateau_excess:.3g}),"
                f" power law alpha={self.slope:.3f} R2={self.r2:.3f}, decay from ln r="
                f"{self.decay_start:.2f}, shares {tuple(round(s, 3) for s in self.shares)}")

    def to_dict(self) -> dict:
        return asdict(self)


def _regime_fit(method: str, x: np.ndarray, y: np.ndarray, c1: float, c2: float, a: float,
                slope: float, has_plateau: bool, extra: dict) -> RegimeFit:
    n = x.size
    line = a + slope * x
    head = x < c1
    mid = (x >= c1) & (x <= c2)
    resid = y[mid] - line[mid]
    ss = np.sum((y[mid] - y[mid].mean()) ** 2) if mid.sum() > 1 else 0.0
    r2 = float(1 - np.sum(resid ** 2) / ss) if ss > 0 else float("nan")
    size = int(np.sum(y[head] - line[head] > 1e-9)) if has_plateau else 0
    excess = float(np.sum(y[head] - line[head])) if has_plateau else 0.0
    n_head, n_mid = int(head.sum()), int(mid.sum())
    return RegimeFit(method, n, size, excess, float(c1), float(c2), float(-slope), float(a), r2,
                     (n_head / n, n_mid / n, (n - n_head - n_mid) / n), extra)


def fixed_regimes(v: np.ndarray, bounds: tuple[float, float] | None = None) -> RegimeFit:
    """Paper boundaries: power law fitted on ln r in [b1, b2], excess over ranks ln r < b1."""
    x, y = log_curve(v)
    b1, b2 = resolve_bounds(v.size, bounds)
    fit = (x >= b1) & (x <= b2)
    if fit.sum() < 3:
        raise BadInputError(f"only {int(fit.sum())} ranks between ln r = {b1:.2f} and {b2:.2f}")
    slope, a = np.polyfit(x[fit], y[fit], 1)
    return _regime_fit("fixed", x, y, b1, b2, a, slope, True, {"bounds": [b1, b2]})


def segmented_regimes(v: np.ndarray, grid: int = 30) -> RegimeFit:
    """3-piece continuous least squares on the log-binned curve (last e-fold of ranks trimmed:
    there ln v collapses toward -inf and would take every breakpoint); BIC/AIC for 1-3 pieces."""
    x, y = log_curve(v)
    keep = x <= x[-1] - 1.0
    if keep.sum() < 12:
        raise BadInputError(f"{v.size} neurons are too few for a segmented fit")
    xb, yb = log_bin(x[keep], y[keep])
    fits = compare_segments(xb, yb, grid)
    if 3 not in fits:
        raise BadInputError(f"{v.size} neurons are too few for a 3-segment fit")
    three = fits[3]
    best = min(fits, key=lambda k: fits[k].bic)
    has_plateau = three.slopes[0] > three.slopes[1]
    a, slope = three.segment_line(1)
    extra = {"bic": {k: f.bic for k, f in fits.items()}, "aic": {k: f.aic for k, f in fits.items()},
             "bic_best_segments": best, "delta_bic_3_vs_2": fits[3].bic - fits[2].bic,
             "plateau_preferred": bool(best == 3 and has_plateau),
             "fits": {k: f.to_dict() for k, f in fits.items()}}
    return _regime_fit("segmented", x, y, three.breaks[0], three.breaks[1], a, slope, has_plateau,
                       extra)


def huber_regimes(v: np.ndarray, seed: int = 0) -> RegimeFit:
    """The original work's Huber three-piece fit (on the log-binned curve, fixed DE seed)."""
    x, y = log_curve(v)
    xb, yb = log_bin(x, y)
    h = huber_three_piece(xb, yb, seed=seed)
    return _regime_fit("huber", x, y, h.c1, h.c2, h.intercept, h.slope,
                       h.plateau_slope > h.slope, h.to_dict())


def describe_curve(v: np.ndarray, bounds: tuple[float, float] | None = None,
                   huber: bool = True, seed: int = 0) -> dict[str, dict]:
    """All regime fits that the curve can support, as dicts (errors reported, not raised)."""
    out: dict[str, dict] = {}
    fitters = {"fixed": lambda: fixed_regimes(v, bounds), "segmented": lambda: segmented_regimes(v)}
    if huber:
        fitters["huber"] = lambda: huber_regimes(v, seed)
    for name, fn in fitters.items():
        try:
            out[name] = fn().to_dict()
        except BadInputError as err:
            out[name] = {"error": str(err)}
    return out


# ---------------------------------------------------------------- neuron sets

def top_neurons(delta: np.ndarray, mask: np.ndarray, n: int, sign: str = "boost") -> np.ndarray:
    """Indices of the n most influential neurons of the sign group on the masked positions
    (fewer if the group has fewer than n members)."""
    return sorted_curve(influence(delta, mask), sign)[0][:n]


def plateau_neurons(delta: np.ndarray, rare: np.ndarray, sign: str = "boost",
                    method: str = "fixed", max_n: int | None = None,
                    bounds: tuple[float, float] | None = None, seed: int = 0) -> np.ndarray:
    """Indices of the rare curve's plateau-regime neurons, most influential first.

    fixed: ranks with ln r < b1 (paper: the top 33); segmented/huber: ranks before the fitted
    first breakpoint, none if the first piece is not shallower than the power law.
    """
    idx, v = sorted_curve(influence(delta, rare), sign)
    if method == "fixed":
        n = min(rank_window(resolve_bounds(v.size, bounds))[0], v.size)
    elif method in ("segmented", "huber"):
        fit = segmented_regimes(v) if method == "segmented" else huber_regimes(v, seed)
        n = int(np.sum(np.log(np.arange(1, v.size + 1)) < fit.plateau_end)) if (
            fit.plateau_size > 0) else 0
    else:
        raise BadInputError(f"method must be 'fixed', 'segmented' or 'huber', got {method!r}")
    return idx[: n if max_n is None else min(n, max_n)]


# ---------------------------------------------------------------- controls

def batch_means(delta: np.ndarray, index_sets: list[np.ndarray]) -> np.ndarray:
    """Mean Delta over each index set (repeats count) -> [len(sets), m], as chunked GEMMs."""
    out = np.empty((len(index_sets), delta.shape[1]), dtype=np.float64)
    for s in range(0, len(index_sets), _CHUNK):
        sets = index_sets[s:s + _CHUNK]
        w = np.zeros((len(sets), delta.shape[0]), dtype=np.float64)
        for i, ix in enumerate(sets):
            np.add.at(w[i], ix, 1.0 / ix.size)
        out[s:s + len(sets)] = weighted_sums(w, delta)
    return out


def loss_matched(loss: np.ndarray, rare_idx: np.ndarray, common_idx: np.ndarray,
                 rng: np.random.Generator, n_bins: int = 10) -> np.ndarray:
    """Common positions matching the rare positions' loss distribution (same count).

    Bins = quantiles of the rare losses; each bin draws as many common positions as it has rare
    ones, without replacement while it can, then with replacement; an empty bin takes the
    common positions nearest in loss.
    """
    lr, lc = loss[rare_idx], loss[common_idx]
    edges = np.quantile(lr, np.linspace(0, 1, n_bins + 1))[1:-1]
    rb, cb = np.digitize(lr, edges), np.digitize(lc, edges)
    picks = []
    for b in range(n_bins):
        need = int(np.sum(rb == b))
        if need == 0:
            continue
        cand = common_idx[cb == b]
        if cand.size >= need:
            picks.append(rng.choice(cand, need, replace=False))
        elif cand.size:
            picks.append(np.r_[cand, rng.choice(cand, need - cand.size, replace=True)])
        else:
            near = np.argsort(np.abs(lc - np.median(lr[rb == b])))[:need]
            picks.append(common_idx[near])
    return np.concatenate(picks)


def _plot_curve(infl: np.ndarray, sign: str, max_points: int = 300) -> dict:
    """Truncated ln r / ln v points for plotting: every top-100 rank, log-spaced after."""
    _, v = sorted_curve(infl, sign)
    if v.size == 0:
        return {"ln_r": [], "ln_v": []}
    ranks = np.unique(np.r_[np.arange(1, min(100, v.size) + 1),
                            np.geomspace(1, v.size, max_points - 100).astype(int)])
    return {"ln_r": np.log(ranks).tolist(), "ln_v": np.log(v[ranks - 1]).tolist()}


# ---------------------------------------------------------------- the claim test

def _untestable(reason: str, alpha: float, details: dict) -> TestResult:
    nan = float("nan")
    return TestResult("dual_regimes", nan, nan, nan, nan, nan, "untestable",
                      EFFECT_NAME, alpha, {**details, "reason": reason})


def dual_regimes_test(delta: np.ndarray, row: np.ndarray, rare: np.ndarray, common: np.ndarray,
                      loss: np.ndarray, *, sign: str = "boost", alpha: float = 0.05,
                      n_perm: int = 1000, n_boot: int = 500, seed: int = 0,
                      precondition: LearnedPrecondition | None = None, n_rows: int | None = None,
                      bounds: tuple[float, float] | None = None, n_size_draws: int = 200,
                      n_loss_draws: int = 20, describe: bool = True, huber: bool = True
                      ) -> TestResult:
    """Claim 1: the rare-token influence curve has more plateau than the common-token curve.

    H0: rare and common positions are exchangeable within rows, so the rare curve has no more
    plateau than the common curve. Statistic: plateau lift of the rare over the common curve
    (`plateau_lift`: mean log ratio of the two sorted curves over the plateau ranks ln r < b1,
    minus the same over the power-law ranks b1 <= ln r <= b2; b = the paper's 3.5 / 5.5, scaled
    for curves shorter than ~1,940 neurons). Null: rare/common labels permuted within each row
    (keeps each row's rare count, its shared context and the rare sample size, so the
    winner's-curse inflation of the top of a small noisy set is in the null too). Effect: the
    lift with a 95% row-bootstrap CI.

    Decision rule, 'supported' iff all hold:
      1. precondition ok (rare tokens learned: rare loss < ln V), else 'untestable';
      2. split-half Spearman of the rare influence vector >= 0.5 ('unreliable ranking');
      3. permutation p < alpha ('no more plateau than common');
      4. the rare curve lifts above loss-matched common positions: the 95% row-bootstrap CI of
         lift(rare vs loss-matched) lies above 0 ('plateau explained by difficulty').
    Reported, not decided on: size-matched common draws, each curve's paper-window excess, the
    BIC segment comparison and the Huber fit. One test per (model, seed, threshold); correct
    across those with harness.stats.multiple.bh_fdr. `describe=False` skips the segmented/Huber
    fits (calibration loops).
    """
    delta = np.asarray(delta)
    if delta.dtype not in (np.float32, np.float64):
        delta = delta.astype(np.float32)
    row = np.asarray(row, dtype=np.int64)
    rare, common = np.asarray(rare, dtype=bool), np.asarray(common, dtype=bool)
    loss = np.asarray(loss, dtype=np.float64)
    n_pos = delta.shape[0]
    if not (row.shape == rare.shape == common.shape == loss.shape == (n_pos,)):
        raise BadInputError("row, rare, common and loss must all have shape [n_pos] matching delta")
    if np.any(rare & common):
        raise BadInputError("a position is both rare and common; the masks must be disjoint")
    _signed(np.zeros(1), sign)
    n_rows = int(row.max()) + 1 if n_rows is None else n_rows
    n_loss_draws = max(1, min(n_loss_draws, n_boot))
    rng = np.random.default_rng(seed)
    rare_idx, common_idx = np.flatnonzero(rare), np.flatnonzero(common)
    details: dict = {"sign": sign, "n_rare": int(rare_idx.size), "n_common": int(common_idx.size),
                     "n_rows": n_rows, "n_rows_with_rare": int(np.unique(row[rare_idx]).size),
                     "n_neurons": int(delta.shape[1]), "alpha": alpha,
                     "mean_loss_rare": float(loss[rare].mean()) if rare_idx.size else None,
                     "mean_loss_common": float(loss[common].mean()) if common_idx.size else None,
                     "multiple_comparisons": "none within the test; correct across models, "
                                             "seeds and thresholds with BH-FDR"}
    if precondition is not None:
        # an unlearned model is 'untestable', but its numbers are still computed and shown
        details["precondition"] = precondition.to_dict()
    if details["n_rows_with_rare"] < 4 or common_idx.size < rare_idx.size:
        return _untestable(f"too few rare positions ({rare_idx.size} in "
                           f"{details['n_rows_with_rare']} rows) or fewer common than rare "
                           "positions; evaluate more rows or loosen the rarity threshold",
                           alpha, details)

    i_rare, i_common = _signed(influence(delta, rare), sign), _signed(influence(delta, common), sign)
    n_sign = int(min((i_rare > INFLUENCE_FLOOR).sum(), (i_common > INFLUENCE_FLOOR).sum()))
    b = resolve_bounds(n_sign, bounds)
    r1, r2 = rank_window(b)
    details.update(bounds=list(b), plateau_ranks=[1, r1], power_law_ranks=[r1 + 1, r2],
                   n_sign=n_sign)
    if r2 - r1 < 3 or n_sign < r1 + 3:
        return _untestable(f"the {sign} curve has {n_sign} neurons, too few for the rank window "
                           f"{r1}/{r2}", alpha, details)

    def lift(a: np.ndarray, c: np.ndarray) -> np.ndarray:
        return plateau_lift(a, c, r1, r2)

    def excess(curves: np.ndarray) -> np.ndarray:
        return window_excess(curves, r1, r2)

    observed = float(lift(i_rare, i_common)[0])

    # permutation null: labels shuffled within rows among the rare + common positions
    pooled = rare | common
    d_pool = delta if pooled.all() else delta[pooled]
    labels, strata = rare[pooled], row[pooled]
    total = d_pool.sum(0, dtype=np.float64)
    n_r, n_c = int(labels.sum()), int((~labels).sum())
    null = np.empty(n_perm)
    for s in range(0, n_perm, _CHUNK):
        b_n = min(_CHUNK, n_perm - s)
        lab = stratified_permutations(labels, strata, b_n, rng)
        sums = weighted_sums(lab, d_pool)
        null[s:s + b_n] = lift(_signed(sums / n_r, sign), _signed((total - sums) / n_c, sign))
    p_perm = permutation_pvalue(observed, null, "greater")

    # row bootstrap (the same resampled rows for every curve of a replicate)
    s_rare, c_rare = grouped_sums(delta[rare_idx], row[rare_idx], n_rows)
    s_pool, c_pool = grouped_sums(d_pool, strata, n_rows)
    s_common, c_common = s_pool - s_rare, c_pool - c_rare
    w = resample_weights(n_rows, n_boot, rng)

    def boot_curves(s: np.ndarray, c: np.ndarray, ww: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return _signed((ww @ s) / (ww @ c)[:, None], sign)

    boot_rare = boot_curves(s_rare, c_rare, w)
    boot_lift = lift(boot_rare, boot_curves(s_common, c_common, w))
    ci = percentile_ci(boot_lift)

    # size-matched control: common subsampled to the rare count (winner's curse of small sets)
    draws = [rng.choice(common_idx, rare_idx.size, replace=False) for _ in range(n_size_draws)]
    size_curves = _signed(batch_means(delta, draws), sign)
    size_lift = lift(size_curves, np.broadcast_to(i_common, size_curves.shape))
    size_exc = excess(size_curves)
    exc_rare, exc_common = excess(np.stack([i_rare, i_common]))
    details["size_matched"] = {
        "n_draws": n_size_draws, "lift_median": float(np.nanmedian(size_lift)),
        "lift_95": np.nanquantile(size_lift, [0.025, 0.975]).tolist(),
        "frac_lift_ge_rare": float(np.mean(size_lift >= observed)),
        "excess_median": float(np.nanmedian(size_exc)),
        "excess_95": np.nanquantile(size_exc, [0.025, 0.975]).tolist()}

    # loss-matched control decides 'difficulty'; each bootstrap block uses a fresh matched draw
    lm_draws = [loss_matched(loss, rare_idx, common_idx, rng) for _ in range(n_loss_draws)]
    lm_curves = _signed(batch_means(delta, lm_draws), sign)
    lm_lift = lift(np.broadcast_to(i_rare, lm_curves.shape), lm_curves)
    lm_boot = np.empty(n_boot)
    for d, ix in enumerate(lm_draws):
        s_m, c_m = grouped_sums(delta[ix], row[ix], n_rows)
        blk = slice(d, n_boot, n_loss_draws)
        lm_boot[blk] = lift(boot_rare[blk], boot_curves(s_m, c_m, w[blk]))
    lm_ci = percentile_ci(lm_boot)
    top_loss = common_idx[np.argsort(loss[common_idx], kind="stable")[-rare_idx.size:]]
    top_curve = _signed(batch_means(delta, [top_loss]), sign)
    details["loss_matched"] = {
        "method": "loss-quantile bins (10) of the rare losses, same count",
        "n_draws": n_loss_draws,
        "mean_loss_matched": float(np.mean([loss[ix].mean() for ix in lm_draws])),
        "lift_rare_vs_matched": float(np.nanmean(lm_lift)), "ci": list(lm_ci),
        "lift_matched_vs_common": float(np.nanmean(lift(lm_curves, np.broadcast_to(
            i_common, lm_curves.shape)))),
        "excess_median": float(np.nanmedian(excess(lm_curves))),
        "top_loss_lift_vs_common": float(lift(top_curve, i_common)[0]),
        "top_loss_excess": float(excess(top_curve)[0]),
        "mean_loss_top_loss": float(loss[top_loss].mean())}

    rel = split_half_from_groups(_signed(s_rare, sign), c_rare, rng, top_k=r1, sign="boost")
    details.update(
        rare_excess=float(exc_rare), common_excess=float(exc_common),
        permutation={"n_perm": n_perm, "p": p_perm, "null_mean": float(np.nanmean(null)),
                     "null_sd": float(np.nanstd(null)),
                     "null_95": float(np.nanquantile(null, 0.95)),
                     "strata": "rows (labels shuffled within each row)"},
        bootstrap={"n_boot": n_boot, "resampled": "rows", "ci_level": 0.95},
        reliability=rel.to_dict())

    conditions = {"precondition": precondition is None or precondition.ok,
                  "reliable": bool(rel.spearman >= MIN_SPEARMAN),
                  "more_plateau_than_common": bool(p_perm < alpha),
                  "beyond_difficulty": bool(lm_ci[0] > 0)}
    reasons = {"reliable": f"unreliable ranking (split-half Spearman {rel.spearman:.3f} < "
                           f"{MIN_SPEARMAN})",
               "more_plateau_than_common": f"no more plateau than common (permutation "
                                           f"p={p_perm:.3g} >= {alpha})",
               "beyond_difficulty": f"plateau explained by difficulty (lift of rare over "
                                    f"loss-matched common, 95% CI [{lm_ci[0]:.3g}, "
                                    f"{lm_ci[1]:.3g}], does not exclude 0)"}
    failed = [reasons[k] for k, ok in conditions.items() if not ok and k in reasons]
    details["decision"] = {"conditions": conditions, "failed": failed,
                           "rule": "supported iff precondition ok, split-half Spearman >= 0.5, "
                                   "permutation p < alpha, and the CI of the lift of rare over "
                                   "loss-matched common positions lies above 0"}

    details["curves"] = {"rare": _plot_curve(i_rare, "boost"),
                         "common": _plot_curve(i_common, "boost"),
                         "size_matched": _plot_curve(size_curves[0], "boost"),
                         "loss_matched": _plot_curve(lm_curves[0], "boost")}
    if describe:
        _, v_rare = sorted_curve(i_rare, "boost")
        _, v_common = sorted_curve(i_common, "boost")
        details["fits"] = {"rare": describe_curve(v_rare, b, huber, seed),
                           "common": describe_curve(v_common, b, huber, seed)}
        seg = details["fits"]["rare"].get("segmented", {})
        details["bic_plateau_preferred_rare"] = seg.get("extra", {}).get("plateau_preferred")

    verdict = "not supported" if failed else "supported"
    if not conditions["precondition"]:
        verdict = "untestable"
        details["message"] = (f"{precondition.message}. Numbers shown for information only; "
                              f"without the precondition they would read: "
                              f"{'; '.join(failed) or 'supported'}")
    elif failed:
        details["message"] = "; ".join(failed)
    return TestResult("dual_regimes", observed, p_perm, observed, ci[0], ci[1],
                      verdict, EFFECT_NAME, alpha, details)
