"""Claim 2: plateau neurons do not form a module ("no spatial clustering").

The verdict (second half of this file, `crossfit_analysis` -> `crossfit_result`): the group
is selected on one half of the rows and measured on the other (both ways); its effect is the
within-minus-between correlation contrast in excess of (a) groups made by the same selection
on size-matched common positions and (b) random groups matched on the activation statistics
that drive correlation; decided by harness.verdicts.decide_absent against a SESOI in r units
(claims/test_no_clustering.py states the rule). Own-data power: `crossfit_own_power`.

Reported statistics (first half, `clustering_analysis`, run per fold on the test half). For
the group G (k neurons):
- Q: modularity of the Louvain partition of G's own correlation graph (positive-weight graph),
  as in the paper; Q_signed: Gomez signed modularity of the signed Louvain partition. Both
  measure sub-structure *inside* G: a cohesive module is one block and has Q near 0;
- module_Q: the modularity contribution of G taken as one community of the whole-layer
  (dense, positive) correlation graph;
- concentration: the largest share of G inside one community of the whole-layer graph
  (top-k |r| per neuron, signed Leiden); entropy of G's community labels;
- index locality: mean pairwise |i - j| of G's neuron indices (the literal "spatial").
Their nulls: random equal-size groups of the other neurons (the paper's comparison), the
group's graph with edge weights swapped so that the signed strengths stay within a tolerance
(Maslov-Sneppen-style swaps on the complete graph), and random rotations of the activation
basis inside a subspace holding G. None of these enters the verdict: a top-influence group
differs from random neurons by its selection alone (issue 19: z(module_Q) 5-21 on groups
picked from common positions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

import numpy as np
from scipy import stats

from harness.analyses.communities import (leiden, leiden_edges, louvain_dense, modularity,
                                          partition_summary)
from harness.analyses.graphs import (batch_group_graphs, corr_from_cov, correlation_matrix,
                                     group_graph, knn_edges)
from harness.errors import BadInputError
from harness.stats.bootstrap import replicate_list, resample_weights, shared_bootstrap_seed
from harness.stats.empirical import empirical_p, zscore
from harness.stats.equivalence import Equivalence, tost
from harness.stats.multiple import bh_fdr
from harness.stats.result import TestResult

PAPER = {"Q_specialist": [0.05, 0.11], "Q_random": [0.04, 0.09], "p": "> 0.4",
         "source": "P1: Louvain Q of top-N groups vs 2 random groups, t-test (1 df)"}
DEFAULT_MARGIN_Z = 2.0
_BATCH = 250


# ---------------------------------------------------------------- statistics of groups

def group_modularity(w: np.ndarray, resolution: float = 1.0, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(Q, Q_signed) of the Louvain partitions of one [k, k] or a batch [G, k, k] of graphs."""
    w = np.asarray(w, dtype=np.float64)
    batch = w if w.ndim == 3 else w[None]
    q = np.empty(len(batch))
    qs = np.empty(len(batch))
    for s in range(0, len(batch), _BATCH):
        q[s:s + _BATCH] = louvain_dense(batch[s:s + _BATCH], resolution, False, seed)[1]
        qs[s:s + _BATCH] = louvain_dense(batch[s:s + _BATCH], resolution, True, seed)[1]
    return (q, qs) if w.ndim == 3 else (q[:1], qs[:1])


def random_groups(m: int, group: np.ndarray, n: int, rng: np.random.Generator,
                  exclude_group: bool = True) -> np.ndarray:
    """[n, k] random groups of the group's size, from the other neurons (or from all)."""
    group = np.asarray(group)
    pool = np.setdiff1d(np.arange(m), group) if exclude_group else np.arange(m)
    if pool.size < group.size:
        raise BadInputError(f"only {pool.size} other neurons for random groups of size "
                            f"{group.size}; use a smaller group or a wider layer")
    keys = rng.random((n, pool.size))
    return pool[np.argpartition(keys, group.size - 1, axis=1)[:, :group.size]]


