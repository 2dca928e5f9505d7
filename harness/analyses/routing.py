"""Claim 3: no attention head preferentially routes rare-token contexts to the plateau neurons.

Input (from `harness.ablation.heads`): for each ablated head h and evaluated position p,
`infl_plateau[h, p]` = P = sum over the plateau neurons of |change of activation| when h is
ablated, and the same sum for equal-size random neuron groups, `infl_random[g, h, p]` (their
mean: R) (methods.md section 7).

Effect measure: one number per head, and the same pairs for the effect, the test and the
intervals (issue 19.5). Each rare position a is paired 1:1 with the nearest common position c
of the same row (rows without a common position drop their rare positions; counts and the
position balance in `details['pairing']`). Then

    s_h = sum over pairs [P(a) / (1 + m_h) - P(c) - k (R(a) - R(c))] / sum over pairs P(c):

the head's extra influence on the plateau in rare contexts, beyond what the random neurons'
change predicts (k) and beyond the typical head (m_h), as a fraction of its plateau influence
in the matched common contexts. Without k and m it is the paper's H_h(rare) / H_h(other) - 1.

Why k and m. Rare positions differ from common ones in more than rarity (higher loss, unusual
residual states), so ablating a head can move neurons more - or less - there for reasons that
are not routing:
(a) every head moves every neuron more at rare positions (difficulty);
(b) one head moves every neuron more at rare positions (it works harder there);
(c) every head moves the *plateau* more at rare positions (a neuron-side change: neurons picked
    for their rare-token role sit in another activation state there; on the trained tiny-gpt2
    a group picked for high activation at rare positions is moved +44% by the typical head).
Measured, not assumed: in the committed SmolLM2 run per-head raw rare/common influence ratios
span 0.5-1.6, while the plateau-to-random ratio of the same heads stays within 8-17 (IQR
10.5-11.3): most of that spread moves every neuron alike. A router - one head pushing the
plateau at rare tokens - is none of (a)-(c), but in a small residual stream its write moves
random neurons too (no direction of a 48-dimensional stream is orthogonal to them, and a write
large enough to matter changes the LayerNorm scale).
- k (`normalise='did'`, the primary): a difference in differences against the random groups at
  the *model's* plateau-to-random ratio k (median over heads of sum P / sum R over the common
  positions). It removes (a) and (b) when they move plateau and random neurons in the model's
  usual proportion, and keeps a router's extra push on the plateau even when the push moves
  random neurons too. Left over from (b): a gain g on a head whose own ratio k_h differs from
  k leaves g (1 - k / k_h); at the SmolLM2 spread <= 0.12 for every head (computed from the
  committed run), below the SESOI.
- m_h (`centre=True`, the primary): the median over the *other* heads of the rare gain of P
  over R, (sum P(a) / sum R(a)) / (sum P(c) / sum R(c)) - 1, divided out of the head's
  rare-position plateau influence. It removes (c) and the rest of (a), and keeps any head (or
  minority of heads, e.g. one layer's) that stands out. It cannot see routing shared by most
  heads - from head ablations alone that is indistinguishable from (c) - so the typical gain
  is reported (`typical_head_gain`).
- Reported beside (`details['alternatives']`, with their would-be verdicts): every other
  combination - 'ratio' (P / R per head and position, the previous default: removes (a) and (b)
  exactly but also the router; issue 20: -0.25 for a hand-wired router in the trained
  tiny-gpt2) and 'none' (raw P), each centred or not, and 'did' uncentred.
Checked on the trained tiny-gpt2 (tests/test_planted_head.py and the development runs behind
it; last-layer or last-two-layer heads, current-token rarity, zero ablation; a random or a
high-activation neuron group): a rewired last-layer head is the only head flagged by the
primary and the unmodified model flags none, while every other combination fails one of these.
k and m are computed per cross-fitting half and again in every bootstrap replicate.

Tests (rows are the unit: positions of one packed sequence share context). Per head, the
rows' sums of paired differences (the effect's numerator, at the estimated k and m) get a
one-sided sign-flip test (the same random signs for every head; exact under exchangeable pairs
when m = 0, a Rademacher wild bootstrap of the row sums otherwise; enough flips that one head
can survive BH over all heads), BH across *all heads passed in* (the family: every ablated
head of the model). Intervals: row bootstrap of s_h.

Decision (harness.verdicts.decide_absent), SESOI = 0.2:
- refuted: some head is significant after BH and its s_h > SESOI (`routing_heads`);
- supported: equivalence over every head at once - the intersection-union test: every head's
  (1 - 2 alpha) bootstrap interval lies inside +-SESOI, i.e. the largest per-head TOST p over
  all heads is < alpha. A level-alpha test of "no head's |s_h| reaches the SESOI" with no
  multiplicity adjustment (Berger 1982: it rejects only when every head's own test does); a
  simultaneous max-|t| band (stricter: it covers every head's s_h at once) is reported beside;
- inconclusive otherwise, and when a validity gate fails (fewer than MIN_ROWS rows hold a pair,
  or the pairs are unbalanced in position: |standardised difference| > MAX_SMD).

Limits: rows are resampled, token types are not; with few rare types, type-specific
differences can reach significance. A strong router also changes the plateau's state at rare
positions, which can flag other heads beside it (`fraction_heads_routing` shows it).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import stats

from harness.errors import BadInputError
from harness.stats.bootstrap import (grouped_sums, percentile_ci, replicate_list,
                                     resample_weights, shared_bootstrap_seed)
from harness.stats.empirical import empirical_p
from harness.stats.inequality import gini
from harness.stats.multiple import bh_fdr
from harness.stats.result import TestResult
from harness.verdicts import Decision, Gate, Sesoi, decide_absent

SESOI = Sesoi(0.2, "relative routing selectivity s_h of the most selective head",
              "a head that moves the plateau 20% more in rare than in matched common contexts "
              "(beyond what random neurons and the typical head predict) is a router worth "
              "naming; smaller differences do not single a head out (the margin preregistered "
              "before this version)")
MIN_ROWS = 10
MAX_SMD = 0.25
NORMALISE = ("did", "ratio", "none")
N_FLIP = 9999
N_BOOT = 1000
NAME = "claim3_no_routing"


# ---------------------------------------------------------------------------------- pairing

def nearest_common(rare_idx: np.ndarray, common_idx: np.ndarray, row: np.ndarray,
                   pos: np.ndarray) -> np.ndarray:
    """Index of the nearest common position in the same row (earlier one on ties; -1 if none)."""
    row, pos = np.asarray(row, np.int64), np.asarray(pos, np.int64)
    span = int(pos.max()) + 1 if pos.size else 1
    ckey = row[common_idx] * span + pos[common_idx]
    order = np.argsort(ckey, kind="stable")
    ckey, cidx = ckey[order], np.asarray(common_idx)[order]
    out = np.full(np.asarray(rare_idx).size, -1, np.int64)
    if cidx.size == 0:
        return out
    k = row[rare_idx] * span + pos[rare_idx]
    at = np.searchsorted(ckey, k)
    before, after = (at - 1).clip(0, cidx.size - 1), at.clip(0, cidx.size - 1)
    r = row[rare_idx]
    ok_b = (at > 0) & (row[cidx[before]] == r)
    ok_a = (at < cidx.size) & (row[cidx[after]] == r)
    dist_b = np.where(ok_b, k - ckey[before], np.iinfo(np.int64).max)
    dist_a = np.where(ok_a, ckey[after] - k, np.iinfo(np.int64).max)
    pick = np.where(dist_b <= dist_a, cidx[before], cidx[after])
    return np.where(ok_b | ok_a, pick, -1)


@dataclass(frozen=True)
class Pairs:
    """1:1 pairs (rare position, nearest common position of the same row).

    `units` are the rows of the analysis (every row holding an evaluated position, sorted);
    `unit[i]` indexes the row of pair i in `units`. Rows without a pair still count as units
    (they add nothing to any sum), so resampling and sign flips act on a fixed set of rows."""

    rare_idx: np.ndarray
    common_idx: np.ndarray
    unit: np.ndarray
    units: np.ndarray
    n_rare: int

    @property
    def n_pairs(self) -> int:
        return int(self.rare_idx.size)

    @property
    def n_rows_paired(self) -> int:
        return int(np.unique(self.unit).size)

    def balance(self, pos: np.ndarray) -> dict:
        """Position balance of the pairs: standardised mean difference and distances."""
        pa, pc = np.asarray(pos)[self.rare_idx], np.asarray(pos)[self.common_idx]
        if pa.size < 2:
            return {"smd_position": float("nan"), "median_distance": float("nan")}
        sd = math.sqrt((pa.var(ddof=1) + pc.var(ddof=1)) / 2)
        smd = float((pa.mean() - pc.mean()) / sd) if sd > 0 else 0.0
        return {"smd_position": smd, "median_distance": float(np.median(np.abs(pa - pc))),
                "mean_position_rare": float(pa.mean()), "mean_position_common": float(pc.mean())}

    def summary(self, pos: np.ndarray) -> dict:
        return {"rule": "each rare position with the nearest common position of its row (1:1; "
                        "the earlier one on ties); rows without a common position drop theirs",
                "n_rare": self.n_rare, "n_pairs": self.n_pairs,
                "n_unpaired": self.n_rare - self.n_pairs,
                "n_rows": int(self.units.size), "n_rows_paired": self.n_rows_paired,
                **self.balance(pos)}


def pair_positions(rare: np.ndarray, common: np.ndarray, row: np.ndarray,
                   pos: np.ndarray) -> Pairs:
    rare, common = np.asarray(rare, bool), np.asarray(common, bool)
    row = np.asarray(row, np.int64)
    ri = np.flatnonzero(rare)
    nc = nearest_common(ri, np.flatnonzero(common), row, pos)
    ok = nc >= 0
    units = np.unique(row)
    return Pairs(rare_idx=ri[ok], common_idx=nc[ok], unit=np.searchsorted(units, row[ri[ok]]),
                 units=units, n_rare=int(ri.size))


# ---------------------------------------------------------------------------- normalisation

def group_influence(delta_act: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """[n_groups, n_heads, n_pos] sums of |delta activation| over each neuron group.

    `delta_act` is HeadAblation.delta_act [n_heads, n_pos, n_neurons]; each group lists column
    indices into its last axis (the plateau group first, then the random groups, typically).
    """
    return np.stack([np.abs(np.asarray(delta_act)[:, :, np.asarray(g)].astype(np.float64))
                     .sum(axis=2) for g in groups])


def model_ratio(p_sum: np.ndarray, r_sum: np.ndarray) -> float:
    """k: median over heads of (plateau influence sum / random-group influence sum)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(r_sum > 0, p_sum / r_sum, np.nan)
    return float(np.nanmedian(ratio)) if np.isfinite(ratio).any() else 0.0


