"""Figures for claim 2: the group's graph, the whole-layer community map, the null histograms."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from harness.analyses.clustering import ClusteringAnalysis  # noqa: E402
from harness.analyses.figio import save_figure  # noqa: E402


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


def plot_nulls(analysis: ClusteringAnalysis, path: str | Path) -> Path:
    """One histogram per null distribution with the observed value as a vertical line."""
    observed = {"Q": analysis.q, "Q_signed": analysis.q_signed, "module_Q": analysis.module_q,
                "concentration": analysis.concentration, "locality": analysis.locality}
    names = list(analysis.nulls)
    cols = 3
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        metric, null = name.split("|")
        ax.hist(analysis.nulls[name], bins=30, color="lightgrey")
        ax.axvline(observed[metric], color="tab:red", lw=2)
        ax.set_title(f"{metric} vs {null} null", fontsize=9)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    return save_figure(fig, path)

