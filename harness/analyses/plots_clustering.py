"""Figures for claim 2: the group's graph, the whole-layer community map, the null histograms."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from harness.analyses.clustering import CrossFit  # noqa: E402
from harness.analyses.figio import save_figure  # noqa: E402
from harness.report.figures import figure_title  # noqa: E402


def plot_group_graph(w: np.ndarray, labels: np.ndarray, path: str | Path,
                     title: str = "plateau group co-activation graph") -> Path:
    """Spring layout of the group's signed graph: red = positive r, blue = negative, colour =
    Louvain community; edges with |r| < 0.1 are not drawn (they would hide everything)."""
    import networkx as nx

    k = w.shape[0]
    g = nx.Graph()
    g.add_nodes_from(range(k))
    i, j = np.triu_indices(k, 1)
    for a, b in zip(i, j):
        if abs(w[a, b]) >= 0.1:
            g.add_edge(int(a), int(b), weight=abs(float(w[a, b])), sign=float(np.sign(w[a, b])))
    pos = nx.spring_layout(g, weight="weight", seed=0)
    fig, ax = plt.subplots(figsize=(6, 6))
    for a, b, d in g.edges(data=True):
        ax.plot(*zip(pos[a], pos[b]), color="tab:red" if d["sign"] > 0 else "tab:blue",
                alpha=min(1.0, d["weight"]), lw=0.5 + 2 * d["weight"])
    xy = np.array([pos[n] for n in range(k)])
    ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=80, edgecolors="k", zorder=3)
    ax.set_title(title)
    ax.axis("off")
    return save_figure(fig, path)


def plot_community_map(layer_labels: np.ndarray, group: np.ndarray, path: str | Path) -> Path:
    """Whole-layer communities (bars, sorted by size) with the plateau neurons in each."""
    sizes = np.bincount(layer_labels)
    in_group = np.bincount(layer_labels[group], minlength=sizes.size)
    order = np.argsort(-sizes)
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(sizes.size)
    ax.bar(x, sizes[order], color="lightgrey", label="all neurons")
    ax.bar(x, in_group[order], color="tab:red", label="plateau neurons")
    ax.set_xlabel("community (by size)")
    ax.set_ylabel("neurons")
    ax.set_yscale("log")
    ax.legend()
    return save_figure(fig, path)


def plot_nulls(cf: CrossFit, path: str | Path, *, model: str | None = None,
               setting: str | None = None, verdict: str | None = None) -> Path:
    """The verdict's nulls, one row per cross-fit fold: the contrast of every null group
    (selection null, matched null, and the unmatched random groups the paper used, reported
    only) as an excess over that null's mean, the group's excess (red) with its (1 - 2 alpha)
    interval (red band), and the SESOI (dashed: refuted needs the excess beyond it, supported
    needs the whole interval below it, against both verdict nulls in both folds). The title
    names the model, the setting (rarity, group) and the verdict: `verdict`, the claim's
    final one (after its precondition gate), else the cross-fit decision's."""
    from matplotlib.ticker import MaxNLocator
    from scipy import stats

    names = ("selection", "matched", "random")
    fig, axes = plt.subplots(len(cf.per_fold), 3, figsize=(13, 3.2 * len(cf.per_fold)),
                             squeeze=False)
    for row_axes, fold in zip(axes, cf.per_fold):
        t = stats.t.ppf(1 - cf.alpha, max(fold["n_test_rows"] - 1, 1))
        for ax, name in zip(row_axes, names):
            null = np.asarray(fold["_nulls"][name])
            excess = null - null.mean()
            est = fold[name]["estimate"]
            ax.hist(excess, bins=30, color="lightgrey")
            ax.axvspan(est - t * fold["se"], est + t * fold["se"], color="tab:red", alpha=0.15)
            ax.axvline(est, color="tab:red", lw=2)
            for x in (-cf.sesoi, cf.sesoi):
                ax.axvline(x, color="k", ls="--", lw=1)
            role = "verdict" if name != "random" else "reported"
            ax.set_title(f"{fold['fold']}: vs {name} null ({role})\nexcess {est:+.3f}, "
                         f"p {fold[name]['p']:.3g}, k={fold['k']}", fontsize=9)
            ax.set_xlabel("contrast - null mean (r)")
            ax.set_ylabel("null groups (count)")
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    fig.suptitle(figure_title("Claim 2, no clustering", model=model, setting=setting,
                              verdict=verdict or cf.decision.verdict,
                              extra=f"dashed: \N{PLUS-MINUS SIGN}SESOI {cf.sesoi:g}; red band: "
                                    f"{1 - 2 * cf.alpha:.0%} interval"), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_methods(details: dict, path: str | Path, *, model: str | None = None,
                 setting: str | None = None, verdict: str | None = None) -> Path:
    """Claim 2's verdict family, one line per method x resolution: the excess over the
    selection null in SESOI units (each member's SESOI: r for the contrast, pair share for
    the graph methods, silhouette for hierarchical) with its (1 - 2 alpha) interval, BH q in
    the label; dashed at +1 SESOI (refuted needs the excess beyond it, supported the whole
    interval below it)."""
    rows = details["methods"]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.5))
    y = np.arange(len(rows))[::-1]
    for yi, r in zip(y, rows):
        s = r["sesoi"]
        colour = "tab:red" if r["finds_module"] else "k"
        ax.plot([r["ci_low"] / s, r["ci_high"] / s], [yi, yi], color=colour, lw=2)
        ax.plot(r["estimate"] / s, yi, "o", color=colour)
    ax.set_yticks(y, [f"{r['method']} {'' if r['resolution'] is None else r['resolution']} "
                      f"(q {r['q_bh']:.2g})" for r in rows], fontsize=8)
    for x in (-1.0, 1.0):
        ax.axvline(x, color="k", ls="--", lw=1)
    ax.axvline(0.0, color="grey", lw=0.5)
    ax.set_xlabel("excess over the selection null (SESOI units)")
    fig.suptitle(figure_title("Claim 2, clustering methods", model=model, setting=setting,
                              verdict=verdict or details["decision"]["verdict"]), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