def concentration_entropy(labels: np.ndarray, groups: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Largest share of each group [G, k] in one community, and entropy (nats) of its labels."""
    groups = np.atleast_2d(groups)
    lab = np.asarray(labels)[groups]
    n_comm = int(np.max(labels)) + 1
    counts = np.zeros((lab.shape[0], n_comm))
    np.add.at(counts, (np.repeat(np.arange(lab.shape[0]), lab.shape[1]), lab.ravel()), 1.0)
    share = counts / lab.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.sum(np.where(share > 0, share * np.log(share), 0.0), axis=1)
    return share.max(axis=1), ent


def index_locality(groups: np.ndarray) -> np.ndarray:
    """Mean pairwise |i - j| of neuron indices for groups [G, k] (small = index-clustered)."""
    x = np.sort(np.atleast_2d(groups).astype(np.float64), axis=1)
    k = x.shape[1]
    return (x @ (2 * np.arange(k) - (k - 1))) / (k * (k - 1) / 2)


def positive_degrees(corr: np.ndarray) -> np.ndarray:
    """Strength of every neuron in the whole-layer positive-weight graph (r > 0, no self loop)."""
    c = np.asarray(corr)
    deg = np.zeros(c.shape[0])
    for s in range(0, c.shape[0], 1024):
        deg[s:s + 1024] = np.clip(c[s:s + 1024], 0.0, None).sum(1)
    return deg - np.clip(np.diagonal(c), 0.0, None)


def module_q(w: np.ndarray, group_degree: np.ndarray, two_w: float) -> np.ndarray:
    """Modularity contribution of each group [G] taken as ONE community of the whole layer.

    w [G, k, k]: the groups' signed graphs; group_degree [G]: summed layer strengths of their
    members; two_w: total layer strength. A module scores high (dense inside relative to its
    degrees). The paper's Q of the group's own subgraph cannot see this: a cohesive module is
    one homogeneous block inside, which Louvain leaves whole, so its own Q is near 0.
    """
    within = np.clip(np.asarray(w), 0.0, None).sum(axis=(-1, -2))
    return (within - group_degree ** 2 / two_w) / two_w


def layer_partition(corr: np.ndarray, knn: int = 10, resolution: float = 1.0, seed: int = 0,
                    threshold: float | None = None) -> np.ndarray:
    """Communities [m] of the whole-layer graph: top-knn |r| per neuron, signed Leiden."""
    i, j, w = knn_edges(corr, knn, threshold)
    return leiden_edges(corr.shape[0], i, j, w, resolution, seed, signed=True)


# ---------------------------------------------------------------- null graphs

def shuffled_graphs(w: np.ndarray, n_draws: int, rng: np.random.Generator,
                    strength_tol: float = 0.1, swaps_per_edge: int = 10) -> np.ndarray:
    """[n_draws, k, k] weight-preserving shuffles of a signed complete graph.

    A swap on nodes (a, b, c, d) exchanges w_ab <-> w_ad and w_cb <-> w_cd: the weight multiset
    is kept exactly, a and c keep their strengths, b and d change by +-delta. A swap is accepted
    only if every node's positive and negative strength stays within strength_tol x (mean
    strength of that sign) of its original value, so the signed degree sequence is kept
    approximately while the arrangement of weights (the modules) is destroyed. Swaps run on
    disjoint node quadruples, vectorised over quadruples and draws.
    """
    w = np.asarray(w, dtype=np.float64)
    k = w.shape[0]
    out = np.repeat(w[None], n_draws, axis=0)
    if k < 4 or n_draws == 0:
        return out
    s_pos, s_neg = np.clip(w, 0, None).sum(1), np.clip(-w, 0, None).sum(1)
    tol_pos = strength_tol * max(s_pos.mean(), 1e-12)
    tol_neg = strength_tol * max(s_neg.mean(), 1e-12)
    dev_pos = np.zeros((n_draws, k))
    dev_neg = np.zeros((n_draws, k))
    nq = k // 4
    n_batches = max(1, swaps_per_edge * k * (k - 1) // 2 // nq)
    d = np.repeat(np.arange(n_draws), nq)
    for _ in range(n_batches):
        quad = np.argsort(rng.random((n_draws, k)), axis=1)[:, :4 * nq].reshape(-1, 4)
        a, b, c, e = quad.T
        wab, wad, wcb, wce = out[d, a, b], out[d, a, e], out[d, c, b], out[d, c, e]
        dp = (np.clip(wad, 0, None) + np.clip(wce, 0, None)
              - np.clip(wab, 0, None) - np.clip(wcb, 0, None))
        dn = (np.clip(-wad, 0, None) + np.clip(-wce, 0, None)
              - np.clip(-wab, 0, None) - np.clip(-wcb, 0, None))
        ok = ((np.abs(dev_pos[d, b] + dp) <= tol_pos) & (np.abs(dev_pos[d, e] - dp) <= tol_pos)
              & (np.abs(dev_neg[d, b] + dn) <= tol_neg) & (np.abs(dev_neg[d, e] - dn) <= tol_neg))
        dd, a, b, c, e = d[ok], a[ok], b[ok], c[ok], e[ok]
        for (x, y), val in (((a, b), wad[ok]), ((a, e), wab[ok]), ((c, b), wce[ok]),
                            ((c, e), wcb[ok])):
            out[dd, x, y] = val
            out[dd, y, x] = val
        dev_pos[dd, b] += dp[ok]
        dev_pos[dd, e] -= dp[ok]
        dev_neg[dd, b] += dn[ok]
        dev_neg[dd, e] -= dn[ok]
    return out


def rotation_graphs(acts: np.ndarray, group: np.ndarray, n_draws: int,
                    rng: np.random.Generator, dim: int | None = 256) -> np.ndarray:
    """[n_draws, k, k] correlation graphs of the group's indices after a random rotation.

    The basis of a subspace S (the group plus dim - k other random neurons; all neurons when
    dim is None or >= m) is rotated by a Haar-random orthogonal matrix and the k coordinates at
    the group's positions are read off: R[:, group] is a Haar k-frame in S, so only S's
    covariance and k columns per draw are needed. A module that exists because of the neuron
    basis (a privileged basis) disappears under rotation.
    """
    group = np.asarray(group)
    m, k = acts.shape[1], group.size
    if dim is None or dim >= m:
        sub = np.arange(m)
    else:
        if dim < 2 * k:
            raise BadInputError(f"rotation_dim must be >= 2 x group size ({2 * k}), got {dim}")
        others = rng.choice(np.setdiff1d(np.arange(m), group), dim - k, replace=False)
        sub = np.concatenate([group, others])
    cov = correlation_matrix(acts[:, sub])  # standardised: rotation of z-scored coordinates
    out = np.empty((n_draws, k, k))
    for s in range(0, n_draws, 100):
        # Haar k-frame Q = G L^-T with G'G = L L' (the Q of a QR with positive diagonal), so
        # Q' C Q = L^-1 (G' C G) L^-T; batched QR of p x k matrices is far slower.
        g = rng.standard_normal((min(100, n_draws - s), sub.size, k))
        linv = np.linalg.inv(np.linalg.cholesky(np.swapaxes(g, 1, 2) @ g))
        cg = linv @ (np.swapaxes(g, 1, 2) @ cov @ g) @ np.swapaxes(linv, 1, 2)
        out[s:s + len(g)] = corr_from_cov(cg)
    idx = np.arange(k)
    out[:, idx, idx] = 0.0
    return out


# ---------------------------------------------------------------- the analysis

@dataclass(frozen=True)
class Comparison:
    """One observed metric against one null distribution."""

    metric: str
    null: str
    observed: float
    null_mean: float
    null_sd: float
    z: float
    p: float
    alternative: str
    n_null: int
    p_adj: float = float("nan")
    family: str = "reported"

    def __str__(self) -> str:
        return (f"{self.metric:>13} vs {self.null:<13} obs={self.observed:.4f} "
                f"null={self.null_mean:.4f}+-{self.null_sd:.4f} z={self.z:+.2f} "
                f"p={self.p:.4f} p_adj={self.p_adj:.4f} [{self.family}]")

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ClusteringAnalysis:
    """Everything the claim-2 test measured; arrays kept for plots (not for results.json)."""

    group: np.ndarray
    q: float
    q_signed: float
    module_q: float
    concentration: float
    entropy: float
    locality: float
    group_labels: np.ndarray
    layer_labels: np.ndarray
    comparisons: tuple[Comparison, ...]
    nulls: dict[str, np.ndarray]
    z_boot: dict[str, np.ndarray]
    equivalence: dict[str, Equivalence]
    extra: dict = field(default_factory=dict)

    def comparison(self, metric: str, null: str) -> Comparison:
        return next(c for c in self.comparisons if c.metric == metric and c.null == null)

    def __str__(self) -> str:
        return "\n".join([f"group k={self.group.size}: Q={self.q:.4f} "
                          f"Q_signed={self.q_signed:.4f} module_Q={self.module_q:.4f} "
                          f"conc={self.concentration:.3f}",
                          *map(str, self.comparisons),
                          *(f"{n}: {e}" for n, e in self.equivalence.items())])


def _compare(metric: str, null_name: str, observed: float, null: np.ndarray,
             alternative: str) -> Comparison:
    null = np.asarray(null, dtype=np.float64)
    sd = float(null.std(ddof=1)) if null.size > 1 else float("nan")
    z = zscore(observed, null)
    if not np.isfinite(z) and sd == 0.0:
        z = 0.0 if observed == null.mean() else float(np.sign(observed - null.mean()) * np.inf)
    return Comparison(metric, null_name, float(observed), float(null.mean()), sd, float(z),
                      empirical_p(observed, null, alternative), alternative, null.size)


def _with_bh(comps: list[Comparison], family: str, alpha: float) -> list[Comparison]:
    _, q = bh_fdr(np.array([c.p for c in comps]), alpha)
    return [Comparison(**{**c.__dict__, "p_adj": float(qa), "family": family})
            for c, qa in zip(comps, q)]


def _validate(acts: np.ndarray, row: np.ndarray, group: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    acts = np.asarray(acts)
    row = np.asarray(row)
    group = np.asarray(group, dtype=np.int64)
    if acts.ndim != 2:
        raise BadInputError(f"acts must be [n_pos, m], got shape {acts.shape}")
    if row.shape != (acts.shape[0],):
        raise BadInputError(f"row must be [n_pos={acts.shape[0]}], got shape {row.shape}")
    if group.ndim != 1 or group.size < 4 or np.unique(group).size != group.size:
        raise BadInputError("group must be >= 4 distinct neuron indices (the plateau neurons)")
    if group.min() < 0 or group.max() >= acts.shape[1]:
        raise BadInputError(f"group indices must lie in [0, {acts.shape[1]})")
    if np.unique(row).size < 2:
        raise BadInputError("need positions from at least 2 rows for the row bootstrap")
    return acts, row, group


def _bootstrap_graphs(acts: np.ndarray, row: np.ndarray, group: np.ndarray, n_boot: int,
                      rng: np.random.Generator) -> np.ndarray:
    """[n_boot, k, k] group correlation graphs over row-resampled data (per-row moments)."""
    x = acts[:, group].astype(np.float64)
    x -= x.mean(0)
    rows, inv = np.unique(row, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inv[order]) != 0])
    xs = x[order]
    s1 = np.add.reduceat(xs, starts, axis=0)
    s2 = np.stack([xs[a:b].T @ xs[a:b] for a, b in zip(starts, np.r_[starts[1:], len(xs)])])
    n = np.diff(np.r_[starts, len(xs)]).astype(np.float64)
    wts = resample_weights(rows.size, n_boot, rng)
    tot = wts @ n
    mean = (wts @ s1) / tot[:, None]
    cov = np.einsum("br,rij->bij", wts, s2) / tot[:, None, None] - mean[:, :, None] * mean[:, None, :]
    out = corr_from_cov(cov)
    idx = np.arange(group.size)
    out[:, idx, idx] = 0.0
    return out


def clustering_analysis(acts: np.ndarray, row: np.ndarray, group: np.ndarray, *,
                        all_acts: np.ndarray | None = None, corr: np.ndarray | None = None,
                        n_random: int = 1000, n_shuffle: int = 1000, n_rotation: int = 1000,
                        n_boot: int = 200, n_leiden_check: int = 100,
                        resolutions: tuple[float, ...] = (0.5, 1.0, 2.0),
                        seeds: tuple[int, ...] = (0, 1, 2), knn: int = 10,
                        rotation_dim: int | None = 256, alpha: float = 0.05,
                        tost_margin: float | None = None, seed: int = 0) -> ClusteringAnalysis:
    """Run every statistic and null of claim 2 (see module docstring); n_* = 0 skips a part.

    The primary partition uses resolution 1.0 (or resolutions[0]) and Louvain seed seeds[0] for
    the group AND every null graph alike; using more seeds for the observed group than for the
    nulls (e.g. max over seeds) would bias Q upward. The other seeds and resolutions, networkx
    Louvain and leidenalg Leiden are reported as sensitivity analyses.
    """
    acts, row, group = _validate(acts, row, group)
    rng = np.random.default_rng(seed)
    m, k = acts.shape[1], group.size
    res = 1.0 if 1.0 in resolutions else resolutions[0]
    s0 = seeds[0]
    margin = DEFAULT_MARGIN_Z if tost_margin is None else float(tost_margin)
    corr = correlation_matrix(acts) if corr is None else np.asarray(corr, dtype=np.float64)
    if corr.shape != (m, m):
        raise BadInputError(f"corr must be [{m}, {m}], got {corr.shape}")

    w = group_graph(corr, group)
    q_obs, qs_obs = (float(v[0]) for v in group_modularity(w, res, s0))
    group_labels = louvain_dense(w, res, False, s0)[0]
    groups = random_groups(m, group, n_random, rng)
    w_rand = batch_group_graphs(corr, groups)
    q_rand, qs_rand = group_modularity(w_rand, res, s0)
    deg = positive_degrees(corr)
    two_w = max(float(deg.sum()), 1e-300)
    mq_obs = float(module_q(w, deg[group].sum(), two_w))
    mq_rand = module_q(w_rand, deg[groups].sum(1), two_w)

    layer_labels = layer_partition(corr, knn, res, s0)
    conc, ent = concentration_entropy(layer_labels, group[None])
    conc_rand, ent_rand = concentration_entropy(layer_labels, groups)
    nulls = {"Q|random": q_rand, "Q_signed|random": qs_rand, "module_Q|random": mq_rand,
             "concentration|random": conc_rand}
    decision = [_compare("Q", "random", q_obs, q_rand, "greater"),
                _compare("Q_signed", "random", qs_obs, qs_rand, "greater"),
                _compare("module_Q", "random", mq_obs, mq_rand, "greater"),
                _compare("concentration", "random", conc[0], conc_rand, "greater")]
    structure = []
    if n_shuffle:
        nulls["Q|shuffle"], nulls["Q_signed|shuffle"] = group_modularity(
            shuffled_graphs(w, n_shuffle, rng), res, s0)
        structure += [_compare("Q", "shuffle", q_obs, nulls["Q|shuffle"], "greater"),
                      _compare("Q_signed", "shuffle", qs_obs, nulls["Q_signed|shuffle"], "greater")]
    if n_rotation:
        nulls["Q|rotation"], nulls["Q_signed|rotation"] = group_modularity(
            rotation_graphs(acts, group, n_rotation, rng, rotation_dim), res, s0)
        structure += [_compare("Q", "rotation", q_obs, nulls["Q|rotation"], "greater"),
                      _compare("Q_signed", "rotation", qs_obs, nulls["Q_signed|rotation"],
                               "greater")]
    loc_rand = index_locality(random_groups(m, group, n_random, rng, exclude_group=False))
    loc = float(index_locality(group[None])[0])
    nulls["locality|random"] = loc_rand
    reported = [_compare("entropy", "random", ent[0], ent_rand, "less"),
                _compare("locality", "random", loc, loc_rand, "less")]
    comps = (_with_bh(decision, "verdict (BH)", alpha)
             + (_with_bh(structure, "structure (BH)", alpha) if structure else []) + reported)

    # Row bootstrap of the group graph -> SDs of z(Q) and z(module_Q) for the TOSTs. For
    # module_Q the group's links to the rest of the layer are held at their full-data value
    # (bootstrapping them needs an m x m correlation per replicate).
    w_boot = _bootstrap_graphs(acts, row, group, n_boot, rng)
    q_boot = group_modularity(w_boot, res, s0)[0]
    outside = deg[group].sum() - np.clip(w, 0.0, None).sum()
    mq_boot = module_q(w_boot, outside + np.clip(w_boot, 0.0, None).sum(axis=(1, 2)), two_w)
    equivalence, z_boot, ses = {}, {}, {}
    for name, cmp, boot in (("Q", decision[0], q_boot), ("module_Q", decision[2], mq_boot)):
        z_boot[name] = ((boot - cmp.null_mean) / cmp.null_sd if cmp.null_sd > 0
                        else np.zeros_like(boot))
        ses[name] = max(float(np.std(z_boot[name], ddof=1)), 1e-9)
        equivalence[name] = tost(cmp.z if np.isfinite(cmp.z) else 1e9, ses[name], -margin,
                                 margin, alpha)

    extra = {"resolution": res, "louvain_seed": s0, "n_random": n_random,
             "n_shuffle": n_shuffle, "n_rotation": n_rotation, "n_boot": n_boot, "knn": knn,
             "rotation_dim": rotation_dim, "k": k, "m": m, "tost_margin_z": margin,
             "group_partition": str(partition_summary(w, group_labels)),
             "layer_communities": int(layer_labels.max()) + 1,
             "z_se_boot": ses,
             "sensitivity": _sensitivity(w, w_rand, resolutions, seeds,
                                         {res: (q_rand, qs_rand)}),
             "non_superiority_upper_z": {n: float(c.z + stats.norm.ppf(1 - alpha) * ses[n])
                                         for n, c in (("Q", decision[0]),
                                                      ("module_Q", decision[2]))}}
    if n_leiden_check:
        extra["leiden_check"] = _leiden_check(w, w_rand[:n_leiden_check], res, s0)
    if all_acts is not None:
        corr_all = correlation_matrix(all_acts)
        q_all = group_modularity(group_graph(corr_all, group), res, s0)[0][0]
        q_all_rand = group_modularity(batch_group_graphs(corr_all, groups), res, s0)[0]
        extra["all_positions"] = _compare("Q", "random", q_all, q_all_rand, "greater").to_dict()
    return ClusteringAnalysis(group, q_obs, qs_obs, mq_obs, float(conc[0]), float(ent[0]), loc,
                              group_labels, layer_labels, tuple(comps), nulls, z_boot,
                              equivalence, extra)


def _sensitivity(w: np.ndarray, w_rand: np.ndarray, resolutions: tuple[float, ...],
                 seeds: tuple[int, ...], done: dict) -> list[dict]:
    """Q and signed Q vs random groups at every resolution (null with seeds[0]); the observed
    group's Q at every seed shows how much the partition depends on the node order."""
    out = []
    for r in resolutions:
        qr, qsr = done[r] if r in done else group_modularity(w_rand, r, seeds[0])
        per_seed = [group_modularity(w, r, s) for s in seeds]
        q_seed = [float(a[0]) for a, _ in per_seed]
        qs_seed = [float(b[0]) for _, b in per_seed]
        out.append({"resolution": r, "Q_by_seed": q_seed, "Q_signed_by_seed": qs_seed,
                    "Q": _compare("Q", "random", q_seed[0], qr, "greater").to_dict(),
                    "Q_signed": _compare("Q_signed", "random", qs_seed[0], qsr,
                                         "greater").to_dict()})
    return out


