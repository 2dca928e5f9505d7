"""Claim 2's clustering-method family: does ANY clustering algorithm put the group together?

Why: the claim "the plateau neurons form no module" is only as strong as the weakest method
that looked for the module. One statistic (the within-minus-between contrast,
harness.analyses.clustering) is one view; a module could show in a partition of the layer
that the contrast averages away. So the verdict family also partitions the whole layer's
test-half correlations with five algorithms over a grid of resolutions, on the cross-fitted
folds of clustering.crossfit_analysis (their graphs, selection and matched nulls are reused;
nothing there changes), and asks per method x resolution whether the group is clustered
beyond that of the null groups:

- graph methods on the positive-part kNN graph (each neuron keeps its `KNN` largest positive
  r; union, weights r). Positive part on purpose: a module is positive co-activation, a
  negative r is evidence against it (not an affinity), and Leiden is not defined for negative
  weights (leidenalg rejects them; its signed multiplex view of positive and negative layers
  stays in the reported statistics, clustering.layer_partition).
  Louvain and Leiden (modularity) at resolutions gamma; Leiden CPM at density thresholds in
  r units (igraph's implementations: `partitions` says why); spectral clustering
  (normalised affinity D^-1/2 A D^-1/2, top-n eigenvectors, rows normalised, seeded k-means++:
  numpy/scipy, sklearn is not a dependency) at n clusters. Statistic: co-assignment, the share
  of the group's pairs that fall in one community (1 for a module kept whole).
- hierarchical clustering (average linkage on correlation distance 1 - r, all pairs; scipy)
  cut at n clusters. Statistic: the group's silhouette - per member (b - a) / max(a, b), a =
  mean distance to the other members, b = mean distance to the nearest cluster of the cut
  (group members left out) - averaged over the members.
Effect of a member = statistic minus the null groups' mean (selection and matched nulls, as
the contrast's), fold-averaged; p = the max over folds and both nulls of the one-sided
empirical p (significant only against both nulls in both folds); interval = each fold's
estimate +- t(1 - alpha, test rows - 1) x row-bootstrap s.e. (the test half's rows
resampled, the layer re-partitioned per replicate; null means held fixed), union over folds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.analyses.clustering import (CrossFit, FOLD_KEYS, _t_quantile, combine_folds,
                                         crossfit_result, crossfit_validity, fold_statistics,
                                         null_state, planted_state, power_curves,
                                         statistics_kwargs)
from harness.analyses.communities import _compact
from harness.analyses.graphs import correlation_matrix
from harness.stats.bootstrap import resample_weights
from harness.stats.empirical import empirical_p
from harness.stats.multiple import bh_fdr

KNN = 10
GRAPH_METHODS = ("louvain", "leiden-modularity", "leiden-cpm", "spectral")
METHODS = GRAPH_METHODS + ("hierarchical",)
FULL_GRID = {"louvain": (0.5, 1.0, 2.0), "leiden-modularity": (0.5, 1.0, 2.0),
             "leiden-cpm": (0.01, 0.03, 0.1), "spectral": (8, 16, 32),
             "hierarchical": (8, 16, 32)}
# CI settings (--power-reps <= 8): two values per method, and fewer bootstrap draws
CI_GRID = {"louvain": (1.0, 2.0), "leiden-modularity": (1.0, 2.0),
           "leiden-cpm": (0.03, 0.1), "spectral": (8, 16), "hierarchical": (8, 16)}
STATISTIC = {m: "co-assignment" for m in GRAPH_METHODS} | {"hierarchical": "silhouette"}
# SESOIs in each statistic's own units, fixed before any run (claim 2's docstring says why)
SESOI = {"co-assignment": 0.1, "silhouette": 0.1}
NULLS = ("selection", "matched")
CORRECTION = ("BH over every method x resolution member and the contrast (claim 2's original "
              "statistic), each member's p the max over folds and both nulls: 'refuted' "
              "rejects the global null 'no method finds a module', for which BH controls the "
              "family-wise error at alpha as Holm does; Holm cannot reject at all here (the "
              "smallest empirical p, 1/201 with 200 null groups, times 11-16 members exceeds "
              "alpha), and the members - one group's cohesion seen by several methods - are "
              "positively dependent (PRDS), where BH is valid. A method named 'refuted' is an "
              "FDR-controlled discovery. 'supported' needs every member non-superior - an "
              "intersection-union test, no correction")


# ---------------------------------------------------------------- partitions

def positive_knn(corr: np.ndarray, knn: int = KNN) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, w), i < j: each neuron's knn largest positive correlations (union)."""
    c = np.array(corr, dtype=np.float64)
    m = c.shape[0]
    np.fill_diagonal(c, -np.inf)
    top = np.argpartition(-c, knn - 1, axis=1)[:, :knn]
    rows, cols = np.repeat(np.arange(m), knn), top.ravel()
    keep = c[rows, cols] > 0
    i, j = np.minimum(rows, cols)[keep], np.maximum(rows, cols)[keep]
    pairs = np.unique(i * m + j)
    i, j = pairs // m, pairs % m
    return i, j, c[i, j]


