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
FOREST_WIDTH_IN = 9.0
ROW_HEIGHT_IN = 0.3
PANEL_PAD_IN = 1.45  # per panel: two title lines, three x label lines and the ticks
LEGEND_IN = 0.35     # the verdict colour legend below the panels
# Fixed verdict colours (the same meaning in every report, figure and legend)
VERDICT_COLORS = {"supported": "#1b7837", "refuted": "#b2182b", "inconclusive": "#e08214",
                  "untestable": "#7f7f7f"}
THRESHOLD_COLOR = "#555555"
EQUIVALENCE_FILL = "#e8e8e8"


MIN_ROWS = 3         # a panel is never shorter than 3 rows (room for its threshold labels)


def panel_height_in(rows: int) -> float:
    """One claim's panel: ROW_HEIGHT_IN per result row (at least MIN_ROWS) + PANEL_PAD_IN."""
    return ROW_HEIGHT_IN * max(rows, MIN_ROWS) + PANEL_PAD_IN


def forest_height_in(rows_per_panel: list[int]) -> float:
    """Figure height: one panel per claim, ROW_HEIGHT_IN per result row, and the legend."""
    return sum(panel_height_in(n) for n in rows_per_panel) + LEGEND_IN


def figure_title(what: str, *, model: str | None = None, setting: str | None = None,
                 verdict: str | None = None, extra: str | None = None) -> str:
    """One title convention for every figure: 'what: model, setting -> verdict (extra)'.

    A figure is read out of context (pasted into a paper, a slide): the title says whose
    result it is (model), under which setting (rarity percentile, mode, ...) and what was
    decided (verdict)."""
    who = ", ".join(b for b in (model, setting) if b)
    title = what + (f": {who}" if who else "")
    if verdict:
        title += f" \N{RIGHTWARDS ARROW} {verdict}"
    return title + (f" ({extra})" if extra else "")


def _summary(values: list[str | None], most: int = 4) -> str:
    seen = list(dict.fromkeys(v for v in values if v))
    return ", ".join(seen[:most]) + (f" +{len(seen) - most} more" if len(seen) > most else "")


def _natural(text: str) -> list:
    """'target q5' < 'target q15' < 'target q50' (numbers compared as numbers)."""
    import re

    return [(0, float(t), "") if re.fullmatch(r"\d+(?:\.\d+)?", t) else (1, 0.0, t)
            for t in re.findall(r"\d+(?:\.\d+)?|\D+", text)]


def _verdict_counts(rows: list[dict]) -> str:
    counts = {v: sum(r.get("verdict") == v for r in rows) for v in VERDICT_COLORS}
    other = sorted({str(r.get("verdict")) for r in rows} - set(VERDICT_COLORS))
    bits = [f"{n} {v}" for v, n in counts.items() if n]
    bits += [f"{sum(str(r.get('verdict')) == v for r in rows)} {v}" for v in other]
    return ", ".join(bits)