def _leiden_check(w: np.ndarray, w_rand: np.ndarray, res: float, seed: int) -> dict:
    """The same comparison with leidenalg (Q) and networkx Louvain (observed), fewer groups."""
    from harness.analyses.communities import louvain_networkx

    q = modularity(w, leiden(w, res, seed), res)
    q_rand = np.array([modularity(x, leiden(x, res, seed), res) for x in w_rand])
    qs = modularity(w, leiden(w, res, seed, signed=True), res, signed=True)
    return {"leiden_Q": _compare("Q", "random", q, q_rand, "greater").to_dict(),
            "leiden_Q_signed_observed": float(qs),
            "networkx_louvain_Q_observed": float(modularity(w, louvain_networkx(w, res, seed),
                                                            res))}


# ================================================================ the verdict (cross-fitted)
#
# Why not the statistics above: the plateau group is *selected* by influence, random groups are
# not, and any top-influence group of a trained layer is more correlated than random neurons
# (high-variance, strongly driven neurons). So the verdict (1) selects the group on one half of
# the rows and measures its graph on the other half (and the swap), (2) compares it with groups
# made by the same selection on size-matched common positions (the selection null) and with
# random groups matched on the activation statistics that drive correlation (mean, SD, share
# of active positions), and (3) measures an effect that grows with a module: the group's mean
# within-group correlation minus its mean correlation with the rest of the layer (the
# "contrast"), in excess of the null groups' contrast, in correlation units.

DEFAULT_SESOI = 0.1     # claims/test_no_clustering.py SPEC states and justifies it
MAX_SMD = 0.25          # matched-null balance: |standardised mean difference| per statistic
MIN_TEST_ROWS = 8       # rows with rare positions per test half (a row bootstrap needs rows)
N_CANDIDATES = 5        # nearest non-group neurons each member's match is drawn from
VERDICT_NULLS = ("selection", "matched")
STAT_NAMES = ("mean", "sd", "active", "strength")
COMBINE = ("estimate = mean of the two folds; significant iff both folds' one-sided p <= "
           "alpha (p = their max: valid under any dependence between folds); non-superior iff "
           "both folds' upper bounds < SESOI; interval = union of the folds' intervals")


