"""One report for a sweep, rebuilt from the store alone (so it also works after a resume):

    REPORT.md/.html  the usual claims report over every finished cell's records; its
                     q-values are BH-FDR across the whole sweep, one family per claim
    SWEEP.md/.html   the cells (done / failed with the error / pending), the forest plots
    results.csv      one row per cell and result (a failed or pending cell: one row with
                     its status and error); pandas.read_csv reads it directly
    results.json     the merged results (`rarebench report` re-renders it)
    forest_models.png       each claim's effect with CI across every model, seed and setting
    forest_checkpoints.png  each claim's effect across training steps (symlog axis)
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

from harness.sweep.cells import expand, cell_key
from harness.sweep.spec import SweepSpec
from harness.sweep.state import SweepStore

CSV = "results.csv"
CELL_COLUMNS = ["key", "status", "cell_model", "base_model", "step", "cell_seed",
                "cell_rarity", "cell_claim", "attempts", "error", "run_dir"]
DROP = ("settings", "details", "figures")
FDR_LINE = ("q-values are Benjamini-Hochberg FDR (level 0.05) across the whole sweep, one "
            "family per claim: every result of a claim over all models, checkpoints, seeds "
            "and rarity settings of this sweep (a claim that corrects its own family keeps "
            "its own q-value).")


def collect(spec: SweepSpec) -> tuple[list[dict], dict]:
    """(cells: {cell, key, status, error, attempts, manifest}, merged results dict)."""
    from harness.report.schema import empty_results

    store = SweepStore(spec.store)
    cells = [(c, cell_key(c)) for c in expand(spec)]
    status = store.status([k for _, k in cells])
    merged = empty_results(f"sweep-{spec.name}", {"sweep": spec.name, "spec": spec.source,
                                                   "store": str(store.root)}, {})
    rows = []
    for cell, key in cells:
        row = {"cell": cell, "key": key, "status": status[key], "error": None,
               "attempts": len([a for a in store.attempts(key) if a["event"] == "start"]),
               "manifest": None}
        if status[key] == "done":
            man = store.load(key)
            row["manifest"] = man
            res = man["results"]
            merged["manifest"] = merged["manifest"] or res.get("manifest") or {}
            for rec in res["claims"]:
                merged["claims"].append({**rec, "sweep_key": key,
                                         "figures": _figures(rec, key)})
            merged["skipped"] += res.get("skipped") or []
        else:
            fail = store.failure(key) or {}
            row["error"] = fail.get("error")
            if status[key] == "failed":
                merged["errors"].append({"nodeid": cell.label, "claim": cell.claim,
                                         "model": cell.model, "seed": cell.seed,
                                         "reason": f"sweep cell failed after "
                                                   f"{fail.get('attempts')} attempt(s): "
                                                   f"{fail.get('error')}"})
        rows.append(row)
    return rows, merged


def _figures(rec: dict, key: str) -> dict:
    """Figure paths under cells/<key>/ (copied there by write_report)."""
    return {name: f"cells/{key[:16]}/{rel}" for name, rel in (rec.get("figures") or {}).items()}


def write_report(spec: SweepSpec, out: str | Path | None = None) -> dict[str, str]:
    from harness.report.html import render_html
    from harness.report.render import assign_q_values, render_report
    from harness.report.schema import write_results

    out = Path(out or spec.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, merged = collect(spec)
    _copy_figures(rows, SweepStore(spec.store), out)
    q = assign_q_values(merged["claims"])
    for rec in merged["claims"]:
        rec["q_value"] = q[id(rec)]
    paths = {"results": str(write_results(merged, out / "results.json")),
             "report": str(render_report(merged, out))}
    paths["csv"] = str(write_table(rows, merged, out / CSV))
    figs = {"models": forest_models(merged["claims"], out / "forest_models.png"),
            "checkpoints": forest_checkpoints(merged["claims"], out / "forest_checkpoints.png")}
    md = out / "SWEEP.md"
    md.write_text(markdown(spec, rows, merged, figs), encoding="utf-8")
    paths["sweep"] = str(md)
    paths["sweep_html"] = str(render_html(md, out / "SWEEP.html"))
    return paths


def _copy_figures(rows: list[dict], store: SweepStore, out: Path) -> None:
    for row in rows:
        man = row["manifest"]
        if not man:
            continue
        src_dir = store.root / man["run_dir"]
        for rec in man["results"]["claims"]:
            for rel in (rec.get("figures") or {}).values():
                src, dest = src_dir / rel, out / "cells" / row["key"][:16] / rel
                if src.is_file() and not dest.is_file():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dest)


def write_table(rows: list[dict], merged: dict, path: Path) -> Path:
    """results.csv: the claims report's columns (harness.api.COLUMNS, less the dicts) with
    the cell's key, status, model/step/seed/rarity/claim, attempts and error in front."""
    import pandas as pd

    from harness.api import results_frame
    from harness.models.registry import parse_name

    df = results_frame(merged).drop(columns=list(DROP))
    df.insert(0, "key", [r["sweep_key"] for r in merged["claims"]])
    extra = []
    for row in rows:
        base, step = parse_name(row["cell"].model)
        info = {"key": row["key"], "status": row["status"], "cell_model": row["cell"].model,
                "base_model": base, "step": step, "cell_seed": row["cell"].seed,
                "cell_rarity": row["cell"].rarity, "cell_claim": row["cell"].claim,
                "attempts": row["attempts"], "error": row["error"],
                "run_dir": (row["manifest"] or {}).get("run_dir")}
        extra.append(info)
    cells = pd.DataFrame(extra, columns=CELL_COLUMNS)
    table = cells.merge(df, on="key", how="left")
    table["step"] = table["step"].astype("Int64")
    table.to_csv(path, index=False)
    return path