@dataclass(frozen=True)
class Values:
    """Per-position inputs of one normalisation, [n_heads, n_pos] each.

    The paired difference of head h for the pair (a, c) is
        d = A(a) / (1 + m_h) - A(c) - k (R(a) - R(c)),   its denominator A(c),
    with A = plateau influence P ('did', 'none') or P / R ('ratio'), R the mean random-group
    influence ('did' only; else no R term), k the model's plateau-to-random ratio (median over
    heads of sum P / sum R over the common positions) and m_h the typical head's rare gain on
    the ratio scale (when centred, else 0): the median over the *other* heads of
    (sum P(a) / sum R(a)) / (sum P(c) / sum R(c)) - 1 ('did'; sum A(a) / sum A(c) - 1
    otherwise). k and m are computed per cross-fitting half, and again in every bootstrap
    replicate. `plant` ({head: effect}) adds effect x A(c) to that head's differences."""

    normalise: str
    A: np.ndarray
    R: np.ndarray | None
    fold: np.ndarray
    common: np.ndarray
    plant: dict = field(default_factory=dict)


def position_values(infl_plateau: np.ndarray, infl_random: np.ndarray | None, normalise: str,
                    fold: np.ndarray | None = None, common: np.ndarray | None = None) -> Values:
    p = np.asarray(infl_plateau, np.float64)
    fold = np.zeros(p.shape[1], np.int64) if fold is None else np.asarray(fold, np.int64)
    common = np.ones(p.shape[1], bool) if common is None else np.asarray(common, bool)
    if normalise == "none":
        return Values("none", p, None, fold, common)
    r = np.asarray(infl_random, np.float64).mean(axis=0)
    if normalise == "ratio":
        with np.errstate(invalid="ignore", divide="ignore"):
            v = np.where(r > 0, p / r, np.nan)
        return Values("ratio", v, None, fold, common)
    return Values("did", p, r, fold, common)


