"""Figure for claim 1: ln v against ln r for rare, common and the two matched controls."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness.errors import BadInputError  # noqa: E402
from harness.stats.result import TestResult  # noqa: E402

_STYLE = {"rare": ("tab:red", "-"), "common": ("tab:blue", "-"),
          "size_matched": ("tab:gray", "--"), "loss_matched": ("tab:orange", "--")}


def plot_regimes(result_or_details: TestResult | dict, path: str | Path) -> Path:
    """Write a PNG of the influence curves with the fixed regime boundaries and the rare
    curve's power-law fit (fixed-boundary version) extrapolated back over the plateau."""
    details = (result_or_details.details if isinstance(result_or_details, TestResult)
               else result_or_details)
    curves = details.get("curves")
    if not curves:
        raise BadInputError("no curves in these details: run dual_regimes_test first")
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, curve in curves.items():
        color, ls = _STYLE.get(name, ("black", ":"))
        ax.plot(curve["ln_r"], curve["ln_v"], ls, color=color, lw=1.4,
                label=name.replace("_", "-"))
    for b in details.get("bounds", []):
        ax.axvline(b, color="k", lw=0.7, ls=":")
    fixed = details.get("fits", {}).get("rare", {}).get("fixed", {})
    if "slope" in fixed and curves["rare"]["ln_r"]:
        xs = [0.0, details["bounds"][1]]
        ax.plot(xs, [fixed["intercept"] - fixed["slope"] * x for x in xs], color="tab:red",
                lw=0.8, ls="-.", label=f"rare power law (alpha={fixed['slope']:.2f})")
    ax.set_xlabel("ln rank")
    ax.set_ylabel(f"ln influence ({details.get('sign', 'boost')})")
    ax.set_title(f"dual regimes: lift p={details.get('permutation', {}).get('p', float('nan')):.3g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