def partitions(corr: np.ndarray, grid: dict, seed: int = 0) -> dict:
    """{(method, value): labels [m]} of the whole layer for every member of the grid.

    Louvain and Leiden are igraph's C implementations (community_multilevel: Blondel et al.'s
    Louvain, the algorithm of networkx's louvain_communities; community_leiden: Traag's Leiden,
    as leidenalg) - 30x and 5x faster than networkx / leidenalg here, which the bootstrap and
    own-power re-partitions need; seeded through a private random.Random."""
    import random

    import igraph as ig
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    m = corr.shape[0]
    i, j, w = positive_knn(corr)
    out = {}
    graph = ig.Graph(n=m, edges=np.column_stack([i, j]))
    weights = w.tolist()
    runs = [("louvain", res, lambda r: graph.community_multilevel(weights=weights, resolution=r))
            for res in grid.get("louvain", ())]
    runs += [(method, res, lambda r, o=objective: graph.community_leiden(
        objective_function=o, weights=weights, resolution=r, n_iterations=2))
        for method, objective in (("leiden-modularity", "modularity"), ("leiden-cpm", "CPM"))
        for res in grid.get(method, ())]
    try:
        for method, res, run in runs:
            ig.set_random_number_generator(random.Random(seed))
            out[method, res] = _compact(np.asarray(run(res).membership)[None])[0]
    finally:
        ig.set_random_number_generator(random)
    if grid.get("spectral"):
        out.update({("spectral", n): lab for n, lab in
                    zip(grid["spectral"], spectral(m, i, j, w, grid["spectral"], seed))})
    if grid.get("hierarchical"):
        d = 1.0 - np.asarray(corr, dtype=np.float64)
        np.fill_diagonal(d, 0.0)
        tree = linkage(squareform(np.clip((d + d.T) / 2, 0.0, None), checks=False), "average")
        for n in grid["hierarchical"]:
            out["hierarchical", n] = fcluster(tree, n, "maxclust") - 1
    return out


def spectral(m: int, i: np.ndarray, j: np.ndarray, w: np.ndarray, ns: tuple[int, ...],
             seed: int = 0) -> list[np.ndarray]:
    """Normalised spectral clustering (Ng-Jordan-Weiss) of the kNN graph at each n in ns."""
    from scipy.cluster.vq import kmeans2
    from scipy.linalg import eigh

    a = np.zeros((m, m))
    a[i, j] = w
    a[j, i] = w
    d = a.sum(1)
    s = 1.0 / np.sqrt(np.where(d > 0, d, 1.0))
    top = max(ns)
    _, vec = eigh(a * s[:, None] * s[None, :], subset_by_index=[m - top, m - 1])
    out = []
    for n in ns:
        u = vec[:, -n:]
        u = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
        _, lab = kmeans2(u, n, minit="++", seed=np.random.default_rng([seed, n]))
        out.append(_compact(lab[None])[0])
    return out


# ---------------------------------------------------------------- statistics of groups