@dataclass(frozen=True)
class Components:
    """Per-row sums [n_units, n_heads] from which every estimate is assembled: over the pairs,
    A at the rare (Aa) and the common (Ac) position, R likewise (Ra, Rc; 'did'); over every
    common position of the row, P and R (Pk, Rk; 'did', for k). A pair with a non-finite value
    (a 'ratio' with a zero denominator) is left out for that head."""

    Aa: np.ndarray
    Ac: np.ndarray
    Ra: np.ndarray | None
    Rc: np.ndarray | None
    Pk: np.ndarray | None
    Rk: np.ndarray | None
    unit_fold: np.ndarray
    plant: dict


def components(values: Values, pairs: Pairs, row: np.ndarray) -> Components:
    a, c = pairs.rare_idx, pairs.common_idx
    n = pairs.units.size
    aa, ac = values.A[:, a], values.A[:, c]
    ok = np.isfinite(aa) & np.isfinite(ac)
    did = values.R is not None
    if did:
        ra, rc = values.R[:, a], values.R[:, c]
        ok &= np.isfinite(ra) & np.isfinite(rc)
    order = np.argsort(pairs.unit, kind="stable")

    def per_unit(x: np.ndarray, unit: np.ndarray, o: np.ndarray) -> np.ndarray:
        sums, _ = grouped_sums(x.T[o], unit[o], n)
        return sums.reshape(n, -1)

    z = lambda x: np.where(ok, x, 0.0)   # noqa: E731
    unit_of_pos = np.searchsorted(pairs.units, np.asarray(row))
    unit_fold = np.zeros(n, np.int64)
    unit_fold[unit_of_pos] = values.fold
    Pk = Rk = Ra = Rc = None
    if did:
        Ra, Rc = per_unit(z(ra), pairs.unit, order), per_unit(z(rc), pairs.unit, order)
        cm = np.flatnonzero(values.common)
        ou = np.argsort(unit_of_pos[cm], kind="stable")
        Pk = per_unit(values.A[:, cm], unit_of_pos[cm], ou)
        Rk = per_unit(values.R[:, cm], unit_of_pos[cm], ou)
    return Components(per_unit(z(aa), pairs.unit, order), per_unit(z(ac), pairs.unit, order),
                      Ra, Rc, Pk, Rk, unit_fold, dict(values.plant))


