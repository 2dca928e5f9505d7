"""Summary figure of a run: a forest plot of every claim result's effect size with its CI.

Claim-specific figures (influence curves, null distributions, head maps) are drawn by the
analysis modules and passed in through `record_claim(figures=...)`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 100
FOREST_WIDTH_IN = 8.0
ROW_HEIGHT_IN = 0.3
PANEL_PAD_IN = 0.9
VERDICT_COLORS = {"supported": "#1b7837", "refuted": "#b2182b", "inconclusive": "#e08214",
                  "untestable": "#7f7f7f"}


def forest_height_in(rows_per_panel: list[int]) -> float:
    """Figure height: one panel per claim, ROW_HEIGHT_IN per result row."""
    return sum(ROW_HEIGHT_IN * n + PANEL_PAD_IN for n in rows_per_panel)


def forest_plot(panels: dict[str, list[dict]], path: str | Path) -> Path | None:
    """panels: title -> rows {label, effect, ci_low, ci_high, verdict, effect_name, sesoi,
    direction}.

    Rows without a finite effect are left out; returns None when nothing is left to draw.
    Each panel draws its claim's SESOI (dashed: +SESOI for an existence claim, the +-SESOI
    equivalence margin for an absence claim), the lines its verdicts are decided against.
    Saved at FOREST_WIDTH_IN x forest_height_in(...) inches and DPI, no PNG software tag, so
    the same input gives the same bytes.
    """
    panels = {t: [r for r in rows if r.get("effect") is not None] for t, rows in panels.items()}
    panels = {t: rows for t, rows in panels.items() if rows}
    if not panels:
        return None
    sizes = [len(rows) for rows in panels.values()]
    fig, axes = plt.subplots(len(panels), 1, squeeze=False,
                             figsize=(FOREST_WIDTH_IN, forest_height_in(sizes)),
                             gridspec_kw={"height_ratios": [ROW_HEIGHT_IN * n + PANEL_PAD_IN
                                                            for n in sizes]})
    for ax, (title, rows) in zip(axes[:, 0], panels.items()):
        _panel(ax, title, rows)
    verdicts = [v for v in VERDICT_COLORS if any(r.get("verdict") == v for rows in
                                                  panels.values() for r in rows)]
    handles = [plt.Line2D([], [], color=VERDICT_COLORS[v], marker="o", label=v) for v in verdicts]
    axes[0, 0].legend(handles=handles, fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0),
                      ncol=len(handles), frameon=False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return path


def _panel(ax, title: str, rows: list[dict]) -> None:
    ys = list(range(len(rows)))[::-1]
    for y, row in zip(ys, rows):
        color = VERDICT_COLORS.get(row.get("verdict"), "black")
        lo, hi, eff = row.get("ci_low"), row.get("ci_high"), row["effect"]
        if lo is not None and hi is not None:
            ax.hlines(y, lo, hi, color=color, linewidth=2)
        ax.plot(eff, y, "o", color=color, markersize=5)
    ax.axvline(0.0, color="black", linewidth=0.8, linestyle=":")
    sesois = {(r.get("sesoi"), r.get("direction")) for r in rows if r.get("sesoi")}
    for sesoi, direction in sesois:
        for x in ([sesoi] if direction == "exists" else [-sesoi, sesoi]):
            ax.axvline(x, color="#555555", linewidth=0.8, linestyle="--")
        ax.text(sesoi, len(rows) - 0.35, " SESOI" if direction == "exists" else " +-SESOI",
                fontsize=6, color="#555555", va="bottom")
    ax.set_yticks(ys, [r["label"] for r in rows], fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    names = sorted({r.get("effect_name") or "effect" for r in rows})
    ax.set_xlabel(", ".join(names), fontsize=8)
    ax.set_title(title, fontsize=9, loc="left")
    ax.tick_params(axis="x", labelsize=8)