def coassignment(labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """[G] share of each group's pairs (rows of groups [G, k]) in one community."""
    groups = np.atleast_2d(groups)
    lab = np.asarray(labels)[groups]
    g, k = lab.shape
    counts = np.zeros((g, int(labels.max()) + 1))
    np.add.at(counts, (np.repeat(np.arange(g), k), lab.ravel()), 1.0)
    return (counts * (counts - 1)).sum(1) / (k * (k - 1))


def silhouette(corr: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """[G] mean silhouette of each group taken as one cluster against the cut `labels`
    (distance 1 - r; b from the nearest cluster with the group's members left out)."""
    groups = np.atleast_2d(np.asarray(groups, dtype=np.int64))
    k = groups.shape[1]
    n_cl = int(labels.max()) + 1
    onehot = np.eye(n_cl)[labels]                              # [m, n]
    d = 1.0 - np.asarray(corr, dtype=np.float64)
    sums = d @ onehot - (1.0 - np.diagonal(corr))[:, None] * onehot   # D_ii = 0
    dg = 1.0 - corr[groups[:, :, None], groups[:, None, :]]
    idx = np.arange(k)
    dg[:, idx, idx] = 0.0
    a = dg.sum(2) / (k - 1)                                    # [G, k]
    oh = onehot[groups]                                        # [G, k, n]
    within = sums[groups] - dg @ oh                            # group members left out
    left = onehot.sum(0)[None, :] - oh.sum(1)                  # [G, n]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(left[:, None, :] > 0, within / left[:, None, :], np.inf)
    b = mean.min(2)
    return ((b - a) / np.maximum(np.maximum(a, b), 1e-12)).mean(1)


def member_stat(method: str, corr: np.ndarray, labels: np.ndarray, groups: np.ndarray
                ) -> np.ndarray:
    if method == "hierarchical":
        return silhouette(corr, labels, groups)
    return coassignment(labels, groups)


# ---------------------------------------------------------------- the family

@dataclass
class MethodFamily:
    """Per fold and member: observed statistic, null statistics, bootstrap s.e.; the rows."""

    grid: dict
    per_fold: list[dict]     # fold -> {(method, value): {"obs", "selection", "matched", "se"}}
    members: list[dict]
    per_method: dict
    decision: object
    n_boot: int


def _full_corr(view) -> np.ndarray:
    if view.changed is None:
        return view.base
    c = np.array(view.base, dtype=np.float64)
    c[view.changed] = view.rows
    c[:, view.changed] = view.rows.T
    return c


def _fold_members(corr: np.ndarray, labels: dict, group: np.ndarray, sel: np.ndarray,
                  matched: np.ndarray) -> dict:
    out = {}
    for key, lab in labels.items():
        out[key] = {"obs": float(member_stat(key[0], corr, lab, group[None])[0]),
                    "selection": member_stat(key[0], corr, lab, sel),
                    "matched": member_stat(key[0], corr, lab, matched)}
    return out


def method_family(cf: CrossFit, grid: dict = FULL_GRID, n_boot: int = 50, seed: int = 0
                  ) -> MethodFamily:
    """Every method x resolution of `grid` on each fold of `cf` (the module docstring)."""
    rng = np.random.default_rng([seed, 31])
    per_fold = []
    for fold, st in zip(cf.folds, cf.per_fold):
        corr = fold.view.base
        labels = partitions(corr, grid, seed)
        fm = _fold_members(corr, labels, fold.group, fold.selection,
                           st["_nulls"]["matched_groups"])
        rows, inv = np.unique(fold.row, return_inverse=True)
        wts = resample_weights(rows.size, n_boot, rng, key=(FOLD_KEYS.get(fold.name, 2), 31))
        boot = {key: [] for key in labels}
        for b in range(n_boot):
            cb = correlation_matrix(fold.x, wts[b][inv].astype(np.float64))
            for key, lab in partitions(cb, grid, seed).items():
                boot[key].append(float(member_stat(key[0], cb, lab, fold.group[None])[0]))
        for key in labels:
            fm[key]["se"] = max(float(np.std(boot[key], ddof=1)), 1e-9)
        per_fold.append(fm)
    return _decide(cf, grid, per_fold, n_boot)


def _rows(cf: CrossFit, grid: dict, per_fold: list[dict]) -> list[dict]:
    dfs = [max(int(f["n_test_rows"]) - 1, 1) for f in cf.per_fold]
    tq = [_t_quantile(1 - cf.alpha, df) for df in dfs]
    rows = []
    for method in METHODS:
        for value in grid.get(method, ()):
            key = (method, value)
            sesoi = SESOI[STATISTIC[method]]
            row = {"method": method, "resolution": value, "statistic": STATISTIC[method],
                   "sesoi": sesoi,
                   "observed_by_fold": [f[key]["obs"] for f in per_fold],
                   "se_by_fold": [f[key]["se"] for f in per_fold]}
            uppers = []
            for null in NULLS:
                est = [f[key]["obs"] - float(np.mean(f[key][null])) for f in per_fold]
                ps = [empirical_p(f[key]["obs"], f[key][null], "greater") for f in per_fold]
                lo = [e - t * f[key]["se"] for e, t, f in zip(est, tq, per_fold)]
                hi = [e + t * f[key]["se"] for e, t, f in zip(est, tq, per_fold)]
                uppers.append(max(hi))
                row[null] = {"estimate": float(np.mean(est)), "estimate_by_fold": est,
                             "p_by_fold": ps, "ci_low": min(lo), "ci_high": max(hi),
                             "null_mean_by_fold": [float(np.mean(f[key][null]))
                                                   for f in per_fold]}
            row.update(estimate=row["selection"]["estimate"],
                       ci_low=row["selection"]["ci_low"], ci_high=row["selection"]["ci_high"],
                       p=max(max(row[n]["p_by_fold"]) for n in NULLS),
                       non_superior=bool(max(uppers) < sesoi),
                       exceeds_sesoi=bool(min(row[n]["estimate"] for n in NULLS) > sesoi),
                       excess_in_sesoi=min(row[n]["estimate"] for n in NULLS) / sesoi)
            rows.append(row)
    return rows


def contrast_member(family: list[dict], sesoi: float) -> dict:
    """Claim 2's contrast family (combine_folds rows) as one member of the method family."""
    return {"method": "contrast", "resolution": None, "statistic": "contrast (r)",
            "sesoi": sesoi, "estimate": family[0]["estimate"], "ci_low": family[0]["ci_low"],
            "ci_high": family[0]["ci_high"], "p": max(r["p_max"] for r in family),
            "non_superior": all(r["non_superior"] for r in family),
            "exceeds_sesoi": all(r["exceeds_sesoi"] for r in family),
            "excess_in_sesoi": min(r["estimate"] for r in family) / sesoi}


def _decide(cf: CrossFit, grid: dict, per_fold: list[dict], n_boot: int,
            family: list[dict] | None = None, contrast_per_fold: list[dict] | None = None
            ) -> MethodFamily:
    from harness.verdicts import decide_absent

    family = cf.family if family is None else family
    contrast_per_fold = cf.per_fold if contrast_per_fold is None else contrast_per_fold
    members = [contrast_member(family, cf.sesoi)] + _rows(cf, grid, per_fold)
    for r, pa in zip(members, bh_fdr(np.array([r["p"] for r in members]), cf.alpha)[1]):
        r["q_bh"] = float(pa)
        r["significant"] = bool(pa <= cf.alpha)
        r["finds_module"] = r["significant"] and r["exceeds_sesoi"]
    per_method = {}
    for method in ("contrast",) + METHODS:
        rs = [r for r in members if r["method"] == method]
        if not rs:
            continue
        per_method[method] = {
            "verdict": ("refuted" if any(r["finds_module"] for r in rs) else "supported"
                        if all(r["non_superior"] for r in rs) else "inconclusive"),
            "n": len(rs), "min_q_bh": min(r["q_bh"] for r in rs),
            "max_ci_high": max(r["ci_high"] for r in rs),
            "max_estimate": max(r["estimate"] for r in rs)}
    found = [r for r in members if r["finds_module"]]
    top = max(found or members, key=lambda r: r["excess_in_sesoi"])
    decision = decide_absent(
        equivalent=all(r["non_superior"] for r in members), significant=bool(found),
        estimate=cf.sesoi * top["excess_in_sesoi"],
        sesoi=cf.sesoi, family=CORRECTION, validity=crossfit_validity(contrast_per_fold),
        detail=f"estimate = the largest member excess (min over the two nulls) in SESOI units "
               f"x {cf.sesoi:g}, here {top['method']} {top['resolution']}; per method: "
               + "; ".join(f"{m} {v['verdict']}" for m, v in per_method.items()))
    return MethodFamily(grid, per_fold, members, per_method, decision, n_boot)


# ---------------------------------------------------------------- result and own power

def family_result(cf: CrossFit, fam: MethodFamily, own_power=None):
    """crossfit_result with the whole-family verdict; the contrast-only decision is kept as
    details['contrast_decision'] and the members as details['methods']."""
    from dataclasses import replace

    res = crossfit_result(cf, own_power)
    d = dict(res.details)
    d["contrast_decision"] = d["decision"]
    d.update(decision=fam.decision.to_dict(), message=fam.decision.reason,
             correction=CORRECTION, methods=fam.members, method_verdicts=fam.per_method,
             method_grid={k: list(v) for k, v in fam.grid.items()},
             method_settings={"knn": KNN, "n_boot": fam.n_boot, "sesoi": SESOI,
                              "statistic": STATISTIC},
             methods_table=methods_table(fam))
    return replace(res, verdict=fam.decision.verdict,
                   p_value=float(min(r["q_bh"] for r in fam.members)), details=d)


def methods_table(fam: MethodFamily) -> dict:
    """Compact per-method rows for the report (harness.report.render renders it)."""
    rows = []
    for method, v in fam.per_method.items():
        rs = [r for r in fam.members if r["method"] == method]
        best = max(rs, key=lambda r: r["estimate"])
        rows.append([method, ", ".join("-" if r["resolution"] is None else f"{r['resolution']:g}"
                                       for r in rs),
                     rs[0]["statistic"], f"{rs[0]['sesoi']:g}",
                     f"{best['estimate']:+.3f} [{best['ci_low']:+.3f}, {best['ci_high']:+.3f}]",
                     f"{v['min_q_bh']:.3g}", v["verdict"]])
    return {"headers": ["method", "grid", "statistic", "SESOI", "largest excess [90% CI]",
                        "min BH q", "verdict"], "rows": rows,
            "caption": "Claim 2 per clustering method (cross-fitted, vs the selection null; "
                       "verdict rule and correction in details['correction'])"}


def family_own_power(cf: CrossFit, fam: MethodFamily, *, reps: int, seed: int = 0,
                     factors: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0), n_matched: int = 100,
                     n_boot: int = 50):
    """Power, MDE and false-positive rate of the WHOLE-family verdict on this run's data.

    As clustering.crossfit_own_power (copula plant of a shared factor into the group's real
    test-half activations, the contrast rising by the effect; null: a selection-null group in
    the group's place), and every method x resolution re-partitions the planted layer. The
    methods' row-bootstrap s.e. are held at the observed run's (re-partitioning per bootstrap
    draw per replicate is out of budget); a null replicate reuses the observed partitions (the
    data are unchanged; only the group differs)."""
    from harness.stats.own_power import own_data_power

    curves = power_curves(cf, seed)
    base_labels = [partitions(fold.view.base, fam.grid, seed) for fold in cf.folds]

    def decide(state: dict) -> str:
        rng = state["rng"]
        per, members = [], []
        for fold, kw, obs_fm, labels in zip(cf.folds, state["folds"], fam.per_fold,
                                            base_labels):
            st = fold_statistics(fold, rng=rng, n_matched=n_matched, n_boot=n_boot,
                                 n_cand=cf.settings["n_cand"], keep_nulls=True,
                                 **statistics_kwargs(kw))
            per.append(st)
            view = kw.get("view", fold.view)
            corr = _full_corr(view)
            labs = labels if view is fold.view else partitions(corr, fam.grid, seed)
            sel = fold.selection if "drop" not in kw else np.delete(fold.selection,
                                                                    kw["drop"], axis=0)
            fm = _fold_members(corr, labs, kw["group"], sel, st["_nulls"]["matched_groups"])
            for key in fm:
                fm[key]["se"] = obs_fm[key]["se"]
            members.append(fm)
        return _decide(cf, fam.grid, members, fam.n_boot,
                       combine_folds(per, cf.sesoi, cf.alpha), per).decision.verdict

    def null(rng: np.random.Generator) -> dict:
        return null_state(cf, rng)

    def plant(rng: np.random.Generator, effect: float) -> dict:
        return planted_state(cf, curves, rng, effect)

    how = ("whole-family verdict (contrast + every method x resolution, BH); plant: "
           "copula_plant of a shared factor into the group's real test-half activations "
           "(contrast rise = effect), every method re-partitions the planted layer; null: a "
           "selection-null group in the group's place vs the other draws and its own matched "
           f"groups; replicates use {n_matched} matched groups, {n_boot} contrast bootstrap "
           "draws and the observed methods' bootstrap s.e.")

    return own_data_power(decide, plant, null, sesoi=cf.sesoi, detect="refuted",
                          reps=reps, factors=factors, seed=seed, how=how)