def loo_median(g: np.ndarray) -> np.ndarray:
    """Along the last axis, for every entry the median of the *other* finite entries (NaN
    entries get the median of all finite ones; 0 where fewer than two are finite): a head is
    never compared with a reference that contains itself."""
    g = np.asarray(g, np.float64)
    g2 = g.reshape(-1, g.shape[-1])
    srt = np.sort(g2, axis=1)                         # NaN last
    n = np.isfinite(g2).sum(1)[:, None]
    rank = np.argsort(np.argsort(np.where(np.isfinite(g2), g2, np.inf), axis=1, kind="stable"),
                      axis=1, kind="stable")

    def at(j: np.ndarray) -> np.ndarray:
        return np.take_along_axis(srt, np.clip(j, 0, g2.shape[1] - 1), axis=1)

    lo, hi = (n - 2) // 2, (n - 1) // 2               # middle of the n - 1 others
    loo = 0.5 * (at(lo + (lo >= rank)) + at(hi + (hi >= rank)))
    full = 0.5 * (at((n - 1) // 2) + at(n // 2))
    out = np.where(np.isfinite(g2), loo, full)
    out = np.where(n >= 2, out, 0.0)
    return out.reshape(g.shape)


@dataclass(frozen=True)
class Assembled:
    T: np.ndarray        # [n_w, H] numerator totals
    C: np.ndarray        # [n_w, H] denominator totals
    m: dict              # fold -> [n_w, H] the leave-one-out typical gain per head
    m_median: dict       # fold -> [n_w] the plain median over heads (reported)
    k: dict              # fold -> [n_w] ('did')


def assemble(comp: Components, w: np.ndarray, centre: bool) -> Assembled:
    """Totals for row weights w [n_w, n_units] (ones: the estimate; multiplicities: a bootstrap
    replicate), with k and m recomputed from the same weights."""
    w = np.atleast_2d(np.asarray(w, np.float64))
    H = comp.Aa.shape[1]
    T = np.zeros((w.shape[0], H))
    C = np.zeros((w.shape[0], H))
    ms, meds, ks = {}, {}, {}
    for f in np.unique(comp.unit_fold):
        wf = w * (comp.unit_fold == f)[None]
        aa, ac = wf @ comp.Aa, wf @ comp.Ac
        with np.errstate(invalid="ignore", divide="ignore"):
            if comp.Ra is not None:
                ra, rc = wf @ comp.Ra, wf @ comp.Rc
                ratio_k = (wf @ comp.Pk) / (wf @ comp.Rk)
                ratio_k[~np.isfinite(ratio_k)] = np.nan
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    k = np.nanmedian(ratio_k, axis=1)
                k = np.where(np.isfinite(k), k, 0.0)
                g = (aa / ra) / (ac / rc) - 1.0
            else:
                ra = rc = None
                k = np.zeros(w.shape[0])
                g = aa / ac - 1.0
        g[~np.isfinite(g) | (g <= -1)] = np.nan
        m = loo_median(g) if centre else np.zeros_like(g)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            meds[int(f)] = np.nanmedian(g, axis=1) if centre else np.zeros(w.shape[0])
        d = aa / (1.0 + m) - ac
        if ra is not None:
            d -= k[:, None] * (ra - rc)
        T += d
        C += ac
        ms[int(f)], ks[int(f)] = m, k
    for h, effect in comp.plant.items():
        T[:, h] += effect * C[:, h]
    return Assembled(T, C, ms, meds, ks)


def row_differences(comp: Components, point: Assembled) -> np.ndarray:
    """D [n_units, H]: each row's sum of paired differences at the estimate's k and m (what the
    sign flips act on); sums to point.T."""
    D = np.zeros_like(comp.Aa)
    for f, m in point.m.items():
        at = comp.unit_fold == f
        d = comp.Aa[at] / (1.0 + m[0])[None] - comp.Ac[at]
        if comp.Ra is not None:
            d -= point.k[f][0] * (comp.Ra[at] - comp.Rc[at])
        D[at] = d
    for h, effect in comp.plant.items():
        D[:, h] += effect * comp.Ac[:, h]
    return D


# ------------------------------------------------------------------------ per-head statistics

@dataclass(frozen=True)
class Resampling:
    """Sign flips [n_flip, n_units] and bootstrap multiplicities [n_boot, n_units], drawn once
    and shared by every head, every normalisation and every own-data-power replicate."""

    flips: np.ndarray
    boot: np.ndarray

    @classmethod
    def draw(cls, n_units: int, n_flip: int, n_boot: int, rng: np.random.Generator
             ) -> "Resampling":
        flips = rng.integers(0, 2, size=(n_flip, n_units)).astype(np.float64) * 2 - 1
        return cls(flips, resample_weights(n_units, n_boot, rng))


def flips_needed(n_heads: int, fdr_q: float, n_flip: int = N_FLIP) -> int:
    """Enough sign flips that a single head can survive BH over all heads (p_min <= q / H / 2)."""
    return max(n_flip, int(math.ceil(2 * n_heads / fdr_q)))


@dataclass(frozen=True)
class HeadStats:
    s: np.ndarray          # [H] effect (NaN: no plateau influence at the paired commons)
    p: np.ndarray          # [H] one-sided sign-flip p (H1: s > 0)
    p_less: np.ndarray     # [H] one-sided p (H1: s < 0), for reporting negative heads
    lo: np.ndarray         # [H] (1 - 2 alpha) bootstrap interval
    hi: np.ndarray
    ci95: np.ndarray       # [H, 2]
    se: np.ndarray         # [H] bootstrap s.e.
    band: float            # simultaneous max-|t| critical value (1 - 2 alpha)
    z: np.ndarray          # [H] self-normalised sign-flip statistic sum D / sqrt(sum D^2)
    m: dict                # fold -> the typical head's rare gain (plain median; 0 uncentred)
    k: dict                # fold -> k ('did')
    tost_p: np.ndarray     # [H] bootstrap TOST p against +-SESOI (1 where undefined)
    boot: np.ndarray | None = None  # [n_boot, H] row-bootstrap replicates of s (full only)


def head_stats(comp: Components, rs: Resampling, alpha: float, full: bool = True,
               centre: bool = True, sesoi: float = SESOI.value) -> HeadStats:
    """Effect, sign-flip p-values and row-bootstrap intervals for every head at once. The
    sign flips act on the rows' paired-difference sums at the estimated k and m (exact under
    exchangeable pairs when m = 0, a Rademacher wild bootstrap of the row sums otherwise); the
    bootstrap recomputes k and m in every replicate."""
    point = assemble(comp, np.ones((1, comp.Aa.shape[0])), centre)
    T, tot_c = point.T[0], point.C[0]
    D = row_differences(comp, point)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(tot_c > 0, T / tot_c, np.nan)
        z = np.where((D * D).sum(0) > 0, T / np.sqrt((D * D).sum(0)), 0.0)
    null = rs.flips @ D                                   # [n_flip, H]
    tol = 1e-12 * np.maximum(np.abs(T), 1e-300)
    n_flip = rs.flips.shape[0]
    p = (1 + (null >= T - tol).sum(0)) / (n_flip + 1)
    p_less = (1 + (null <= T + tol).sum(0)) / (n_flip + 1) if full else np.full_like(p, np.nan)
    bs = assemble(comp, rs.boot, centre)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = bs.T / bs.C
    boot[~np.isfinite(boot)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN heads -> NaN interval
        lo, hi = np.nanquantile(boot, [alpha, 1 - alpha], axis=0)
        ci95 = np.nanquantile(boot, [0.025, 0.975], axis=0).T if full else np.empty((0, 2))
        se = np.nanstd(boot, axis=0, ddof=1)
        band = float("nan")
        if full:
            ok = np.isfinite(s) & (se > 0)
            if ok.any():
                t = np.abs(boot[:, ok] - s[ok]) / se[ok]
                band = float(np.nanquantile(np.nanmax(t, axis=1), 1 - 2 * alpha))
    few = np.isfinite(boot).sum(0) < 20
    lo[few], hi[few] = np.nan, np.nan
    p = np.where(np.isfinite(s), p, np.nan)
    n_fin = np.isfinite(boot).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tost_p = np.maximum((1 + (boot <= -sesoi).sum(0)) / (1 + n_fin),
                            (1 + (boot >= sesoi).sum(0)) / (1 + n_fin))
    tost_p = np.where(np.isfinite(s) & ~few, tost_p, 1.0)
    return HeadStats(s, p, p_less, lo, hi, ci95, se, band, z,
                     {f: float(v[0]) for f, v in point.m_median.items()},
                     {f: float(v[0]) for f, v in point.k.items()}, tost_p,
                     boot if full else None)


@dataclass(frozen=True)
class Judgement:
    decision: Decision
    significant: np.ndarray    # [H] BH-rejected
    q: np.ndarray
    routing: np.ndarray        # [H] significant and s > SESOI
    equivalent: np.ndarray     # [H] interval inside +-SESOI
    tost_p: np.ndarray         # [H] per-head bootstrap TOST p


def judge(hs: HeadStats, *, n_rows_paired: int, smd: float, fdr_q: float, alpha: float,
          sesoi: float, family: str) -> Judgement:
    rej, q = bh_fdr(hs.p, fdr_q)
    routing = rej & (np.nan_to_num(hs.s, nan=-np.inf) > sesoi)
    equivalent = (hs.lo > -sesoi) & (hs.hi < sesoi)      # NaN -> False
    tost_p = hs.tost_p
    # the estimate decide_absent compares with the SESOI: the largest effect among the
    # significant heads (so 'refuted' needs one head that is both), else the largest overall
    estimate = _nanmax(hs.s[rej]) if rej.any() else _nanmax(hs.s)
    validity = (Gate("enough_rows", n_rows_paired >= MIN_ROWS, float(n_rows_paired),
                     float(MIN_ROWS), f"only {n_rows_paired} rows hold a rare/common pair "
                     f"(need {MIN_ROWS}); evaluate more rows or raise the rarity cutoff"),
                Gate("pairing_balance", bool(np.isfinite(smd) and abs(smd) <= MAX_SMD),
                     float(smd) if np.isfinite(smd) else None, MAX_SMD,
                     f"rare and matched common positions differ in position (standardised "
                     f"difference {smd:.2f}, limit {MAX_SMD})"))
    n_eq, n = int(equivalent.sum()), hs.s.size
    detail = (f"{int(routing.sum())} of {n} heads significant with s > SESOI; "
              f"{int(rej.sum())} significant at BH q={fdr_q:g}; {n_eq} of {n} heads' "
              f"{100 * (1 - 2 * alpha):.0f}% intervals inside +-{sesoi:g}")
    decision = decide_absent(equivalent=bool(n and equivalent.all()),
                             significant=bool(rej.any()),
                             estimate=estimate if np.isfinite(estimate) else -np.inf,
                             sesoi=sesoi, family=family, validity=validity, detail=detail)
    return Judgement(decision, rej, q, routing, equivalent, tost_p)


# ---------------------------------------------------------------------------- the analysis

@dataclass
class RoutingAnalysis:
    """Everything the decision needs, computed once; `result()` and `own_power()` reuse it."""

    infl_plateau: np.ndarray
    infl_random: np.ndarray | None
    rare: np.ndarray
    common: np.ndarray
    row: np.ndarray
    pos: np.ndarray
    heads: list[tuple[int, int]]
    delta_loss: np.ndarray | None = None
    fold: np.ndarray | None = None
    alpha: float = 0.05
    fdr_q: float = 0.05
    sesoi: float = SESOI.value
    n_boot: int = N_BOOT
    n_flip: int = N_FLIP
    seed: int = 0
    normalise: str = "did"
    centre: bool = True
    family: str = ""
    values: dict = field(default_factory=dict)
    pairs: Pairs | None = None
    rs: Resampling | None = None

    def __post_init__(self) -> None:
        self.infl_plateau = np.asarray(self.infl_plateau, np.float64)
        self.rare, self.common = np.asarray(self.rare, bool), np.asarray(self.common, bool)
        self.row, self.pos = np.asarray(self.row, np.int64), np.asarray(self.pos, np.int64)
        _check_inputs(self.infl_plateau, self.infl_random, self.rare, self.common, self.row,
                      self.pos, self.delta_loss, self.heads, self.normalise, self.fold)
        if self.n_boot < 20:
            raise BadInputError(f"n_boot={self.n_boot} is too few for bootstrap intervals; "
                                "use >= 200")
        if not self.sesoi > 0:
            raise BadInputError(f"the SESOI is a fraction of the head's common influence; got "
                                f"{self.sesoi}")
        kinds = NORMALISE if self.infl_random is not None else ("none",)
        self.values = {n: position_values(self.infl_plateau, self.infl_random, n, self.fold,
                                          self.common) for n in kinds}
        self.pairs = pair_positions(self.rare, self.common, self.row, self.pos)
        rng = np.random.default_rng([self.seed, 3])
        self.rs = Resampling.draw(self.pairs.units.size,
                                  flips_needed(len(self.heads), self.fdr_q, self.n_flip),
                                  self.n_boot, rng)
        if not self.family:
            layers = sorted({int(layer) for layer, _ in self.heads})
            self.family = (f"BH at q={self.fdr_q:g} over all {len(self.heads)} ablated heads "
                           f"(layers {layers[0]}-{layers[-1]})" if layers else "no heads")

    # -- one decision on (possibly modified) per-position arrays; own power calls this
    def _judge(self, values: Values, pairs: Pairs, full: bool = True,
               rs: Resampling | None = None, centre: bool | None = None
               ) -> tuple[HeadStats, Judgement]:
        hs = head_stats(components(values, pairs, self.row), rs or self.rs, self.alpha,
                        full=full, centre=self.centre if centre is None else centre,
                        sesoi=self.sesoi)
        jd = judge(hs, n_rows_paired=pairs.n_rows_paired,
                   smd=pairs.balance(self.pos)["smd_position"], fdr_q=self.fdr_q,
                   alpha=self.alpha, sesoi=self.sesoi, family=self.family)
        return hs, jd

    def decide(self) -> tuple[HeadStats, Judgement]:
        """The primary decision only (no reported extras): what calibration runs reuse."""
        return self._judge(self.values[self.normalise], self.pairs, full=False)

    def result(self) -> TestResult:
        pairs = self.pairs
        hs, jd = self._judge(self.values[self.normalise], pairs)
        heads = self.heads
        s = hs.s
        finite = np.isfinite(s)
        focus = int(np.nanargmax(s)) if finite.any() else 0
        rej_lt, q_lt = bh_fdr(hs.p_less, self.fdr_q)
        band_lo = s - hs.band * hs.se
        band_hi = s + hs.band * hs.se
        alt = {}
        for (name, vals), centre in ((nv, c) for nv in self.values.items() for c in (True, False)):
            if (name, centre) == (self.normalise, self.centre):
                continue
            ahs, ajd = self._judge(vals, pairs, full=False, centre=centre)
            alt[name + ("_centred" if centre else "")] = {
                         "s": _floats(ahs.s), "q": _floats(ajd.q),
                         "n_significant": int(ajd.significant.sum()),
                         "n_routing": int(ajd.routing.sum()),
                         "would_be_verdict": ajd.decision.verdict,
                         "max_s": _nanmax(ahs.s),
                         "m": {str(k): v for k, v in ahs.m.items()}}
        per_head = [{"layer": int(heads[h][0]), "head": int(heads[h][1]),
                     "rel_selectivity": _f(s[h]), "ci90": [_f(hs.lo[h]), _f(hs.hi[h])],
                     "ci95": [_f(x) for x in hs.ci95[h]], "se": _f(hs.se[h]),
                     "simultaneous": [_f(band_lo[h]), _f(band_hi[h])],
                     "p": _f(hs.p[h]), "q": _f(jd.q[h]), "significant": bool(jd.significant[h]),
                     "routing": bool(jd.routing[h]), "equivalent": bool(jd.equivalent[h]),
                     "tost_p": _f(jd.tost_p[h]), "q_negative": _f(q_lt[h]),
                     **{f"rel_selectivity_{n}": alt[n]["s"][h] for n in alt}}
                    for h in range(len(heads))]
        sesoi = self.sesoi
        eq_sim = bool(finite.all() and np.isfinite(hs.band) and (band_lo > -sesoi).all()
                      and (band_hi < sesoi).all())
        details: dict = {
            "normalise": self.normalise,
            "normalisation_k": {str(f): v for f, v in hs.k.items()},
            "centred": self.centre,
            "typical_head_gain": {"m": {str(k): v for k, v in hs.m.items()},
                                  "what": "the median head's rare/common gain of plateau over "
                                          "random-group influence (ratio scale, per half), "
                                          "divided out of every head's rare-position plateau "
                                          "influence when centred: a model-wide neuron-side "
                                          "change at rare positions, not routing by a head"},
            "unit": "row (packed sequence)",
            "effect": "s_h = sum over pairs [P(rare) / (1 + m_h) - P(common) - k (R(rare) - "
                      "R(common))] / sum of P(common); P / R: plateau / mean random-group "
                      "influence; k: normalisation_k ('did'; 0 otherwise, with P / R as P for "
                      "'ratio'); m_h: the other heads' median rare gain (centred; else 0)",
            "test": f"one-sided sign-flip randomisation test of the per-row sums of the paired "
                    f"differences (the effect's numerator), {self.rs.flips.shape[0]} flips "
                    "shared by all heads; H1: s > 0",
            "fdr_family": self.family,
            "equivalence": f"intersection-union test over all {len(heads)} heads: every "
                           f"head's {100 * (1 - 2 * self.alpha):.0f}% row-bootstrap interval "
                           f"inside +-{sesoi:g} (level {self.alpha:g} for 'no head reaches "
                           "the SESOI'; no multiplicity adjustment needed)",
            "sesoi": sesoi, "n_boot": self.n_boot, "n_flip": int(self.rs.flips.shape[0]),
            "pairing": pairs.summary(self.pos),
            "n_rows_paired": pairs.n_rows_paired,
            "per_head": per_head,
            "routing_heads": [list(heads[h]) for h in np.flatnonzero(jd.routing)],
            "significant_heads": [list(heads[h]) for h in np.flatnonzero(jd.significant)],
            "negative_heads": [list(heads[h]) for h in np.flatnonzero(rej_lt)],
            "fraction_heads_routing": float(jd.routing.mean()) if len(heads) else 0.0,
            "fraction_heads_significant": float(jd.significant.mean()) if len(heads) else 0.0,
            "n_heads_equivalent": int(jd.equivalent.sum()),
            "equivalence_p": float(np.max(jd.tost_p)) if len(heads) else float("nan"),
            "simultaneous_band": {"critical_value": _f(hs.band), "all_inside": eq_sim,
                                  "rule": f"max-|t| over all heads, row bootstrap, "
                                          f"{100 * (1 - 2 * self.alpha):.0f}% simultaneous"},
            "max_selectivity": _nanmax(s),
            "selectivity_distribution": _quantiles(s[finite]),
            "focus_head": list(heads[focus]),
            "alternatives": alt,
            "concentration": head_concentration(self.infl_plateau, self.rare, self.common,
                                                self.row, min(self.n_boot, 500),
                                                np.random.default_rng([self.seed, 5])),
            "note": "if most heads are flagged, the shift is more likely a neuron-side change "
                    "at rare positions (or one strong router changing the plateau's state) "
                    "than routing by each of those heads",
        }
        if self.infl_random is not None and np.asarray(self.infl_random).shape[0] > 0:
            details["specificity"] = specificity(self.infl_plateau,
                                                 np.asarray(self.infl_random, np.float64),
                                                 self.fdr_q)
        if self.delta_loss is not None:
            details["loss_effect"] = _loss_effects(self.delta_loss, pairs)
        if shared_bootstrap_seed() is not None and hs.boot is not None:  # emergence
            details["effect_replicates"] = replicate_list(hs.boot[:, focus])
            details["effect_replicates_how"] = (
                f"row-bootstrap replicates of s_h of the focus head {list(heads[focus])} (the "
                "head the effect reports; k and m recomputed per replicate; the draws whose "
                "s.e. gives the CI), rows holding the analysed positions resampled in the "
                "order of the shared weight matrix")
        decision = jd.decision
        details["decision"] = decision.to_dict()
        details["message"] = decision.reason
        return TestResult(NAME, float(hs.z[focus]),
                          float(np.nanmin(jd.q)) if np.isfinite(jd.q).any() else float("nan"),
                          _f(s[focus]), _f(band_lo[focus]), _f(band_hi[focus]),
                          decision.verdict,
                          "relative routing selectivity of the most selective head "
                          "(CI: simultaneous band over all heads)", self.alpha, details)

    # -- own-data power (issue 13): plant selectivity into one real head, or shuffle labels
    def own_power(self, reps: int, factors: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0),
                  seed: int = 0, n_boot: int = 400):
        from harness.stats.own_power import own_data_power

        vals = self.values[self.normalise]
        pairs = self.pairs
        rs = Resampling(self.rs.flips, self.rs.boot[:n_boot])
        den_c = vals.A[:, pairs.common_idx]
        ok_heads = np.flatnonzero(np.isfinite(den_c).all(1) & (np.nansum(den_c, 1) > 0))
        if ok_heads.size == 0:
            ok_heads = np.arange(len(self.heads))
        grouped = _row_groups(self.row, self.rare | self.common)

        def decide(data) -> str:
            v, pr = data
            return self._judge(v, pr, full=False, rs=rs)[1].decision.verdict

        def null(rng):
            rare = _shuffle_within_rows(self.rare, grouped, rng)
            common = (self.rare | self.common) & ~rare
            return (replace(vals, common=common),
                    pair_positions(rare, common, self.row, self.pos))

        def plant(rng, effect):
            v, pr = null(rng)          # planted into a label-shuffled copy: a known effect
            h = int(rng.choice(ok_heads))
            return replace(v, plant={h: effect}), pr

        return own_data_power(decide, plant, null, sesoi=self.sesoi, detect="refuted",
                              reps=reps, factors=factors, seed=seed,
                              how=(f"null: rare/common labels shuffled within rows and "
                                   f"re-paired; plant: on such a shuffled copy, extra "
                                   f"selectivity (factor x SESOI) added to one real head "
                                   f"(drawn per replicate): its paired differences gain effect "
                                   f"x its plateau influence at the matched commons; "
                                   f"the full rule ({self.normalise}, BH over "
                                   f"{len(self.heads)} heads, IUT equivalence) with the same "
                                   f"{self.rs.flips.shape[0]} sign flips and {n_boot} "
                                   f"bootstrap draws (the verdict uses {self.n_boot})"))


def no_routing_test(infl_plateau: np.ndarray, infl_random: np.ndarray | None,
                    rare: np.ndarray, common: np.ndarray, row: np.ndarray, pos: np.ndarray,
                    delta_loss: np.ndarray | None, heads: list[tuple[int, int]], *,
                    alpha: float = 0.05, fdr_q: float = 0.05, sesoi: float | None = None,
                    n_boot: int = N_BOOT, n_flip: int = N_FLIP, seed: int = 0,
                    normalise: str = "did", fold: np.ndarray | None = None) -> TestResult:
    """Claim 3 as a test (see the module docstring for the effect, tests and decision)."""
    return RoutingAnalysis(infl_plateau, infl_random, rare, common, row, pos, heads,
                           delta_loss=delta_loss, fold=fold, alpha=alpha, fdr_q=fdr_q,
                           sesoi=SESOI.value if sesoi is None else float(sesoi),
                           n_boot=n_boot, n_flip=n_flip, seed=seed,
                           normalise=normalise).result()


def _row_groups(row: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    idx = np.flatnonzero(mask)
    r = row[idx]
    order = np.argsort(r, kind="stable")
    idx, r = idx[order], r[order]
    cuts = np.flatnonzero(np.diff(r)) + 1
    return [g for g in np.split(idx, cuts) if g.size > 1]


def _shuffle_within_rows(rare: np.ndarray, groups: list[np.ndarray],
                         rng: np.random.Generator) -> np.ndarray:
    out = rare.copy()
    for g in groups:
        out[g] = rare[rng.permutation(g)]
    return out


# ---------------------------------------------------------------------- reported summaries

def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x, axis=-1), axis=-1).astype(np.float64)


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))