class CorrView:
    """A test half's neuron correlations [m, m], optionally with the rows (and columns) of a
    few neurons replaced - a planted factor - without copying the base matrix."""

    def __init__(self, base: np.ndarray, rowsum: np.ndarray | None = None,
                 changed: np.ndarray | None = None, rows: np.ndarray | None = None):
        self.base = base
        self.m = base.shape[0]
        self.rowsum = base.sum(1) if rowsum is None else rowsum
        self.changed = None if changed is None else np.asarray(changed, dtype=np.int64)
        self.rows = rows
        self._pos = None
        if self.changed is not None:
            self._pos = np.full(self.m, -1, dtype=np.int64)
            self._pos[self.changed] = np.arange(self.changed.size)

    def block(self, groups: np.ndarray) -> np.ndarray:
        """[G, k, k] correlations inside each group (rows of `groups`), zero diagonal."""
        g = np.atleast_2d(np.asarray(groups, dtype=np.int64))
        w = self.base[g[:, :, None], g[:, None, :]].astype(np.float64)
        if self._pos is not None:
            pos = self._pos[g]
            hit = pos >= 0
            if hit.any():
                r = self.rows[np.maximum(pos, 0)[:, :, None], g[:, None, :]]
                w = np.where(hit[:, :, None], r, w)
                w = np.where(hit[:, None, :], np.swapaxes(r, 1, 2), w)
        idx = np.arange(g.shape[1])
        w[:, idx, idx] = 0.0
        return w

    def rows_of(self, idx: np.ndarray) -> np.ndarray:
        """[len(idx), m] the correlation rows of neurons idx (planted rows and columns
        included)."""
        idx = np.asarray(idx, dtype=np.int64)
        r = np.array(self.base[idx], dtype=np.float64)
        if self._pos is not None:
            hit = self._pos[idx] >= 0
            r[hit] = self.rows[self._pos[idx[hit]]]
            r[:, self.changed] = self.rows[:, idx].T
        return r

    def strength_outside(self, group: np.ndarray) -> np.ndarray:
        """[m] every neuron's mean r with the neurons outside `group` (itself excluded): the
        degree a group's members and their matches are compared on, free of the group's own
        pairs (a module raises its members' total strength, not this)."""
        group = np.asarray(group, dtype=np.int64)
        inside = self.rows_of(group).sum(0)            # sum over j in group of r_lj
        member = np.zeros(self.m, dtype=bool)
        member[group] = True
        # rowsum includes r_ll = 1: for members it is inside the group sum, for others not
        out = self.rowsum - inside - np.where(member, 0.0, 1.0)
        return out / np.where(member, self.m - group.size, self.m - 1 - group.size)

    def contrast(self, groups: np.ndarray, chunk: int = 256
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(contrast, within, between) [G]: mean r over the group's pairs, mean r of its
        members with every neuron outside it, and their difference."""
        g = np.atleast_2d(np.asarray(groups, dtype=np.int64))
        k = g.shape[1]
        within = np.empty(len(g))
        between = np.empty(len(g))
        for s in range(0, len(g), chunk):
            gs = g[s:s + chunk]
            inside = self.block(gs).sum(axis=(1, 2))
            within[s:s + chunk] = inside / (k * (k - 1))
            # rowsum includes the diagonal (1) and the group's own pairs
            between[s:s + chunk] = (self.rowsum[gs].sum(1) - inside - k) / (k * (self.m - k))
        return within - between, within, between

    def planted(self, x: np.ndarray, sd: np.ndarray, group: np.ndarray, xg_new: np.ndarray
                ) -> "CorrView":
        """The view after the group's centred columns of x [n, m] become xg_new [n, k]
        (from a base view: plants do not stack)."""
        if self.changed is not None:
            raise BadInputError("plant into the base view, not into an already planted one")
        n = x.shape[0]
        xg_new = xg_new - xg_new.mean(0)
        sd_new = np.sqrt((xg_new ** 2).mean(0))
        cov = (xg_new.T @ x) / n
        cov[:, group] = (xg_new.T @ xg_new) / n
        sd_all = sd.copy()
        sd_all[group] = sd_new
        with np.errstate(divide="ignore", invalid="ignore"):
            rows = cov / sd_new[:, None] / sd_all[None, :]
        rows = np.clip(np.where(np.isfinite(rows), rows, 0.0), -1.0, 1.0)
        rows[np.arange(group.size), group] = 1.0
        rowsum = self.rowsum + (rows - self.base[group]).sum(0)
        rowsum[group] = rows.sum(1)
        return CorrView(self.base, rowsum, group, rows)


def split_rows(row: np.ndarray, rare: np.ndarray, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
    """Two halves of the rows, random but balanced in rare positions: rows in random order,
    each to the half with fewer rare positions so far (ties: the half with fewer rows)."""
    rows = np.unique(row)
    n_rare = np.bincount(np.searchsorted(rows, row[rare]), minlength=rows.size)
    halves: tuple[list, list] = ([], [])
    load = [0, 0]
    for i in rng.permutation(rows.size):
        h = 0 if (load[0], len(halves[0])) < (load[1], len(halves[1])) else 1
        if (load[0], len(halves[0])) == (load[1], len(halves[1])):
            h = int(rng.integers(2))
        halves[h].append(rows[i])
        load[h] += int(n_rare[i])
    return np.sort(np.array(halves[0], dtype=np.int64)), np.sort(np.array(halves[1],
                                                                          dtype=np.int64))


def activation_stats(x: np.ndarray) -> np.ndarray:
    """[m, 3] per-neuron mean, SD and share of positions with activation > 0 (scale of drive,
    variability, sparsity). The matched null adds a fourth, group-specific statistic: the
    strength outside the group (CorrView.strength_outside) - the degree that modularity's
    configuration-model null preserves."""
    x = np.asarray(x, dtype=np.float64)
    return np.stack([x.mean(0), x.std(0), (x > 0).mean(0)], axis=1)


@lru_cache(maxsize=256)
def _t_quantile(q: float, df: int) -> float:
    return float(stats.t.ppf(q, df))


def _percentiles(stats_: np.ndarray) -> np.ndarray:
    """Column-wise rank percentiles in [0, 1] (ties averaged)."""
    return np.stack([(stats.rankdata(c) - 1) / max(len(c) - 1, 1) for c in stats_.T], axis=1)


def matched_groups(stats_: np.ndarray, group: np.ndarray, n: int, rng: np.random.Generator,
                   n_cand: int = N_CANDIDATES, pct: np.ndarray | None = None
                   ) -> tuple[np.ndarray, dict]:
    """[n, k] random groups matched member by member to `group` on activation statistics.

    Each statistic is turned into rank percentiles over the layer; member i's match is drawn
    uniformly from its n_cand nearest non-group neurons (Euclidean distance in percentile
    space), without repeats inside a draw (the next nearest free neuron when all n_cand are
    taken). Balance: per statistic, the standardised mean difference (group members minus all
    matched members, in layer SDs of the percentile) and the mean distance to the match."""
    group = np.asarray(group, dtype=np.int64)
    m, k = stats_.shape[0], group.size
    pct = _percentiles(stats_) if pct is None else pct
    pool = np.setdiff1d(np.arange(m), group)
    if pool.size < k + n_cand:
        raise BadInputError(f"only {pool.size} other neurons to match a group of {k}")
    d = np.linalg.norm(pct[group][:, None, :] - pct[pool][None, :, :], axis=2)   # [k, pool]
    span = min(pool.size, n_cand + k)
    near = np.argpartition(d, span - 1, axis=1)[:, :span]
    near = np.take_along_axis(near, np.argsort(np.take_along_axis(d, near, 1), 1), 1)
    cand = pool[near]                                                           # [k, span]
    out = np.empty((n, k), dtype=np.int64)
    used = np.zeros((n, m), dtype=bool)
    order_score = -(np.arange(span) + 1.0) / (span + 1.0)                      # beyond n_cand
    first = np.arange(span) < n_cand
    rows = np.arange(n)
    for a in rng.permutation(k):
        c = cand[a]
        score = np.where(first, rng.random((n, span)), order_score)
        score = np.where(used[:, c], -np.inf, score)
        pick = c[np.argmax(score, axis=1)]
        out[:, a] = pick
        used[rows, pick] = True
    sd_layer = pct.std(0)
    ns = stats_.shape[1]
    smd = (pct[group].mean(0) - pct[out].reshape(-1, ns).mean(0)) / np.where(sd_layer > 0,
                                                                             sd_layer, 1.0)
    dist = np.linalg.norm(pct[out] - pct[group][None], axis=2).mean()
    balance = {"smd": {s: float(v) for s, v in zip(STAT_NAMES, smd)},
               "max_abs_smd": float(np.max(np.abs(smd))), "mean_distance_pct": float(dist),
               "group_mean": {s: float(v) for s, v in zip(STAT_NAMES, stats_[group].mean(0))},
               "matched_mean": {s: float(v) for s, v in
                                zip(STAT_NAMES, stats_[out].reshape(-1, ns).mean(0))},
               "n_cand": n_cand}
    return out, balance


def selection_null(delta: np.ndarray, pool: np.ndarray, n_pick: int, k: int, sign: str,
                   n: int, rng: np.random.Generator) -> np.ndarray:
    """[n, k] groups made by the claim's selection (regimes.top_neurons: the k most
    influential neurons of the sign group) on n draws of n_pick common positions from `pool`
    (position indices of the selection half), without replacement while the pool allows."""
    from harness.analyses.regimes import top_neurons

    pool = np.asarray(pool, dtype=np.int64)
    if pool.size == 0:
        raise BadInputError("no common positions in the selection half for the selection null")
    sub = np.asarray(delta)[pool].astype(np.float64)  # converted once, not per draw
    out = np.empty((n, k), dtype=np.int64)
    mask = np.zeros(pool.size, dtype=bool)
    for b in range(n):
        mask[:] = False
        mask[rng.choice(pool.size, n_pick, replace=pool.size < n_pick)] = True
        g = top_neurons(sub, mask, k, sign=sign)
        if g.size < k:
            raise BadInputError(f"the selection null found only {g.size} {sign} neurons "
                                f"(group size {k})")
        out[b] = g
    return out


def row_bootstrap_cov(y: np.ndarray, row: np.ndarray, n_boot: int, rng: np.random.Generator,
                      weights: np.ndarray | None = None, key: tuple[int, ...] = ()
                      ) -> np.ndarray:
    """[n_boot, p, p] covariance of the columns of y [n, p] in each row-bootstrap replicate,
    from per-row sums (one pass over the data, then a matmul per replicate). weights
    [n_boot, n_rows]: given row multiplicities (rows in sorted order) instead of random ones;
    key: passed to resample_weights."""
    y = np.asarray(y, dtype=np.float64)
    y = y - y.mean(0)
    p = y.shape[1]
    rows, inv = np.unique(row, return_inverse=True)
    s1 = np.zeros((rows.size, p))
    np.add.at(s1, inv, y)
    s2 = np.zeros((rows.size, p, p))
    for r in range(rows.size):
        yr = y[inv == r]
        s2[r] = yr.T @ yr
    cnt = np.bincount(inv, minlength=rows.size).astype(np.float64)
    w = (resample_weights(rows.size, n_boot, rng, key) if weights is None
         else np.atleast_2d(weights))
    tot = w @ cnt
    mean = (w @ s1) / tot[:, None]
    second = np.einsum("br,rij->bij", w, s2) / tot[:, None, None]
    return second - mean[:, :, None] * mean[:, None, :]


def contrast_bootstrap(xg: np.ndarray, u_rest: np.ndarray, row: np.ndarray, m: int,
                       n_boot: int, rng: np.random.Generator,
                       weights: np.ndarray | None = None, key: tuple[int, ...] = ()
                       ) -> np.ndarray:
    """[n_boot] row-bootstrap replicates of the contrast of one group.

    xg [n, k]: the members' activations; u_rest [n]: sum over the other neurons of x_l / sd_l
    (their full-data SDs), so that sum_l r_il = cov(x_i, u_rest) / sd_i - exact at the full
    data, and in each replicate the others' SDs are held at their full-data values (an m x m
    correlation per replicate is not needed). weights [n_boot, n_rows]: given row
    multiplicities instead of random ones (rows in sorted order). key: passed to
    resample_weights (tells the folds apart under the shared bootstrap)."""
    k = xg.shape[1]
    cov = row_bootstrap_cov(np.column_stack([xg, u_rest]), row, n_boot, rng, weights, key)
    var = np.clip(np.diagonal(cov[:, :k, :k], axis1=1, axis2=2), 1e-300, None)
    sd = np.sqrt(var)
    corr = cov[:, :k, :k] / sd[:, :, None] / sd[:, None, :]
    within = (corr.sum(axis=(1, 2)) - k) / (k * (k - 1))
    between = (cov[:, :k, k] / sd).mean(1) / (m - k)
    return within - between


def _pvalue(observed: float, null: np.ndarray) -> float:
    return empirical_p(observed, null, "greater")


# resample_weights key of each cross-fit fold: the two test halves usually hold equally many
# rows, and under the shared bootstrap equal sizes would otherwise get the same weights
FOLD_KEYS = {"A->B": 0, "B->A": 1}


@dataclass
class Fold:
    """One cross-fitting fold: the group selected on `select_rows`, tested on `test_rows`."""

    name: str
    select_rows: np.ndarray
    test_rows: np.ndarray
    n_rare_select: int
    n_common_select: int
    group: np.ndarray
    x: np.ndarray            # float64 [n_t, m] centred activations, rare positions of test rows
    row: np.ndarray          # [n_t] their rows
    sd: np.ndarray           # [m]
    u_all: np.ndarray        # [n_t] sum_l x_l / sd_l
    stats: np.ndarray        # [m, 3] activation_stats on the test positions
    view: CorrView
    selection: np.ndarray    # [B, k] selection-null groups
    selection_c: np.ndarray  # [B] their contrasts on the test positions

    @property
    def pct(self) -> np.ndarray:
        """[m, 3] percentiles of `stats` (computed once: a fold's stats never change)."""
        if "_pct" not in self.__dict__:
            self.__dict__["_pct"] = _percentiles(self.stats)
        return self.__dict__["_pct"]

    @property
    def inv_sd(self) -> np.ndarray:
        return np.where(self.sd > 0, 1.0 / np.where(self.sd > 0, self.sd, 1.0), 0.0)

    @property
    def n_test_rows(self) -> int:
        return int(np.unique(self.row).size)


def fold_matched(fold: Fold, group: np.ndarray, n: int, rng: np.random.Generator,
                 n_cand: int = N_CANDIDATES, *, view: CorrView | None = None,
                 stats_: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """The matched null of a group on one fold (claims 2 and 4): matched_groups on activation
    mean, SD, share active and the strength outside the group (from `view`, planted or not)."""
    view = fold.view if view is None else view
    stats_ = fold.stats if stats_ is None else stats_
    strength = view.strength_outside(group)
    pct = np.column_stack([fold.pct if stats_ is fold.stats else _percentiles(stats_),
                           _percentiles(strength[:, None])])
    return matched_groups(np.column_stack([stats_, strength]), group, n, rng, n_cand, pct=pct)


def fold_statistics(fold: Fold, group: np.ndarray, *, view: CorrView | None = None,
                    stats_: np.ndarray | None = None, xg: np.ndarray | None = None,
                    selection_c: np.ndarray | None = None, n_matched: int = 200,
                    n_boot: int = 200, rng: np.random.Generator, n_cand: int = N_CANDIDATES,
                    keep_nulls: bool = False) -> dict:
    """The verdict's numbers for one group in one fold: its contrast, and its excess over the
    selection null and the matched null (estimate, one-sided empirical p, z), the row-bootstrap
    s.e. of its contrast (nulls held fixed) and the matched null's balance. Overrides (view,
    stats_, xg, selection_c) serve own-data power (planted factor, left-out null draw)."""
    view = fold.view if view is None else view
    stats_ = fold.stats if stats_ is None else stats_
    group = np.asarray(group, dtype=np.int64)
    xg = fold.x[:, group] if xg is None else xg
    sel_c = fold.selection_c if selection_c is None else selection_c
    c, within, between = (float(v[0]) for v in view.contrast(group[None]))
    matched, balance = fold_matched(fold, group, n_matched, rng, n_cand, view=view,
                                    stats_=stats_)
    match_c = view.contrast(matched)[0]
    u_rest = fold.u_all - fold.x[:, group] @ fold.inv_sd[group]
    boot = contrast_bootstrap(xg, u_rest, fold.row, view.m, n_boot, rng,
                              key=(FOLD_KEYS.get(fold.name, len(FOLD_KEYS)),))
    out = {"contrast": c, "within": within, "between": between,
           "se": max(float(np.std(boot, ddof=1)), 1e-9), "balance": balance,
           "n_test_rows": fold.n_test_rows, "_boot": boot}
    for name, null in (("selection", sel_c), ("matched", match_c)):
        sd = float(np.std(null, ddof=1))
        out[name] = {"estimate": c - float(np.mean(null)), "p": _pvalue(c, null),
                     "z": (c - float(np.mean(null))) / sd if sd > 0 else float("nan"),
                     "null_mean": float(np.mean(null)), "null_sd": sd, "n": int(null.size)}
    if keep_nulls:
        out["_nulls"] = {"selection": sel_c, "matched": match_c, "matched_groups": matched}
    return out


def combine_folds(per_fold: list[dict], sesoi: float, alpha: float) -> list[dict]:
    """The verdict family: one row per null in VERDICT_NULLS with its folds combined (COMBINE).

    significant: one-sided p <= alpha in both folds. non_superior: in both folds the upper
    (1 - 2 alpha) bound (row-bootstrap s.e., t quantile with test rows - 1 degrees of freedom:
    a bootstrap over few rows understates the s.e.) lies below +SESOI - the upper half of the
    TOST;
    the claim is one-sided (a module means MORE co-activation; a group less co-activated than
    a null is no module), and the full two-sided TOST is reported beside it. The interval is
    the union of the folds' intervals, so both decisions read off it."""
    dfs = [max(int(f["n_test_rows"]) - 1, 1) for f in per_fold]
    tq = [_t_quantile(1 - alpha, df) for df in dfs]
    rows = []
    for name in VERDICT_NULLS:
        est = [float(f[name]["estimate"]) for f in per_fold]
        ps = [float(f[name]["p"]) for f in per_fold]
        ses = [float(f["se"]) for f in per_fold]
        eqs = [tost(e, s, -sesoi, sesoi, alpha, df) for e, s, df in zip(est, ses, dfs)]
        upper = max(e + t * s for e, s, t in zip(est, ses, tq))
        rows.append({"metric": "contrast", "null": name, "estimate": float(np.mean(est)),
                     "estimate_by_fold": est, "p_by_fold": ps, "p_max": max(ps),
                     "se_by_fold": ses,
                     "ci_low": min(e - t * s for e, s, t in zip(est, ses, tq)),
                     "ci_high": upper, "non_superior": bool(upper < sesoi),
                     "non_superiority_p": max(float(stats.t.cdf((e - sesoi) / s, df))
                                              for e, s, df in zip(est, ses, dfs)),
                     "tost_equivalent": all(e.equivalent for e in eqs),
                     "tost_p": max(e.p_value for e in eqs),
                     "significant": bool(max(ps) <= alpha),
                     "exceeds_sesoi": bool(np.mean(est) > sesoi),
                     "z_by_fold": [f[name]["z"] for f in per_fold]})
    _, q = bh_fdr(np.array([r["p_max"] for r in rows]), alpha)
    for r, qa in zip(rows, q):
        r["q_bh"] = float(qa)   # reported; the verdict's family is an intersection-union test
    return rows


def crossfit_validity(per_fold: list[dict]) -> tuple:
    """The validity gates of a cross-fitted group test (claims 2 and 4): the matched null's
    balance (folds that drew matched groups) and enough test rows for a row bootstrap."""
    from harness.verdicts import Gate

    smd = max((f["balance"]["max_abs_smd"] for f in per_fold if "balance" in f), default=0.0)
    rows_min = min(f["n_test_rows"] for f in per_fold)
    return (
        Gate("matched_balance", bool(smd <= MAX_SMD), smd, MAX_SMD,
             f"matched random groups are unbalanced (max |SMD| {smd:.2f} > {MAX_SMD:g}): the "
             "matched null is no control"),
        Gate("test_rows", bool(rows_min >= MIN_TEST_ROWS), float(rows_min), float(MIN_TEST_ROWS),
             f"only {rows_min} rows with rare positions in a test half (need "
             f">= {MIN_TEST_ROWS} for a row bootstrap)"))


def decide_family(family: list[dict], per_fold: list[dict], sesoi: float, alpha: float):
    """decide_absent on the verdict family (FAMILY_TEXT) with the validity gates."""
    from harness.verdicts import decide_absent

    validity = crossfit_validity(per_fold)
    return decide_absent(
        equivalent=all(r["non_superior"] for r in family),
        significant=all(r["significant"] for r in family),
        estimate=min(r["estimate"] for r in family), sesoi=sesoi,
        family=FAMILY_TEXT, validity=validity,
        detail="equivalence here = non-superiority, every upper bound < +SESOI; " + "; ".join(
            f"vs {r['null']} null: excess r {r['estimate']:+.3f} (folds "
            f"{', '.join(f'{e:+.3f}' for e in r['estimate_by_fold'])}; p "
            f"{', '.join(f'{p:.3g}' for p in r['p_by_fold'])}; {100 * (1 - 2 * alpha):.0f}% CI "
            f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}])" for r in family))


PLANT_GRID = (0.0, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0, 1.3, 1.7, 2.2, 3.0, 4.5, 7.0, 12.0)


def copula_plant(xg: np.ndarray, loading: float, f: np.ndarray) -> np.ndarray:
    """A shared factor that leaves every neuron's activation distribution unchanged.

    Each column of xg [n, k] keeps its exact values (so mean, SD and share of active positions
    - what the matched null matches on - do not move); they are re-ordered so that their
    normal scores become (z + loading * f) / sqrt(1 + loading^2), i.e. the group co-activates
    through f. An additive factor would also raise the members' SD and active share, mixing a
    change of activation statistics into the planted module."""
    xg = np.asarray(xg)
    if loading == 0:
        return xg.copy()
    n = xg.shape[0]
    scores = stats.norm.ppf((np.arange(n) + 0.5) / n)   # normal score of each rank
    z = scores[np.argsort(np.argsort(xg, axis=0, kind="stable"), axis=0)]
    z = (z + loading * np.asarray(f)[:, None]) / np.sqrt(1.0 + loading ** 2)
    order = np.argsort(np.argsort(z, axis=0, kind="stable"), axis=0)
    return np.take_along_axis(np.sort(xg, axis=0), order, axis=0)


def plant_curve(x: np.ndarray, sd: np.ndarray, view: "CorrView", group: np.ndarray,
                xg_raw: np.ndarray, rng: np.random.Generator, draws: int = 4
                ) -> tuple[np.ndarray, np.ndarray]:
    """(loadings, mean rise of the group's contrast) over PLANT_GRID for copula_plant on this
    data (made monotone), so that an effect size maps to a loading: plant_for(effect, ...)."""
    base = float(view.contrast(group[None])[0][0])
    rise = []
    for s in PLANT_GRID:
        vals = [float(view.planted(x, sd, group, copula_plant(
            xg_raw, s, rng.standard_normal(x.shape[0]))).contrast(group[None])[0][0]) - base
            for _ in range(draws if s else 1)]
        rise.append(np.mean(vals))
    return np.array(PLANT_GRID), np.maximum.accumulate(np.array(rise))


def plant_for(effect: float, loadings: np.ndarray, rise: np.ndarray) -> float:
    """The loading whose expected contrast rise is `effect` (the largest tried if the data
    cannot reach it: a rank-preserving plant is bounded by the marginals' comonotone r)."""
    if effect <= 0:
        return 0.0
    if effect >= rise[-1]:
        return float(loadings[-1])
    i = int(np.searchsorted(rise, effect))
    r0, r1 = rise[i - 1], rise[i]
    t = 0.0 if r1 <= r0 else (effect - r0) / (r1 - r0)
    return float(loadings[i - 1] + t * (loadings[i] - loadings[i - 1]))


@dataclass
class CrossFit:
    """Everything the cross-fitted claim-2 verdict measured (arrays kept for plots and for
    own-data power; results.json gets crossfit_result's details)."""

    folds: list[Fold]
    per_fold: list[dict]
    family: list[dict]
    decision: Any
    reported: list[dict]
    legacy: list[ClusteringAnalysis | None]
    halves: tuple[np.ndarray, np.ndarray]
    sesoi: float
    alpha: float
    settings: dict

    @property
    def headline(self) -> dict:
        return self.family[0]


def _group_ok(group: np.ndarray, m: int) -> np.ndarray:
    group = np.asarray(group, dtype=np.int64)
    if group.ndim != 1 or group.size < 4 or np.unique(group).size != group.size:
        raise BadInputError("the selection must give >= 4 distinct neuron indices (got "
                            f"{group.size})")
    if group.min() < 0 or group.max() >= m:
        raise BadInputError(f"group indices must lie in [0, {m})")
    return group


def crossfit_analysis(acts: np.ndarray, delta: np.ndarray, row: np.ndarray, rare: np.ndarray,
                      common: np.ndarray, select: Callable[[np.ndarray], np.ndarray], *,
                      sign: str = "boost", sesoi: float = DEFAULT_SESOI, alpha: float = 0.05,
                      n_selection: int = 200, n_matched: int = 200, n_random: int = 1000,
                      n_boot: int = 200, n_cand: int = N_CANDIDATES,
                      legacy: dict | None = None, graph_stats: bool = True,
                      seed: int = 0) -> CrossFit:
    """Claim 2's verdict analysis (see the section comment above).

    acts [n_pos, m] activations and delta [n_pos, m] influences at every evaluated position;
    row [n_pos]; rare, common: bool [n_pos]; select(mask) -> the group (e.g. the plateau
    neurons of the rare positions in `mask`); sign: the sign group the selection ranks (the
    selection null takes the k most influential of that sign on common positions, k = the
    group's size). legacy: options for clustering_analysis (Louvain Q, signed Q, module_Q,
    concentration, shuffle/rotation nulls) run per fold on the test half - reported only;
    None skips it. graph_stats=False skips the reported module_Q / Louvain Q comparisons
    (calibration runs: they do not enter the verdict)."""
    acts, delta, row = np.asarray(acts), np.asarray(delta), np.asarray(row)
    rare, common = np.asarray(rare, dtype=bool), np.asarray(common, dtype=bool)
    n_pos, m = acts.shape
    if delta.shape != (n_pos, m) or row.shape != (n_pos,) or rare.shape != (n_pos,) or \
            common.shape != (n_pos,):
        raise BadInputError(f"acts/delta must be [n_pos, m] and row/rare/common [n_pos]; got "
                            f"{acts.shape}, {delta.shape}, {row.shape}, {rare.shape}, "
                            f"{common.shape}")
    if np.unique(row[rare]).size < 4:
        raise BadInputError("need rare positions in at least 4 rows to cross-fit")
    if n_selection < 2 or n_matched < 2:
        raise BadInputError("n_selection and n_matched must be >= 2")
    rng = np.random.default_rng([seed, 2])
    halves = split_rows(row, rare, rng)
    folds, per_fold, reported, legacy_out = [], [], [], []
    for h, name in ((0, "A->B"), (1, "B->A")):
        sel_rows, test_rows = halves[h], halves[1 - h]
        in_sel = np.isin(row, sel_rows)
        sel_rare, test_rare = rare & in_sel, rare & ~in_sel
        if sel_rare.sum() < 2 or test_rare.sum() < 2:
            raise BadInputError("too few rare positions in a half to cross-fit")
        group = _group_ok(select(sel_rare), m)
        k = group.size
        raw = acts[test_rare]
        x = raw.astype(np.float64)
        x -= x.mean(0)
        sd = x.std(0)
        corr = correlation_matrix(raw)
        view = CorrView(corr)
        inv_sd = np.where(sd > 0, 1.0 / np.where(sd > 0, sd, 1.0), 0.0)
        selection = selection_null(delta, np.flatnonzero(common & in_sel), int(sel_rare.sum()),
                                   k, sign, n_selection, rng)
        fold = Fold(name, sel_rows, test_rows, int(sel_rare.sum()),
                    int((common & in_sel).sum()), group, x, row[test_rare], sd, x @ inv_sd,
                    activation_stats(raw), view, selection,
                    view.contrast(selection)[0])
        st = fold_statistics(fold, group, n_matched=n_matched, n_boot=n_boot, rng=rng,
                             n_cand=n_cand, keep_nulls=True)
        st.update(fold=name, n_test_rows=fold.n_test_rows, n_test_positions=int(x.shape[0]),
                  n_rare_select=fold.n_rare_select, k=k, group=group.tolist(),
                  selection_overlap=float(np.isin(selection, group).mean()))
        rand = random_groups(m, group, n_random, rng)
        rand_c = view.contrast(rand)[0]
        st["_nulls"]["random"] = rand_c
        sd_r = float(np.std(rand_c, ddof=1))
        st["random"] = {"estimate": st["contrast"] - float(rand_c.mean()),
                        "p": _pvalue(st["contrast"], rand_c),
                        "z": (st["contrast"] - float(rand_c.mean())) / sd_r if sd_r > 0
                        else float("nan"), "null_mean": float(rand_c.mean()), "null_sd": sd_r,
                        "n": int(rand_c.size)}
        if graph_stats:
            reported += _reported_graph_stats(fold, group, st, rand, alpha)
        folds.append(fold)
        per_fold.append(st)
        legacy_out.append(None if legacy is None else clustering_analysis(
            raw, row[test_rare], group, corr=corr, alpha=alpha, seed=seed + h, **legacy))
    family = combine_folds(per_fold, sesoi, alpha)
    decision = decide_family(family, per_fold, sesoi, alpha)
    settings = {"n_selection": n_selection, "n_matched": n_matched, "n_random": n_random,
                "n_boot": n_boot, "n_cand": n_cand, "sign": sign, "seed": seed,
                "legacy": legacy}
    return CrossFit(folds, per_fold, family, decision,
                    _bh_reported(reported, alpha) if reported else [],
                    legacy_out, halves, sesoi, alpha, settings)


def _reported_graph_stats(fold: Fold, group: np.ndarray, st: dict, rand: np.ndarray,
                          alpha: float) -> list[dict]:
    """module_Q and the paper's Louvain Q of the group vs the selection, matched and random
    nulls on this fold's test positions, and the contrast vs unmatched random groups: reported
    comparisons (Q drops for a cohesive module: see the module docstring)."""
    view = fold.view
    deg = positive_degrees(view.base)
    two_w = max(float(deg.sum()), 1e-300)
    nulls = {"selection": fold.selection, "matched": st["_nulls"]["matched_groups"],
             "random": rand}
    out = [{"fold": fold.name, "metric": "contrast", "null": "random", "observed":
            st["contrast"], **{k: st["random"][k] for k in ("z", "p", "null_mean", "null_sd")}}]
    w_obs = view.block(group[None])
    mq_obs = float(module_q(w_obs, deg[group].sum()[None], two_w)[0])
    q_obs = float(group_modularity(w_obs[0])[0][0])
    st["module_Q"], st["Q"] = mq_obs, q_obs
    for null_name, groups in nulls.items():
        w = view.block(groups)
        for metric, obs, null in (("module_Q", mq_obs, module_q(w, deg[groups].sum(1), two_w)),
                                  ("Q", q_obs, group_modularity(w)[0])):
            sd = float(np.std(null, ddof=1))
            out.append({"fold": fold.name, "metric": metric, "null": null_name,
                        "observed": obs, "z": (obs - float(null.mean())) / sd if sd > 0
                        else float("nan"), "p": _pvalue(obs, null),
                        "null_mean": float(null.mean()), "null_sd": sd})
            if null_name == "selection" and metric == "module_Q":
                st["_nulls"]["module_Q|selection"] = null
    return out


def _bh_reported(rows: list[dict], alpha: float) -> list[dict]:
    """Reported comparisons, combined over folds as the verdict is (p = max over folds), BH
    across them (a reported family, not the verdict's)."""
    keys = list(dict.fromkeys((r["metric"], r["null"]) for r in rows))
    out = []
    for metric, null in keys:
        rs = [r for r in rows if (r["metric"], r["null"]) == (metric, null)]
        out.append({"metric": metric, "null": null, "p_max": max(r["p"] for r in rs),
                    "z_by_fold": [r["z"] for r in rs],
                    "observed_by_fold": [r["observed"] for r in rs],
                    "null_mean_by_fold": [r["null_mean"] for r in rs]})
    _, q = bh_fdr(np.array([r["p_max"] for r in out]), alpha)
    for r, qa in zip(out, q):
        r["q"] = float(qa)
    return out


def power_curves(cf: CrossFit, seed: int) -> list:
    """Per fold, plant_curve of the group's real test-half activations: the loadings that
    raise its contrast by a given effect (own-data power of claim 2 and its method family)."""
    curve_rng = np.random.default_rng([seed, 77])
    return [plant_curve(fold.x, fold.sd, fold.view, fold.group, fold.x[:, fold.group],
                        curve_rng) for fold in cf.folds]


def null_state(cf: CrossFit, rng: np.random.Generator) -> dict:
    """A null replicate: in each fold one selection-null group in the group's place ('drop':
    its index among the selection draws), tested against the other draws."""
    folds = []
    for fold in cf.folds:
        b = int(rng.integers(len(fold.selection)))
        folds.append({"group": fold.selection[b], "drop": b,
                      "selection_c": np.delete(fold.selection_c, b)})
    return {"rng": rng, "folds": folds}


def planted_state(cf: CrossFit, curves: list, rng: np.random.Generator, effect: float) -> dict:
    """A planted replicate: copula_plant of a shared factor into each fold's group, with the
    loading that raises its contrast by `effect` (power_curves), and the planted view."""
    folds = []
    for fold, (loads, rise) in zip(cf.folds, curves):
        g = fold.group
        xg = copula_plant(fold.x[:, g], plant_for(effect, loads, rise),
                          rng.standard_normal(fold.x.shape[0]))
        view = fold.view.planted(fold.x, fold.sd, g, xg)
        folds.append({"group": g, "view": view, "xg": xg,
                      "selection_c": view.contrast(fold.selection)[0]})
    return {"rng": rng, "folds": folds}


def statistics_kwargs(fold_state: dict) -> dict:
    """A replicate fold's state as fold_statistics keyword arguments (without 'drop')."""
    return {k: v for k, v in fold_state.items() if k != "drop"}


def crossfit_own_power(cf: CrossFit, *, reps: int, seed: int = 0,
                       factors: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0), n_matched: int = 100,
                       n_boot: int = 50):
    """Power at the SESOI, MDE and false-positive rate of the verdict on this run's own data.

    plant: the REAL test-half activations of the group, in each fold, given a shared
    standard-normal factor by copula_plant (each neuron keeps its activation distribution; the
    loading is read off plant_curve so that the group's contrast rises by the effect in
    expectation); correlations, selection-null contrasts and matched draws are recomputed
    from the modified activations. null: the group replaced in each fold
    by one of that fold's selection-null groups (a group the same selection made on common
    positions - the 'shuffled labels' of this claim), tested against the other draws.
    Replicates are cheaper than the verdict itself (fewer matched groups and bootstrap
    draws; no Louvain/legacy statistics, which do not enter the verdict)."""
    from harness.stats.own_power import own_data_power

    curves = power_curves(cf, seed)

    def decide(state: dict) -> str:
        rng = state["rng"]
        per = []
        for fold, kw in zip(cf.folds, state["folds"]):
            st = fold_statistics(fold, rng=rng, n_matched=n_matched, n_boot=n_boot,
                                 n_cand=cf.settings["n_cand"], **statistics_kwargs(kw))
            per.append(st)
        return decide_family(combine_folds(per, cf.sesoi, cf.alpha), per, cf.sesoi,
                             cf.alpha).verdict

    def null(rng: np.random.Generator) -> dict:
        return null_state(cf, rng)

    def plant(rng: np.random.Generator, effect: float) -> dict:
        return planted_state(cf, curves, rng, effect)

    base_c = ", ".join(f"{f['contrast']:+.3f}" for f in cf.per_fold)
    reach = min(float(r[-1]) for _, r in curves)
    how = (f"plant: copula_plant - the group's real test-half activations re-ordered within "
           f"each neuron to share an N(0,1) factor (marginals, hence the matching statistics, "
           f"unchanged), loading interpolated for an expected contrast rise of effect "
           f"(largest reachable rise {reach:.3f}); base contrasts by fold: "
           f"{base_c}; base excess over the "
           f"selection null {cf.headline['estimate']:+.3f}, so planted groups carry that plus "
           f"the effect); null: a selection-null group in place of the group, vs the other "
           f"{cf.settings['n_selection'] - 1} draws; replicates use {n_matched} matched "
           f"groups and {n_boot} bootstrap draws (verdict: {cf.settings['n_matched']} / "
           f"{cf.settings['n_boot']}), reuse the selection-null groups, no Louvain")
    return own_data_power(decide, plant, null, sesoi=cf.sesoi, detect="refuted", reps=reps,
                          factors=factors, seed=seed, how=how)


