"""Figures for claim 3, drawn from a `no_routing_test` result (its `details`), so the report
can re-render them from results.json without the arrays.

Colour scales are fixed, in units of the claim's SESOI (selectivity) and of the BH level
(q-values): an all-null result stays pale instead of being stretched to full saturation, and
the same colour means the same size in every report.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from harness.analyses.figio import save_figure  # noqa: E402
from harness.analyses.routing import SESOI  # noqa: E402
from harness.errors import BadInputError  # noqa: E402
from harness.report.figures import figure_title  # noqa: E402
from harness.stats.result import TestResult  # noqa: E402

SCALE = 2.0          # selectivity colour limits: +-SCALE x SESOI (beyond: the end colour)
Q_FLOOR = 1e-4       # -log10 q colour limit: 4


def _per_head(result: TestResult) -> list[dict]:
    per_head = result.details.get("per_head")
    if not per_head:
        raise BadInputError(f"{result.name} has no per-head details (verdict {result.verdict}); "
                            "nothing to plot")
    return per_head


def _sesoi(result: TestResult) -> float:
    return float(result.details.get("sesoi") or SESOI.value)


def colour_limits(result: TestResult) -> tuple[float, float]:
    """Selectivity colour limits: fixed at +-SCALE x SESOI, whatever the data."""
    lim = SCALE * _sesoi(result)
    return (-lim, lim)


def head_grid(per_head: list[dict], key: str) -> np.ndarray:
    """[n_layers, n_heads_per_layer] grid of one per-head value (NaN where a head is absent)."""
    layers = sorted({h["layer"] for h in per_head})
    n_cols = max(h["head"] for h in per_head) + 1
    grid = np.full((len(layers), n_cols), np.nan)
    for h in per_head:
        v = h[key]
        grid[layers.index(h["layer"]), h["head"]] = np.nan if v is None else v
    return grid


def plot_selectivity_heatmap(result: TestResult, path: str | Path, *, model: str | None = None,
                             setting: str | None = None) -> Path:
    """Layer x head heatmaps of relative selectivity (fixed scale; heads whose interval is not
    inside +-SESOI dotted, routing heads boxed) and -log10 BH q (fixed scale, the q = 0.05
    level marked), and every head's selectivity with its interval against the SESOI band.
    The title names the model, the setting (rarity, ablation mode) and the verdict."""
    per_head = _per_head(result)
    sesoi = _sesoi(result)
    layers = sorted({h["layer"] for h in per_head})
    sel = head_grid(per_head, "rel_selectivity")
    with np.errstate(divide="ignore", invalid="ignore"):
        logq = -np.log10(np.clip(head_grid(per_head, "q"), Q_FLOOR, 1.0))
    height = 0.28 * len(layers) + 2.6
    fig, axes = plt.subplots(1, 3, figsize=(15, height),
                             gridspec_kw={"width_ratios": [1, 1, 1.2]})
    lo, hi = colour_limits(result)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.85")
    panels = [(sel, f"relative selectivity (colour limits +-{SCALE:g} x SESOI)", cmap, lo, hi),
              (logq, "-log10 BH q (one-sided, capped at 4)", "Greys", 0.0,
               -np.log10(Q_FLOOR))]
    for ax, (grid, title, cm, vmin, vmax) in zip(axes[:2], panels):
        im = ax.imshow(grid, aspect="auto", cmap=cm, vmin=vmin, vmax=vmax,
                       interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        step = max(1, len(layers) // 15)
        ax.set_yticks(range(0, len(layers), step), [str(v) for v in layers[::step]])
        ax.set_xticks(range(grid.shape[1]))
        bar = fig.colorbar(im, ax=ax, fraction=0.046)
        if ax is axes[0]:
            bar.set_ticks([lo, -sesoi, 0.0, sesoi, hi])
            bar.ax.axhline(sesoi, color="k", linewidth=1)
            bar.ax.axhline(-sesoi, color="k", linewidth=1)
            bar.set_label("relative selectivity (lines: \N{PLUS-MINUS SIGN}SESOI)", fontsize=8)
        else:
            bar.ax.axhline(-np.log10(0.05), color="r", linewidth=1)
            bar.set_label("-log10 q (red: q = 0.05)", fontsize=8)
        for h in per_head:
            y, x = layers.index(h["layer"]), h["head"]
            if h["routing"]:
                ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False,
                                           edgecolor="k", linewidth=2))
            elif ax is axes[0] and not h.get("equivalent", True):
                ax.plot(x, y, marker=".", color="k", markersize=3)
    _forest(axes[2], per_head, sesoi)
    verdict = result.verdict
    fig.suptitle(figure_title("Claim 3, no routing", model=model, setting=setting,
                              verdict=verdict, extra=f"boxes: routing heads; dots: interval "
                                                     f"not inside \N{PLUS-MINUS SIGN}SESOI "
                                                     f"{sesoi:g}"), fontsize=10)
    return save_figure(fig, path, dpi=110)


def _forest(ax, per_head: list[dict], sesoi: float) -> None:
    """Every head's selectivity, sorted, with its (1 - 2 alpha) interval and the SESOI band."""
    s = np.array([np.nan if h["rel_selectivity"] is None else h["rel_selectivity"]
                  for h in per_head], float)
    ci = np.array([[np.nan if v is None else v
                    for v in (h.get("ci90") or h.get("ci95") or [None, None])]
                   for h in per_head], float)
    order = np.argsort(np.where(np.isfinite(s), s, -np.inf))
    x = np.arange(s.size)
    ax.axhspan(-sesoi, sesoi, color="0.9", zorder=0, label=f"+-SESOI {sesoi:g}")
    ax.axhline(0.0, color="0.5", linewidth=0.6)
    routing = np.array([h["routing"] for h in per_head])[order]
    ax.vlines(x, ci[order, 0], ci[order, 1], color=np.where(routing, "red", "0.35"),
              linewidth=0.8)
    ax.scatter(x, s[order], s=np.where(routing, 30, 6), color=np.where(routing, "red", "k"),
               zorder=3)
    lim = SCALE * sesoi
    finite = ci[np.isfinite(ci)]
    top = max(lim, float(np.nanmax(np.abs(finite))) if finite.size else lim)
    ax.set_ylim(-min(top, 4 * lim), min(top, 4 * lim))
    ax.set_xlim(-1 - 0.02 * s.size, s.size * 1.02)
    ax.set_xticks([])
    ax.set_xlabel(f"{s.size} heads, sorted by selectivity")
    ax.set_ylabel("relative selectivity s_h")
    ax.set_title("each head: selectivity, 90% interval, +-SESOI band", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")


def plot_rare_common_scatter(result: TestResult, path: str | Path, *,
                             model: str | None = None, setting: str | None = None) -> Path:
    """Per-head raw plateau influence, all rare vs all common contexts (log-log, y = x line):
    P2's "highly correlated" view; unmatched and unnormalised, so not the test's statistic.
    The title names the model, the setting and the claim's verdict."""
    from matplotlib.ticker import FuncFormatter
    conc = result.details.get("concentration")
    if not conc:
        raise BadInputError(f"{result.name} has no concentration details; nothing to plot")
    rare, common = np.asarray(conc["per_head_rare"]), np.asarray(conc["per_head_common"])
    routing = np.array([h["routing"] for h in _per_head(result)])
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(common[~routing], rare[~routing], s=14, alpha=0.7, label="heads")
    if routing.any():
        ax.scatter(common[routing], rare[routing], s=40, color="red", label="routing (BH, > SESOI)")
    ok = (rare > 0) & (common > 0)
    if ok.any():
        lo, hi = min(rare[ok].min(), common[ok].min()), max(rare[ok].max(), common[ok].max())
        ax.plot([lo, hi], [lo, hi], "k--", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers; minor labels at 2, 3, 5 x 10^k only
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(FuncFormatter(_minor_label))
    rho = conc["spearman_rare_common"]["estimate"]
    ax.set_title(figure_title("Claim 3", model=model, verdict=result.verdict)
                 + (f"\n{setting}" if setting else "")
                 + f"\nper-head raw plateau influence (Spearman {rho:.2f})", fontsize=9)
    ax.set_xlabel("plateau influence, common contexts (raw, log scale)")
    ax.set_ylabel("plateau influence, rare contexts (raw, log scale)")
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=110)


def _minor_label(value: float, _pos=None) -> str:
    """Minor log-axis tick labels at 2, 3 and 5 x 10^k only (all nine collide)."""
    if value <= 0:
        return ""
    mantissa = round(value / 10 ** np.floor(np.log10(value)), 6)
    return f"{value:g}" if mantissa in (2.0, 3.0, 5.0) else ""
