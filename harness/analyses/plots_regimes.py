"""Figure for claim 1: ln v against ln r for rare, common and the two matched controls, with
the estimated plateau width and the SESOI the rare top ranks must clear."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness.errors import BadInputError  # noqa: E402
from harness.report.figures import figure_title  # noqa: E402
from harness.stats.result import TestResult  # noqa: E402

_STYLE = {"rare": ("tab:red", "-"), "common": ("tab:blue", "-"),
          "size_matched": ("tab:gray", "--"), "loss_matched": ("tab:orange", "--")}


def plot_regimes(result_or_details: TestResult | dict, path: str | Path, *,
                 model: str | None = None, setting: str | None = None) -> Path:
    """Write a PNG of the influence curves with: the estimated plateau width (argmax of the
    standardised lift; dotted vertical line), the common curve shifted onto the rare one at
    the baseline ranks (thin blue) and that line + SESOI over the plateau ranks (dashed green:
    where the rare top must lie for a lift of the SESOI), and the paper's fixed boundaries
    (grey ticks). The title names the model, the setting (rarity) and the verdict."""
    details = (result_or_details.details if isinstance(result_or_details, TestResult)
               else result_or_details)
    curves = details.get("curves")
    if not curves:
        raise BadInputError("no curves in these details: run dual_regimes_test first")
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, curve in curves.items():
        color, ls = _STYLE.get(name, ("black", ":"))
        ax.plot(curve["ln_r"], curve["ln_v"], ls, color=color, lw=1.4,
                label=name.replace("_", "-"))
    scan = details.get("scan") or {}
    width, offset = scan.get("width"), scan.get("baseline_offset")
    sesoi = details.get("sesoi")
    common = curves.get("common", {})
    if width and offset is not None and math.isfinite(offset) and common.get("ln_r"):
        x_end = math.log(width)
        xs = [x for x in common["ln_r"] if x <= math.log(2 * width + 5)]
        ys = [y + offset for x, y in zip(common["ln_r"], common["ln_v"]) if x in xs]
        ax.plot(xs, ys, color="tab:blue", lw=0.7, alpha=0.7,
                label="common, shifted to rare at the baseline")
        if sesoi:
            top = [(x, y + sesoi) for x, y in zip(xs, ys) if x <= x_end + 1e-9]
            if top:
                ax.plot([t[0] for t in top], [t[1] for t in top], "--", color="tab:green",
                        lw=1.2, marker="v", ms=4, label=f"+ SESOI (ln {math.exp(sesoi):.2g})")
        ax.axvline(x_end, color="k", lw=0.9, ls=":",
                   label=f"estimated plateau width {width}"
                         + (f" (95% {scan['width_ci'][0]}-{scan['width_ci'][1]})"
                            if scan.get("width_ci") else ""))
    values = sorted(y for c in curves.values() for y in c["ln_v"])
    if len(values) > 20:  # the last ranks of a curve fall toward the influence floor
        ax.set_ylim(bottom=values[len(values) // 50] - 0.5)
    for b in details.get("bounds", []):
        ax.axvline(b, ymax=0.04, color="0.5", lw=1.5)
    ax.set_xlabel("ln rank (neurons by influence, rank 1 = most influential)")
    ax.set_ylabel(f"ln influence ({details.get('sign', 'boost')})")
    verdict = (details.get("decision") or {}).get("verdict", "")
    p = (details.get("permutation") or {}).get("p", float("nan"))
    ax.set_title(figure_title("Claim 1, dual regimes", model=model, setting=setting,
                              verdict=verdict) + f"\nmax-lift p={p:.3g}"
                 + (f", plateau width {width}" if width else ""), fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