def _rowwise_gini(x: np.ndarray) -> np.ndarray:
    v = np.sort(np.clip(x, 0, None), axis=-1)
    n = v.shape[-1]
    tot = v.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = 2.0 * (v * np.arange(1, n + 1)).sum(-1) / (n * tot) - (n + 1.0) / n
    return np.where(tot > 0, g, 0.0)


def head_concentration(infl_plateau: np.ndarray, rare: np.ndarray, common: np.ndarray,
                       row: np.ndarray, n_boot: int, rng: np.random.Generator) -> dict:
    """Gini of per-head influence (rare, common) and their rare/common correlation, with row CIs.

    P2 summarises head importance by Gini and says rare and common head profiles are highly
    correlated; the intervals resample rows.
    """
    rows, r_local = np.unique(np.asarray(row), return_inverse=True)
    s_r, _ = grouped_sums(np.where(rare, infl_plateau, 0.0).T, r_local, rows.size)
    s_c, _ = grouped_sums(np.where(common, infl_plateau, 0.0).T, r_local, rows.size)
    n_r, _ = grouped_sums(rare.astype(np.float64), r_local, rows.size)
    n_c, _ = grouped_sums(common.astype(np.float64), r_local, rows.size)
    s_r, s_c = s_r.reshape(rows.size, -1), s_c.reshape(rows.size, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        point_r, point_c = s_r.sum(0) / n_r.sum(), s_c.sum(0) / n_c.sum()
    w = resample_weights(rows.size, n_boot, rng)
    with np.errstate(invalid="ignore", divide="ignore"):
        b_r, b_c = (w @ s_r) / (w @ n_r)[:, None], (w @ s_c) / (w @ n_c)[:, None]

    def summary(point: float, boot: np.ndarray) -> dict:
        lo, hi = percentile_ci(boot)
        return {"estimate": float(point), "ci95": [lo, hi]}

    return {
        "per_head_rare": point_r.tolist(), "per_head_common": point_c.tolist(),
        "gini_rare": summary(gini(point_r), _rowwise_gini(b_r)),
        "gini_common": summary(gini(point_c), _rowwise_gini(b_c)),
        "pearson_rare_common": summary(_rowwise_pearson(point_r, point_c),
                                       _rowwise_pearson(b_r, b_c)),
        "spearman_rare_common": summary(_rowwise_pearson(_ranks(point_r), _ranks(point_c)),
                                        _rowwise_pearson(_ranks(b_r), _ranks(b_c))),
    }


def specificity(infl_plateau: np.ndarray, infl_random: np.ndarray, fdr_q: float) -> dict:
    """Are plateau neurons moved more than random equal-size groups by the same head?

    Per head: ratio = mean plateau influence / mean random-group influence over all evaluated
    positions; empirical p = rank of the plateau group among the random groups; BH over heads.
    The smallest attainable p is 1 / (n_groups + 1): pass >= 40 groups for a usable test.
    """
    p_mean = infl_plateau.mean(axis=1)
    g_mean = infl_random.mean(axis=2)                    # [n_groups, n_heads]
    with np.errstate(invalid="ignore", divide="ignore"):  # a head that moves nothing: NaN
        ratio = p_mean / g_mean.mean(axis=0)
    pvals = np.array([empirical_p(p_mean[h], g_mean[:, h]) for h in range(p_mean.size)])
    rejected, qvals = bh_fdr(pvals, fdr_q)
    tot_p, tot_g = p_mean.sum(), g_mean.sum(axis=1)
    return {"ratio": ratio.tolist(), "p": pvals.tolist(), "q": qvals.tolist(),
            "n_heads_specific": int(rejected.sum()),
            "median_ratio": float(np.nanmedian(ratio)) if np.isfinite(ratio).any() else None,
            "all_heads_ratio": float(tot_p / tot_g.mean()),
            "all_heads_p": empirical_p(tot_p, tot_g),
            "n_groups": int(infl_random.shape[0]),
            "min_attainable_p": 1.0 / (infl_random.shape[0] + 1)}


def _loss_effects(delta_loss: np.ndarray, pairs: Pairs) -> dict:
    """Per-head mean loss change at the paired rare positions and at their common partners."""
    dl = np.asarray(delta_loss, np.float64)
    rare = dl[:, pairs.rare_idx].mean(1) if pairs.n_pairs else np.full(dl.shape[0], np.nan)
    common = dl[:, pairs.common_idx].mean(1) if pairs.n_pairs else np.full(dl.shape[0], np.nan)
    finite = np.isfinite(rare) & np.isfinite(common)
    rho = (float(stats.spearmanr(rare[finite], common[finite]).statistic)
           if finite.sum() > 2 else float("nan"))
    return {"rare": _floats(rare), "common_matched": _floats(common),
            "spearman_rare_common": rho}


def _f(x) -> float:
    return float(x) if x is not None and np.isfinite(x) else float("nan")


def _floats(a: np.ndarray) -> list[float]:
    return [_f(x) for x in np.asarray(a, np.float64)]


def _nanmax(a: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    return float(np.nanmax(a)) if np.isfinite(a).any() else float("nan")


def _quantiles(x: np.ndarray) -> dict:
    if x.size == 0:
        return {}
    q = np.quantile(x, [0.0, 0.25, 0.5, 0.75, 1.0])
    return dict(zip(("min", "q25", "median", "q75", "max"), map(float, q)))


def _check_inputs(infl_plateau, infl_random, rare, common, row, pos, delta_loss, heads,
                  normalise, fold) -> None:
    if normalise not in NORMALISE:
        raise BadInputError(f"normalise must be one of {NORMALISE}, got {normalise!r}")
    if infl_plateau.ndim != 2:
        raise BadInputError(f"infl_plateau must be [n_heads, n_pos], got {infl_plateau.shape}")
    n_heads, n_pos = infl_plateau.shape
    if len(heads) != n_heads:
        raise BadInputError(f"{len(heads)} head labels for {n_heads} heads of influence")
    for nm, a in (("rare", rare), ("common", common), ("row", row), ("pos", pos)):
        if a.shape != (n_pos,):
            raise BadInputError(f"{nm} must have shape ({n_pos},), got {a.shape}")
    if np.any(rare & common):
        raise BadInputError("a position is both rare and common; the masks must be disjoint")
    if normalise != "none" and (infl_random is None or np.asarray(infl_random).shape[0] == 0):
        raise BadInputError(f"normalise={normalise!r} needs infl_random with >= 1 random "
                            "group; pass random groups or normalise='none'")
    if infl_random is not None and np.asarray(infl_random).shape[1:] != (n_heads, n_pos):
        raise BadInputError(f"infl_random must be [n_groups, {n_heads}, {n_pos}], got "
                            f"{np.asarray(infl_random).shape}")
    if delta_loss is not None and np.asarray(delta_loss).shape != (n_heads, n_pos):
        raise BadInputError(f"delta_loss must be [{n_heads}, {n_pos}], got "
                            f"{np.asarray(delta_loss).shape}")
    if fold is not None:
        fold = np.asarray(fold)
        if fold.shape != (n_pos,):
            raise BadInputError(f"fold must have shape ({n_pos},), got {fold.shape}")
        rf = np.unique(np.c_[row, fold], axis=0)
        if np.unique(rf[:, 0]).size != rf.shape[0]:
            raise BadInputError("every row must lie in one cross-fitting fold")