def crossfit_result(cf: CrossFit, own_power=None) -> TestResult:
    """The claim-2 TestResult: verdict from the decision; headline = the excess contrast over
    the selection null (fold mean) with the union of the folds' (1 - 2 alpha) intervals (the
    TOSTs'); p = the intersection-union p (max over the family); Q and the other graph
    statistics in the details."""
    head = cf.headline
    public = [{k: v for k, v in f.items() if not k.startswith("_")} for f in cf.per_fold]
    legacy = []
    for f, a in zip(cf.per_fold, cf.legacy):
        if a is None:
            continue
        legacy.append({"fold": f["fold"], "Q": a.q, "Q_signed": a.q_signed,
                       "module_Q": a.module_q, "concentration": a.concentration,
                       "entropy": a.entropy, "locality": a.locality,
                       "comparisons": [c.to_dict() for c in a.comparisons],
                       **{k: v for k, v in a.extra.items() if k not in _LEGACY_DROP}})
    mean = (lambda key: float(np.mean([f[key] for f in public])))
    details = {
        "decision": cf.decision.to_dict(), "message": cf.decision.reason,
        "sesoi": cf.sesoi, "effect_measure": EFFECT_MEASURE,
        "family": cf.family, "correction": FAMILY_TEXT,
        "crossfit": {"unit": "rows", "halves": {"A": cf.halves[0].tolist(),
                                                 "B": cf.halves[1].tolist()},
                     "folds": public, "combine": COMBINE},
        "contrast": mean("contrast"), "within": mean("within"), "between": mean("between"),
        "module_Q": mean("module_Q") if "module_Q" in public[0] else None,
        "Q": mean("Q") if "Q" in public[0] else None,
        "Q_signed": (float(np.mean([a["Q_signed"] for a in legacy])) if legacy else None),
        "concentration": (float(np.mean([a["concentration"] for a in legacy])) if legacy
                          else None),
        "unmatched_random": {"estimate": mean_of(public, "random", "estimate"),
                             "p_max": max(f["random"]["p"] for f in public)},
        "reported": cf.reported, "reported_correction": "BH over the reported comparisons "
        "(contrast vs unmatched random groups; module_Q and Louvain Q vs the selection, "
        "matched and random nulls), each p the max over the folds; not used for the verdict",
        "legacy": legacy, "settings": cf.settings, "paper": PAPER,
        "ci_method": (f"union of the two folds' {100 * (1 - 2 * cf.alpha):.0f}% normal "
                      "intervals (the TOSTs') from the row-bootstrap s.e. of the group's "
                      "contrast; the null means are held fixed"),
    }
    q_rand = next((r for r in cf.reported if (r["metric"], r["null"]) == ("Q", "random")), None)
    if q_rand is not None:  # the paper's two numbers, for the report's paper-vs-run table
        details["plateau_q"] = float(np.mean(q_rand["observed_by_fold"]))
        details["random_q"] = float(np.mean(q_rand["null_mean_by_fold"]))
    if own_power is not None:
        details["own_power"] = own_power.to_dict()
    if shared_bootstrap_seed() is not None:  # paired across checkpoints (emergence)
        details["effect_replicates"] = replicate_list(effect_replicates(cf))
        details["effect_replicates_how"] = EFFECT_REPLICATES_HOW
    return TestResult(
        name="claim2_no_clustering", statistic=details["contrast"],
        p_value=float(max(r["p_max"] for r in cf.family)), effect=head["estimate"],
        ci_low=head["ci_low"], ci_high=head["ci_high"], verdict=cf.decision.verdict,
        effect_name=EFFECT_NAME, alpha=cf.alpha, details=details)


