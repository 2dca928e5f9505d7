"""Claim 3: no attention head preferentially routes rare-token contexts to the plateau neurons.

Input (from `harness.ablation.heads`): for each ablated head h and kept position p,
`infl_plateau[h, p]` = sum over plateau neurons of |delta activation| and the same sum for
equal-size random neuron groups, `infl_random[g, h, p]` (methods.md section 7).

Why a specificity normalisation (default `normalise='random'`): rare targets are harder (higher
loss, larger residual perturbations), so ablating *any* head may move *every* neuron more at
rare positions. Raw selectivity would call that routing for every head. Dividing the plateau
influence at each position by the mean random-group influence of the same head at the same
position cancels any per-position gain shared by all neurons, leaving only what is special to
the plateau neurons. With `normalise='none'` the test compares raw influence (the original
work's H_h(rare) - H_h(other)) and does call such a shared gain routing; see
`reports/calibration/claim3.md`.

Why matching: influence varies with position in the sequence and with the row's content, and
rare tokens are not spread evenly over either. Each rare position is compared with the mean of
the common positions of the same row within +-`window` positions (default 16); when the row has
none there, with that window over all rows; otherwise it is dropped (counts in
`details['matching']`). The rank test uses 1:1 pairs instead (the nearest common position of
the same row), see `paired_rows`.

Limits (seen on the hand-wired model of `planted_head.py`): the normalisation assumes the
shared gain is multiplicative. A head whose *only* effect is a routed write moves random
neurons at second order (through LayerNorm), so its normalised selectivity can even turn
negative; heads that also do ordinary work (all real heads) are fine. A strong routed write can
also make the plateau more sensitive to every other head at rare positions (LayerNorm scale,
activation slope), which flags those heads too; `fraction_heads_routing` shows that pattern.
Rows are resampled, token types are not: with few rare types, real but type-specific
differences (e.g. in embedding norm, hence LayerNorm scale) can reach significance.

Why rows: positions of one packed sequence share context. The paired test (one-sided Wilcoxon
signed-rank, H1: selectivity > 0) runs on per-row means of the paired differences and the
intervals resample rows. The family corrected by Benjamini-Hochberg is all heads passed in.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import sparse, stats

from harness.errors import BadInputError
from harness.stats.bootstrap import grouped_sums, percentile_ci, resample_weights
from harness.stats.empirical import empirical_p
from harness.stats.equivalence import tost_bootstrap
from harness.stats.inequality import gini
from harness.stats.multiple import bh_fdr
from harness.stats.result import TestResult

WINDOW = 16
DEFAULT_MARGIN = 0.2
DEFAULT_TOP_K = 5
MIN_ROWS = 10
NORMALISE = ("random", "none")


@dataclass(frozen=True)
class Matching:
    """Rare positions kept for pairing and, for each, the common positions it is compared with.

    `refs` is a 0/1 sparse matrix [n_matched, n_pos]: row i marks the reference common positions
    of rare position `rare_idx[i]` (their mean is the reference value); `same_row[i]` says
    whether they share its row. `nearest[i]` is the one nearest common position of the same
    row (-1 if the row has none): the 1:1 pair the rank test uses.
    """

    rare_idx: np.ndarray
    refs: sparse.csr_matrix
    same_row: np.ndarray
    nearest: np.ndarray
    n_unmatched: int
    window: int

    def summary(self) -> dict:
        return {"rule": f"common positions of the same row within +-{self.window} positions; "
                        "if none, within +-window over all rows; else dropped",
                "n_rare_matched": int(self.rare_idx.size),
                "n_same_row": int(self.same_row.sum()),
                "n_all_rows_fallback": int((~self.same_row).sum()),
                "n_unmatched": self.n_unmatched,
                "mean_refs_per_rare": float(self.refs.sum(axis=1).mean()) if self.rare_idx.size
                else float("nan"),
                "rank_test_pairs": "1:1, nearest common position in the same row",
                "n_rank_pairs": int((self.nearest >= 0).sum())}


def _window_hits(ckey: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, ...]:
    """For sorted keys and query ranges [lo, hi]: (query id, key index) of every hit."""
    start = np.searchsorted(ckey, lo, side="left")
    stop = np.searchsorted(ckey, hi, side="right")
    n = stop - start
    q = np.repeat(np.arange(lo.size), n)
    offs = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    return q, np.repeat(start, n) + offs, n


def match_common(rare: np.ndarray, common: np.ndarray, row: np.ndarray, pos: np.ndarray,
                 window: int = WINDOW) -> Matching:
    """Pair every rare position with the common positions of its row within +-`window`.

    A centred window rather than fixed buckets: the references' mean position then sits on the
    rare position (up to sequence edges), so a smooth position trend in influence cancels.
    Rows with no common position in the window fall back to that window over all rows.
    """
    rare, common = np.asarray(rare, bool), np.asarray(common, bool)
    row, pos = np.asarray(row, np.int64), np.asarray(pos, np.int64)
    n_pos = rare.size
    span = int(pos.max()) + 2 * window + 1 if pos.size else 1
    ci, ri = np.flatnonzero(common), np.flatnonzero(rare)
    # same row: keys row * span + pos
    ckey = row[ci] * span + pos[ci]
    o = np.argsort(ckey, kind="stable")
    ckey, c_sorted = ckey[o], ci[o]
    k = row[ri] * span + pos[ri]
    q1, j1, n1 = _window_hits(ckey, k - window, k + window)
    # all rows: keys pos
    o2 = np.argsort(pos[ci], kind="stable")
    pkey, c_by_pos = pos[ci][o2], ci[o2]
    fb = n1 == 0
    q2, j2, n2 = _window_hits(pkey, pos[ri[fb]] - window, pos[ri[fb]] + window)
    fb_ids = np.flatnonzero(fb)
    rows_q = np.r_[q1, fb_ids[q2]]
    cols = np.r_[c_sorted[j1], c_by_pos[j2]]
    refs = sparse.csr_matrix((np.ones(cols.size), (rows_q, cols)), shape=(ri.size, n_pos))
    matched = n1 > 0
    matched[fb_ids] = n2 > 0
    kept = ri[matched]
    return Matching(rare_idx=kept, refs=refs[np.flatnonzero(matched)],
                    same_row=(n1 > 0)[matched], nearest=nearest_common(kept, ci, row, pos),
                    n_unmatched=int((~matched).sum()), window=window)


def nearest_common(rare_idx: np.ndarray, common_idx: np.ndarray, row: np.ndarray,
                   pos: np.ndarray) -> np.ndarray:
    """Index of the nearest common position in the same row (earlier one on ties; -1 if none)."""
    span = int(pos.max()) + 1 if pos.size else 1
    ckey = row[common_idx] * span + pos[common_idx]       
    order = np.argsort(ckey, kind="stable")
    ckey, cidx = ckey[order], common_idx[order]
    out = np.full(rare_idx.size, -1, np.int64)
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
class PairedRows:
    """Per-row sums over matched rare positions, per head ([n_rows, n_heads] each)."""

    rows: np.ndarray       # row ids that hold at least one matched rare position
    diff: np.ndarray       # sum of (rare value - reference mean)
    ref: np.ndarray        # sum of reference means
    count: np.ndarray      # number of positions with a finite difference
    diff1: np.ndarray      # sum of (rare value - nearest common value), the 1:1 pairs
    count1: np.ndarray     # number of finite 1:1 differences


def paired_rows(values: np.ndarray, m: Matching, row: np.ndarray) -> PairedRows:
    """Rare-minus-matched-reference differences of `values` [n_heads, n_pos], summed per row.

    NaN values (e.g. a normalised influence with zero denominator) are left out of both the
    rare value and the reference mean, head by head. The 1:1 differences exist because a rank
    test needs differences that are symmetric under the null: a single rare value minus a mean
    of many common values is skewed whenever influence is (it always is), while two
    exchangeable single values give a symmetric difference.
    """
    fin = np.isfinite(values)
    vz = np.where(fin, values, 0.0)
    ref_sum = (m.refs @ vz.T)                      # [n_matched, n_heads]
    ref_n = (m.refs @ fin.T.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = ref_sum / ref_n
    rare_v = values[:, m.rare_idx].T
    d = rare_v - ref
    ok = np.isfinite(d)
    r = np.asarray(row)[m.rare_idx]
    rows, r_local = np.unique(r, return_inverse=True)
    n = rows.size
    diff, _ = grouped_sums(np.where(ok, d, 0.0), r_local, n)
    refs, _ = grouped_sums(np.where(ok, ref, 0.0), r_local, n)
    count, _ = grouped_sums(ok.astype(np.float64), r_local, n)
    has = m.nearest >= 0
    d1 = np.full_like(d, np.nan)
    d1[has] = rare_v[has] - values[:, m.nearest[has]].T
    ok1 = np.isfinite(d1)
    diff1, _ = grouped_sums(np.where(ok1, d1, 0.0), r_local, n)
    count1, _ = grouped_sums(ok1.astype(np.float64), r_local, n)
    return PairedRows(rows=rows, diff=diff.reshape(n, -1), ref=refs.reshape(n, -1),
                      count=count.reshape(n, -1), diff1=diff1.reshape(n, -1),
                      count1=count1.reshape(n, -1))


def group_influence(delta_act: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """[n_groups, n_heads, n_pos] sums of |delta activation| over each neuron group.

    `delta_act` is HeadAblation.delta_act [n_heads, n_pos, n_neurons]; each group lists column
    indices into its last axis (the plateau group first, then the random groups, typically).
    """
    a = np.abs(np.asarray(delta_act, np.float64))
    return np.stack([a[:, :, np.asarray(g)].sum(axis=2) for g in groups])


def normalised_influence(infl_plateau: np.ndarray, infl_random: np.ndarray | None,
                         normalise: str) -> np.ndarray:
    """Plateau influence per unit of random-group influence (same head, same position)."""
    if normalise == "none":
        return np.asarray(infl_plateau, np.float64)
    denom = np.asarray(infl_random, np.float64).mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, infl_plateau / denom, np.nan)


def _wilcoxon_one_sided(pr: PairedRows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per head: Wilcoxon statistic, one-sided p (greater) and p (less) on per-row means of the
    1:1 differences. Heads with fewer than MIN_ROWS non-zero row means get NaN (never rejected).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        x = pr.diff1 / pr.count1                     # NaN where a row has no finite pair
    n_heads = x.shape[1]
    stat, p_gt, p_lt = (np.full(n_heads, np.nan) for _ in range(3))
    enough = (np.isfinite(x) & (x != 0)).sum(axis=0) >= MIN_ROWS
    dense = enough & np.isfinite(x).all(axis=0)
    if dense.any():  # one vectorised call for the usual case (no missing rows)
        gt = stats.wilcoxon(x[:, dense], alternative="greater", axis=0)
        stat[dense], p_gt[dense] = gt.statistic, gt.pvalue
        p_lt[dense] = stats.wilcoxon(x[:, dense], alternative="less", axis=0).pvalue
    for h in np.flatnonzero(enough & ~dense):
        xh = x[np.isfinite(x[:, h]), h]
        gt = stats.wilcoxon(xh, alternative="greater")
        stat[h], p_gt[h] = gt.statistic, gt.pvalue
        p_lt[h] = stats.wilcoxon(xh, alternative="less").pvalue
    return stat, p_gt, p_lt


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

    Per head: ratio = mean plateau influence / mean random-group influence over all kept
    positions; empirical p = rank of the plateau group among the random groups (groups are
    exchangeable with the plateau under 'plateau neurons are ordinary neurons'); BH over heads.
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
            "n_heads_specific": int(rejected.sum()), "median_ratio": float(np.nanmedian(ratio)) if np.isfinite(ratio).any() else None,
            "all_heads_ratio": float(tot_p / tot_g.mean()),
            "all_heads_p": empirical_p(tot_p, tot_g),
            "n_groups": int(infl_random.shape[0]),
            "min_attainable_p": 1.0 / (infl_random.shape[0] + 1)}


def _loss_effects(delta_loss: np.ndarray, m: Matching, row: np.ndarray) -> dict:
    """Per-head mean loss change at matched rare positions vs their common references."""
    pr = paired_rows(np.asarray(delta_loss, np.float64), m, row)
    n = pr.count.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        common = pr.ref.sum(0) / n
        rare = common + pr.diff.sum(0) / n
    finite = np.isfinite(rare) & np.isfinite(common)
    rho = (float(stats.spearmanr(rare[finite], common[finite]).statistic)
           if finite.sum() > 2 else float("nan"))
    return {"rare": rare.tolist(), "common_matched": common.tolist(),
            "spearman_rare_common": rho}


def no_routing_test(infl_plateau: np.ndarray, infl_random: np.ndarray | None,
                    rare: np.ndarray, common: np.ndarray, row: np.ndarray, pos: np.ndarray,
                    delta_loss: np.ndarray | None, heads: list[tuple[int, int]], *,
                    alpha: float = 0.05, fdr_q: float = 0.05, margin: float | None = None,
                    n_boot: int = 500, seed: int = 0, top_k: int = DEFAULT_TOP_K,
                    window: int = WINDOW, normalise: str = "random") -> TestResult:
    """Claim 3 as a test: no head has positive rare-vs-matched-common selectivity.

    Selectivity of head h = mean over matched rare positions of (influence at the rare position
    - mean influence at its matched common positions); influence is normalised by the random
    groups unless `normalise='none'`. Relative selectivity divides by the head's mean matched
    common influence, so a head whose effect on the plateau is (1 + s) times larger in rare
    contexts has relative selectivity s.

    Decision:
    - 'not supported' (routing): some head's one-sided Wilcoxon p survives BH at `fdr_q`
      across all heads; `details['routing_heads']` names them.
    - 'supported': no such head AND every one of the `top_k` heads with the largest raw plateau
      influence on common contexts has its (1 - 2 alpha) row-bootstrap interval of relative
      selectivity inside [-margin, +margin] (TOST by bootstrap interval inclusion).
    - otherwise 'not supported' with `details['inconclusive'] = True` (no routing found, but
      the data cannot bound it).
    - 'untestable' when fewer than MIN_ROWS rows hold a matched rare position.
    Significance is not size: with many rows a head can be significantly positive yet inside
    the margin; `details['routing_heads_beyond_margin']` lists the routing heads whose
    estimate also exceeds the margin.

    Why margin = 0.2 by default: a head whose influence on the plateau in rare contexts is
    within 20% of its influence elsewhere does not route preferentially in any useful sense
    (the original work looked for heads that stand out); 20% is also about the smallest shift
    the row bootstrap resolves with ~60 rows holding ~250 rare positions (calibration note),
    so a tighter default would make the claim untestable at realistic sizes.
    """
    infl_plateau = np.asarray(infl_plateau, np.float64)
    rare, common = np.asarray(rare, bool), np.asarray(common, bool)
    row, pos = np.asarray(row, np.int64), np.asarray(pos, np.int64)
    _check_inputs(infl_plateau, infl_random, rare, common, row, pos, delta_loss, heads,
                  normalise)
    margin = DEFAULT_MARGIN if margin is None else float(margin)
    if n_boot < 20:
        raise BadInputError(f"n_boot={n_boot} is too few for bootstrap intervals; use >= 200")
    if not margin > 0:
        raise BadInputError(f"margin is a fraction of the head's common influence; got {margin}")
    if normalise == "random" and (infl_random is None or np.asarray(infl_random).shape[0] == 0):
        raise BadInputError("normalise='random' needs infl_random with >= 1 random group; "
                            "pass random groups or normalise='none'")
    rng = np.random.default_rng(seed)
    name = "claim3_no_routing"
    m = match_common(rare, common, row, pos, window)
    values = normalised_influence(infl_plateau, infl_random, normalise)
    pr = paired_rows(values, m, row)
    details: dict = {"normalise": normalise, "window": window, "matching": m.summary(),
                     "unit": "row (packed sequence)", "test": "one-sided Wilcoxon signed-rank "
                     "on per-row means of 1:1 paired differences (nearest common position of "
                     "the same row), H1: selectivity > 0; effect and CI from the window means",
                     "fdr_family": f"all {len(heads)} heads passed in (BH at q={fdr_q})",
                     "equivalence": f"{100 * (1 - 2 * alpha):.0f}% row-bootstrap interval of "
                     f"relative selectivity inside +-{margin} for the top-{top_k} heads by "
                     "common-context plateau influence", "margin": margin,
                     "n_rows_paired": int(pr.rows.size), "n_boot": n_boot}
    if pr.rows.size < MIN_ROWS:
        details["reason"] = (f"only {pr.rows.size} rows hold a matched rare position "
                             f"(need {MIN_ROWS}); evaluate more rows or loosen the rarity cutoff")
        return TestResult(name, float("nan"), float("nan"), float("nan"), float("nan"),
                          float("nan"), "untestable", "relative selectivity", alpha, details)

    n = pr.count.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sel = pr.diff.sum(0) / n
        rel = sel / (pr.ref.sum(0) / n)
        w = resample_weights(pr.rows.size, n_boot, rng)
        wn = w @ pr.count
        rel_boot = (w @ pr.diff / wn) / (w @ pr.ref / wn)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN heads -> NaN interval
        ci95 = np.nanquantile(rel_boot, [0.025, 0.975], axis=0).T.tolist()
    stat, p_gt, p_lt = _wilcoxon_one_sided(pr)
    rej, qv = bh_fdr(p_gt, fdr_q)
    rej_lt, qv_lt = bh_fdr(p_lt, fdr_q)

    common_infl = infl_plateau[:, common].mean(axis=1)
    top = np.argsort(-common_infl, kind="stable")[:top_k]
    tost = {int(h): _tost(rel[h], rel_boot[:, h], margin, alpha) for h in top}
    equivalent = [t["equivalent"] for t in tost.values()]
    routing = [list(heads[h]) for h in np.flatnonzero(rej)]
    per_head = [{"layer": int(heads[h][0]), "head": int(heads[h][1]),
                 "selectivity": float(sel[h]), "rel_selectivity": float(rel[h]),
                 "ci95": list(ci95[h]), "tost": tost.get(h),
                 "wilcoxon": float(stat[h]), "p": float(p_gt[h]), "q": float(qv[h]),
                 "routing": bool(rej[h]), "q_negative": float(qv_lt[h]),
                 "common_influence": float(common_infl[h])} for h in range(len(heads))]
    finite_rel = rel[np.isfinite(rel)]
    details.update({
        "per_head": per_head,
        "routing_heads": routing,
        "routing_heads_beyond_margin": [list(heads[h]) for h in np.flatnonzero(rej)
                                        if rel[h] > margin],
        "negative_heads": [list(heads[h]) for h in np.flatnonzero(rej_lt)],
        "fraction_heads_routing": float(rej.mean()),
        "top_heads": [list(heads[h]) for h in top],
        "top_heads_equivalent": equivalent,
        "selectivity_distribution": _quantiles(finite_rel),
        "concentration": head_concentration(infl_plateau, rare, common, row, n_boot, rng),
        "note": "if most heads are flagged, the shift is more likely a neuron-side gain at rare "
                "positions than routing by particular heads",
    })
    if infl_random is not None and np.asarray(infl_random).shape[0] > 0:
        details["specificity"] = specificity(infl_plateau, np.asarray(infl_random, np.float64),
                                             fdr_q)
    if delta_loss is not None:
        details["loss_effect"] = _loss_effects(delta_loss, m, row)

    focus = (int(np.argmin(np.where(np.isfinite(p_gt), p_gt, np.inf))) if np.isfinite(p_gt).any()
             else int(np.argmax(np.where(np.isfinite(rel), np.abs(rel), -1.0))))
    n_heads = len(heads)
    min_q = float(np.nanmin(qv)) if np.isfinite(qv).any() else float("nan")
    if routing:
        verdict = "not supported"
        details["inconclusive"] = False
        details["message"] = (f"{len(routing)} of {n_heads} heads route rare contexts to the "
                              f"plateau at BH q={fdr_q} (e.g. {routing[:5]}); "
                              f"{len(details['routing_heads_beyond_margin'])} of them beyond "
                              f"the +-{margin} margin")
    elif all(equivalent):
        verdict = "supported"
        details["inconclusive"] = False
        details["message"] = (f"no head routes (0 of {n_heads} at BH q={fdr_q}; smallest "
                              f"q {min_q:.3g}) and the top-{len(top)} heads are equivalent "
                              f"within +-{margin}")
    else:
        verdict = "not supported"
        details["inconclusive"] = True
        wide = [(list(heads[h]), [round(x, 3) for x in tost[int(h)]["ci"]]) for h in top
                if not tost[int(h)]["equivalent"]]
        details["message"] = (f"inconclusive: no head routes (0 of {n_heads} at BH q={fdr_q}; "
                              f"smallest q {min_q:.3g}), but equivalence is not shown for "
                              f"{len(wide)} of the top-{len(top)} heads (90% intervals not "
                              f"inside +-{margin}: {wide[:3]}); more rows would decide. The "
                              f"decision rule needs both, so the verdict is 'not supported'")
    details["focus_head"] = list(heads[focus])
    return TestResult(name, float(stat[focus]), float(np.nanmin(qv)) if np.isfinite(qv).any()
                      else float("nan"), float(rel[focus]), ci95[focus][0], ci95[focus][1],
                      verdict, "relative selectivity (most selective head)", alpha, details)


def _tost(estimate: float, boot: np.ndarray, margin: float, alpha: float) -> dict:
    """Bootstrap TOST of |relative selectivity| < margin; no finite estimate -> not equivalent."""
    if not np.isfinite(estimate) or np.isfinite(boot).sum() < 20:
        return {"equivalent": False, "p": float("nan"), "ci": [float("nan")] * 2}
    e = tost_bootstrap(estimate, boot, -margin, margin, alpha)
    return {"equivalent": e.equivalent, "p": e.p_value, "ci": [e.ci_low, e.ci_high]}


def _quantiles(x: np.ndarray) -> dict:
    if x.size == 0:
        return {}
    q = np.quantile(x, [0.0, 0.25, 0.5, 0.75, 1.0])
    return dict(zip(("min", "q25", "median", "q75", "max"), map(float, q)))


def _check_inputs(infl_plateau, infl_random, rare, common, row, pos, delta_loss, heads,
                  normalise) -> None:
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
    if infl_random is not None and np.asarray(infl_random).shape[1:] != (n_heads, n_pos):
        raise BadInputError(f"infl_random must be [n_groups, {n_heads}, {n_pos}], got "
                            f"{np.asarray(infl_random).shape}")
    if delta_loss is not None and np.asarray(delta_loss).shape != (n_heads, n_pos):
        raise BadInputError(f"delta_loss must be [{n_heads}, {n_pos}], got "
                            f"{np.asarray(delta_loss).shape}")
