"""Figures for claim 3, drawn from a `no_routing_test` result (its `details`), so the report
can re-render them from results.json without the arrays."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from harness.errors import BadInputError  # noqa: E402
from harness.stats.result import TestResult  # noqa: E402
from harness.analyses.figio import save_figure  # noqa: E402


def _per_head(result: TestResult) -> list[dict]:
    per_head = result.details.get("per_head")
    if not per_head:
        raise BadInputError(f"{result.name} has no per-head details (verdict {result.verdict}); "
                            "nothing to plot")
    return per_head


def head_grid(per_head: list[dict], key: str) -> np.ndarray:
    """[n_layers, n_heads_per_layer] grid of one per-head value (NaN where a head is absent)."""
    layers = sorted({h["layer"] for h in per_head})
    n_cols = max(h["head"] for h in per_head) + 1
    grid = np.full((len(layers), n_cols), np.nan)
    for h in per_head:
        v = h[key]
        grid[layers.index(h["layer"]), h["head"]] = np.nan if v is None else v
    return grid


def plot_selectivity_heatmap(result: TestResult, path: str | Path) -> Path:
    """Layer x head heatmaps: relative selectivity and -log10 BH q (routing heads boxed)."""
    per_head = _per_head(result)
    layers = sorted({h["layer"] for h in per_head})
    sel = head_grid(per_head, "rel_selectivity")
    with np.errstate(divide="ignore", invalid="ignore"):
        logq = -np.log10(head_grid(per_head, "q"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.5 * len(layers) + 2.5))
    lim = float(np.nanmax(np.abs(sel))) if np.isfinite(sel).any() else 1.0
    panels = [(sel, "relative selectivity (rare - matched common)", "RdBu_r", -lim, lim),
              (logq, "-log10 BH q (one-sided)", "viridis", 0.0, None)]
    for ax, (grid, title, cmap, vmin, vmax) in zip(axes, panels):
        im = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_yticks(range(len(layers)), [str(v) for v in layers])
        ax.set_xticks(range(grid.shape[1]))
        fig.colorbar(im, ax=ax, fraction=0.046)
        for h in per_head:
            if h["routing"]:
                ax.add_patch(plt.Rectangle((h["head"] - 0.5, layers.index(h["layer"]) - 0.5),
                                           1, 1, fill=False, edgecolor="k", linewidth=2))
    fig.suptitle(f"{result.name}: {result.verdict}", fontsize=10)
    return save_figure(fig, path, dpi=110)


def plot_rare_common_scatter(result: TestResult, path: str | Path) -> Path:
    """Per-head raw plateau influence, all rare vs all common contexts (log-log, y = x line):
    P2's "highly correlated" view; unmatched and unnormalised, so not the test's statistic."""
    conc = result.details.get("concentration")
    if not conc:
        raise BadInputError(f"{result.name} has no concentration details; nothing to plot")
    rare, common = np.asarray(conc["per_head_rare"]), np.asarray(conc["per_head_common"])
    routing = np.array([h["routing"] for h in _per_head(result)])
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(common[~routing], rare[~routing], s=14, alpha=0.7, label="heads")
    if routing.any():
        ax.scatter(common[routing], rare[routing], s=40, color="red", label="routing (BH)")
    ok = (rare > 0) & (common > 0)
    if ok.any():
        lo, hi = min(rare[ok].min(), common[ok].min()), max(rare[ok].max(), common[ok].max())
        ax.plot([lo, hi], [lo, hi], "k--", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
    rho = conc["spearman_rare_common"]["estimate"]
    ax.set_title(f"per-head raw plateau influence (Spearman {rho:.2f})", fontsize=9)
    ax.set_xlabel("common contexts")
    ax.set_ylabel("rare contexts")
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=110)