def effect_replicates(cf: CrossFit) -> np.ndarray:
    """[n_boot] bootstrap replicates of the headline effect (EFFECT_REPLICATES_HOW)."""
    return np.mean([f["_boot"] - f["selection"]["null_mean"] for f in cf.per_fold], axis=0)


EFFECT_REPLICATES_HOW = (
    "replicate b = mean over the two cross-fit folds of (the group's contrast in fold f's "
    "row-bootstrap replicate b - fold f's selection-null mean, held fixed): the draws whose "
    "s.e. makes the CI (the reported CI is the union of the folds' normal intervals, not a "
    "percentile of these). Each fold resamples its own test rows (stratified by half), with "
    "its own key, so replicate b resamples the same rows at every checkpoint of one model")


# the first version's z-TOST of Q / module_Q vs random groups: superseded by the verdict above
_LEGACY_DROP = ("all_positions", "tost_margin_z", "non_superiority_upper_z", "z_se_boot")


def mean_of(rows: list[dict], key: str, sub: str) -> float:
    return float(np.mean([r[key][sub] for r in rows]))


EFFECT_NAME = "excess contrast vs selection null (r, cross-fitted)"
EFFECT_MEASURE = ("contrast = mean r over the group's pairs minus mean r of its members with "
                  "the rest of the layer (rare positions of the test half); effect = the "
                  "group's contrast minus the mean contrast of the null groups, averaged over "
                  "the two cross-fit folds, in correlation units")
FAMILY_TEXT = ("intersection-union over {contrast vs selection null, contrast vs matched null} x "
               "{fold A->B, B->A}: refuted needs every member significant at alpha and both "
               "nulls' fold-mean estimates above the SESOI (an IUT: its error rate is at most "
               "alpha without correction); supported needs the upper (1 - 2 alpha) bound below "
               "the SESOI in every member (non-superiority, the upper half of the TOST; also an "
               "intersection, so no correction)")