def forest_plot(panels: dict[str, list[dict]], path: str | Path) -> Path | None:
    """panels: title -> rows {label, effect, ci_low, ci_high, verdict, effect_name, sesoi,
    direction, and optionally model, rarity, alpha}.

    Rows without a finite effect are left out; returns None when nothing is left to draw.
    Each panel's title names its models, rarity settings and verdicts (counted); each row is
    labelled with its model/seed/setting on the left and its verdict (in the verdict's fixed
    colour) on the right; the x axis is the claim's effect measure with its units. Each panel
    draws its claim's SESOI (dashed: +SESOI for an existence claim; the +-SESOI equivalence
    margin, shaded, for an absence claim), the lines its verdicts are decided against, and
    the no-effect line (dotted); alpha is stated in the x label.
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
                             gridspec_kw={"height_ratios": [panel_height_in(n)
                                                            for n in sizes]})
    for ax, (title, rows) in zip(axes[:, 0], panels.items()):
        _panel(ax, title, rows)
    handles = [plt.Line2D([], [], color=c, marker="o", label=v)
               for v, c in VERDICT_COLORS.items()]
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=len(handles) + 1,
               frameon=False, bbox_to_anchor=(0.5, 0.0),
               title="verdict colours:", title_fontsize=7, alignment="left")
    fig.tight_layout(rect=(0, LEGEND_IN / fig.get_figheight(), 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return path


def _panel(ax, title: str, rows: list[dict]) -> None:
    from matplotlib.ticker import MaxNLocator

    ys = list(range(len(rows)))[::-1]
    xs = []
    for y, row in zip(ys, rows):
        color = VERDICT_COLORS.get(row.get("verdict"), "black")
        lo, hi, eff = row.get("ci_low"), row.get("ci_high"), row["effect"]
        if lo is not None and hi is not None:
            ax.hlines(y, lo, hi, color=color, linewidth=2)
            xs += [lo, hi]
        ax.plot(eff, y, "o", color=color, markersize=5)
        xs.append(eff)
        # the verdict beside its row, outside the axes on the right
        ax.annotate(str(row.get("verdict")), xy=(1.0, y), xycoords=("axes fraction", "data"),
                    xytext=(4, 0), textcoords="offset points", va="center", ha="left",
                    fontsize=7, color=color)
    ax.axvline(0.0, color="black", linewidth=0.8, linestyle=":")
    sesois = sorted({(r.get("sesoi"), r.get("direction")) for r in rows if r.get("sesoi")},
                    key=lambda sd: (sd[0], str(sd[1])))
    thresholds = []
    for sesoi, direction in sesois:
        if direction == "exists":
            lines = [sesoi]
            thresholds.append(f"dashed: SESOI {sesoi:.3g} (to clear)")
        else:
            lines = [-sesoi, sesoi]
            thresholds.append(f"dashed: \N{PLUS-MINUS SIGN}SESOI {sesoi:.3g} "
                              "(equivalence margin, shaded)")
            ax.axvspan(-sesoi, sesoi, color=EQUIVALENCE_FILL, zorder=0, linewidth=0)
        for x in lines:
            ax.axvline(x, color=THRESHOLD_COLOR, linewidth=0.9, linestyle="--")
        xs += lines
    ax.set_yticks(ys, [r["label"] for r in rows], fontsize=8)
    half = (max(len(rows), MIN_ROWS) + 0.2) / 2  # rows at 0..n-1, centred in >= MIN_ROWS
    ax.set_ylim((len(rows) - 1) / 2 - half, (len(rows) - 1) / 2 + half)
    lo, hi = min(xs + [0.0]), max(xs + [0.0])
    pad = 0.06 * (hi - lo or 1.0)
    ax.set_xlim(lo - pad, hi + pad)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=7))
    names = sorted({r.get("effect_name") or "effect" for r in rows})
    alphas = sorted({r["alpha"] for r in rows if r.get("alpha") is not None})
    alpha = f"\N{GREEK SMALL LETTER ALPHA} = {', '.join(f'{a:g}' for a in alphas)}" if alphas \
        else "\N{GREEK SMALL LETTER ALPHA} as recorded"
    ax.set_xlabel("; ".join(names) + "\n" + "; ".join(thresholds + ["dotted: no effect"])
                  + f"\npoint: estimate; bar: its confidence interval ({alpha})", fontsize=8)
    # the row labels' header, above them (a rotated label would outgrow a one-row panel)
    ax.set_ylabel("model, seed, setting", fontsize=7, rotation=0, ha="right", va="bottom",
                  color=THRESHOLD_COLOR)
    ax.yaxis.set_label_coords(-0.01, 1.0)
    models = _summary([r.get("model") for r in rows])
    settings = _summary(sorted({r["rarity"] for r in rows if r.get("rarity") not in (None, "-")},
                               key=_natural))
    ax.set_title(figure_title(title, verdict=_verdict_counts(rows)) + "\n"
                 + "; ".join(b for b in (models and f"models: {models}",
                                         settings and f"rarity: {settings}") if b),
                 fontsize=9, loc="left")
    ax.tick_params(axis="x", labelsize=8)