def _step_of(model: str) -> tuple[str, int | None]:
    from harness.models.registry import parse_name

    return parse_name(model)


def _order(rec: dict) -> tuple:
    """Claim, model, step as a number (40 before 320), seed, setting."""
    from harness.report.render import _record_order

    base, step = _step_of(str(rec.get("model")))
    key = _record_order(rec)
    return (key[0], base, -1 if step is None else step, *key[2:])


def _series_title(rec: dict) -> str:
    from harness.report.render import _claim_title, _variant

    v = _variant(rec.get("settings") or {})
    return _claim_title(rec["claim"]) + ("" if v == "-" else f" ({v})")


def forest_models(records: list[dict], path: Path) -> Path | None:
    """Each claim (and variant) one panel, one row per model / checkpoint, seed, setting."""
    from harness.report.figures import forest_plot
    from harness.report.render import _forest_row

    panels: dict[str, list[dict]] = {}
    for rec in sorted(records, key=_order):
        panels.setdefault(_series_title(rec), []).append(_forest_row(rec))
    return forest_plot(panels, path)


def forest_checkpoints(records: list[dict], path: Path) -> Path | None:
    """Each claim one panel: effect (CI bar) vs training step, symlog axis (step 0 shows),
    one line per model, seed and setting; point colour = verdict. None: no checkpoints."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.emergence import _step_axis
    from harness.report.figures import VERDICT_COLORS
    from harness.report.render import _rarity

    panels: dict[str, dict[str, list]] = {}
    for rec in records:
        base, step = _step_of(str(rec.get("model")))
        eff = rec["result"].get("effect")
        if step is None or not _finite(eff):
            continue
        line = f"{base} seed {rec.get('seed')} {_rarity(rec.get('settings') or {})}"
        panels.setdefault(_series_title(rec), {}).setdefault(line, []).append((step, rec))
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(8.0, 3.4 * len(panels) + 0.4),
                             squeeze=False)
    for ax, (title, lines) in zip(axes[:, 0], panels.items()):
        steps = sorted({s for pts in lines.values() for s, _ in pts})
        for i, (label, pts) in enumerate(sorted(lines.items())):
            pts.sort(key=lambda p: p[0])
            xs = [s for s, _ in pts]
            ys = [float(r["result"]["effect"]) for _, r in pts]
            ax.plot(xs, ys, "-", lw=1, color=f"C{i % 10}", label=label, zorder=1)
            for x, y, (_, r) in zip(xs, ys, pts):
                res = r["result"]
                c = VERDICT_COLORS.get(res.get("verdict"), "black")
                lo, hi = res.get("ci_low"), res.get("ci_high")
                if _finite(lo) and _finite(hi):
                    ax.errorbar([x], [y], yerr=[[y - lo], [hi - y]], fmt="none", ecolor=c,
                                capsize=3, elinewidth=1.2, zorder=2)
                ax.plot([x], [y], "o", color=c, ms=6, zorder=3)
        ax.axhline(0, color="0.3", lw=0.8, ls=":")
        ax.set_title(f"{title} across training checkpoints (point colour: verdict)",
                     fontsize=9, loc="left")
        effect = next((r["result"].get("effect_name") for pts in lines.values()
                       for _, r in pts if r["result"].get("effect_name")), "effect")
        ax.set_ylabel(effect[:40], fontsize=8)
        ax.legend(fontsize=7, loc="best")
        _step_axis(ax, steps)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return Path(path)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def markdown(spec: SweepSpec, rows: list[dict], merged: dict, figs: dict) -> str:
    from tabulate import tabulate

    counts = {s: sum(r["status"] == s for r in rows)
              for s in ("done", "failed", "running", "stale", "pending")}
    n_claim = {}
    for rec in merged["claims"]:
        n_claim[rec["claim"]] = n_claim.get(rec["claim"], 0) + 1
    lines = [f"# Sweep `{spec.name}`", "",
             f"{len(rows)} cells ({len(spec.models)} models/checkpoints x {len(spec.seeds)} "
             f"seeds x {len(spec.rarities)} rarity settings x {len(spec.claims)} claims): "
             + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + ".", "",
             f"Spec: `{spec.source}`; store: `{merged['settings']['store']}`.", "",
             "Claims report over every finished cell: [REPORT.md](REPORT.md) "
             "([REPORT.html](REPORT.html)); one row per cell and result: "
             f"[{CSV}]({CSV}) (`pandas.read_csv`).", "", "**Multiple testing.** " + FDR_LINE
             + " Family sizes: " + (", ".join(f"{k} {n}" for k, n in n_claim.items())
                                    or "none") + ".", ""]
    for name, fig in figs.items():
        if fig is not None:
            lines += [f"![each claim's effect across {name}]({Path(fig).name})", ""]
    q_of = {rec["sweep_key"]: [] for rec in merged["claims"]}
    for rec in merged["claims"]:
        res = rec["result"]
        q = rec.get("q_value")
        q_of[rec["sweep_key"]].append(
            f"{res.get('verdict')} {_fmt(res.get('effect'))} q={_fmt(q, '.3g')}")
    table = [(r["cell"].label, r["status"], r["attempts"],
              "; ".join(q_of.get(r["key"], [])) or "-", r["error"] or "", r["key"][:16])
             for r in rows]
    lines += ["## Cells", "", tabulate(table, headers=["cell", "status", "attempts",
                                                       "verdict effect q", "error", "key"],
                                       tablefmt="github", disable_numparse=True), ""]
    return "\n".join(lines) + "\n"


def _fmt(x: Any, fmt: str = "+.3f") -> str:
    return format(float(x), fmt) if _finite(x) else "-"
