"""Emergence over training (issue 14.5): every claim statistic across one model's checkpoints.

    >>> from harness.emergence import run_emergence
    >>> em = run_emergence("tiny-pythia", claims="dual-regimes", quick=True)
    >>> em["series"][0]["trend"]["rho"], em["paths"]["report_html"]

`run_emergence` runs the claim suite once (harness.api.run_claims, i.e. `rarebench run`) with
every `MODEL@stepN` as a model, under the shared bootstrap (`RAREBENCH_SHARED_BOOTSTRAP`,
harness.stats.bootstrap): the evaluation rows are the same text at every checkpoint, so
replicate b resamples the same rows at every step and each claim stores its effect's
replicates (details['effect_replicates']). Per (claim, variant, rarity) it collects every
checkpoint's effect, CI, verdict (and the verdict without the learnedness precondition) and
the precondition margin, and tests the trend of the effect against log step
(harness.analyses.emergence.trend: Spearman rho, paired row-bootstrap CI and p).

Writes `<out>/<run-id>/` (the claims' own REPORT.md / results.json over all checkpoints) and
`<out>/<run-id>/emergence/`: emergence.json, emergence.png (effect vs step per claim),
EMERGENCE.md and its self-contained REPORT.html.

Checkpoints: the committed fixtures and local trained directories list theirs in
CHECKPOINTS.json (default: all of them); Pythia's hub checkpoints (`pythia-*`, 154 steps,
harness.models.registry.pythia_steps) must be chosen with `steps=` and be in the HF cache.
"""

from __future__ import annotations

import json
import math
import os
import re
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from harness.errors import BadInputError

DEFAULT_RARITY = "target-q50"
DEFAULT_POWER_REPS = 8  # as `rarebench run` (harness.report.cli.RUN_POWER_REPS)
SCHEMA = "rarebench-emergence/1"
FIGURE = "emergence.png"
SUBDIR = "emergence"
LEGEND_IN = 0.6  # figure inches below the panels for the verdict legend


# ------------------------------------------------------------------------- inputs

def parse_rarity(text: str) -> tuple[str, float]:
    """'target-q50', 'target q50', 'current-q15' -> (which, q)."""
    m = re.fullmatch(r"\s*(target|current)[\s_:-]*q?(\d+(?:\.\d+)?)\s*", str(text))
    if not m or not 0 < float(m.group(2)) < 100:
        raise BadInputError(f"--rarity {text!r}: write WHICH-qQ, e.g. target-q50 or "
                            "current-q15 (which: target or current; 0 < q < 100)")
    return m.group(1), float(m.group(2))


def parse_steps(value: str | Sequence[int] | None) -> list[int] | None:
    """'0,40,120' / [0, 40] -> sorted distinct ints (None stays None)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        steps = [int(str(s).strip().removeprefix("step")) for s in items if str(s).strip()]
    except ValueError:
        steps = [-1]
    if not steps or any(s < 0 for s in steps):
        raise BadInputError(f"--steps {value!r}: give a comma list of training steps >= 0, "
                            "e.g. 0,1,4,16")
    if len(set(steps)) < len(steps):
        raise BadInputError(f"--steps {value!r}: a step is given twice")
    return sorted(steps)


def listed_steps(model: str) -> tuple[tuple[int, ...] | None, str]:
    """(the checkpoints the model lists, where from) - None when it lists none itself
    (Pythia's hub steps are valid but must be chosen). Raises for a model with no
    checkpoints at all."""
    from harness.models.registry import parse_name, pythia_steps, resolve

    base, at_step = parse_name(model)
    if at_step is not None:
        raise BadInputError(f"{model!r}: give the model without @step; choose checkpoints "
                            "with --steps")
    spec = resolve(base)
    if spec.local_path:
        root = Path(spec.local_path)
        if root.name.startswith("step") and (root.parent / "CHECKPOINTS.json").is_file():
            root = root.parent
        meta = root / "CHECKPOINTS.json"
        if meta.is_file():
            return tuple(sorted(int(s) for s in json.loads(meta.read_text())["steps"])), \
                str(meta)
        raise BadInputError(f"{model}: {root} has no CHECKPOINTS.json, so it has no training "
                            "checkpoints to compare")
    if spec.name.startswith("pythia-"):
        return None, f"Pythia hub checkpoints ({len(pythia_steps())} steps)"
    raise BadInputError(f"{model} has no training checkpoints (only pythia-*, the tiny-* "
                        "fixtures and local trained directories with CHECKPOINTS.json do)")


def resolve_steps(model: str, steps: str | Sequence[int] | None = None) -> list[int]:
    """The checkpoints to run: `steps` checked against the model's, or all listed ones.
    At least 3 (a trend needs them); every one must have its weights here."""
    from harness.models.registry import availability, resolve

    listed, _ = listed_steps(model)
    chosen = parse_steps(steps)
    if chosen is None:
        if listed is None:
            raise BadInputError(f"{model}: choose its hub checkpoints with --steps (e.g. "
                                "--steps 0,1,4,16,64,256,512,1000,8000,143000); each must be "
                                "in the HF cache")
        chosen = list(listed)
    for s in chosen:  # the registry's own step check: one clear line naming the nearest
        resolve(model, step=s)
    if len(chosen) < 3:
        raise BadInputError(f"--steps {','.join(map(str, chosen))}: a trend needs at least 3 "
                            "checkpoints")
    missing = []
    with _offline_default():  # as the claims' pytest run will see it (root conftest)
        for s in chosen:
            ok, reason = availability(resolve(model, step=s))
            if not ok:
                missing.append((s, reason))
    if missing:
        raise BadInputError(f"{model}: no weights for step(s) "
                            f"{', '.join(str(s) for s, _ in missing)} - {missing[0][1]}")
    return chosen


@contextmanager
def _offline_default() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 unless set: the root conftest's default for the claim run."""
    had = "HF_HUB_OFFLINE" in os.environ
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        yield
    finally:
        if not had:
            os.environ.pop("HF_HUB_OFFLINE", None)


@contextmanager
def shared_bootstrap(seed: int) -> Iterator[None]:
    """Set RAREBENCH_SHARED_BOOTSTRAP=seed for the duration (restored after)."""
    from harness.stats.bootstrap import SHARED_BOOTSTRAP_ENV

    old = os.environ.get(SHARED_BOOTSTRAP_ENV)
    os.environ[SHARED_BOOTSTRAP_ENV] = str(int(seed))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(SHARED_BOOTSTRAP_ENV, None)
        else:
            os.environ[SHARED_BOOTSTRAP_ENV] = old


# ------------------------------------------------------------------------- the run

def run_emergence(model: str, steps: str | Sequence[int] | None = None, claims: Any = None,
                  rarity: str = DEFAULT_RARITY, quick: bool = True,
                  power_reps: int = DEFAULT_POWER_REPS, out: str | Path = "reports",
                  seed: int = 0, bootstrap_seed: int = 0, run_id: str | None = None,
                  **options: Any) -> dict:
    """Run the claims at every checkpoint of `model` and test each effect's trend over
    training (module docstring). `steps`: comma list or ints (default: every listed
    checkpoint; required for hub models); `claims`: as run_claims (default all); `rarity`:
    one setting, 'target-q50'; `seed`: the row-sampling seed; `bootstrap_seed`: the shared
    bootstrap's; other keywords go to harness.api.run_claims (eval_rows, common_budget,
    routing_modes, device, cache_dir, ...). Returns the emergence.json content (plus
    'paths' and 'exit_code'); bad input raises BadInputError before anything runs."""
    from harness.api import run_claims
    from harness.report.runinfo import new_run_id

    which, q = parse_rarity(rarity)
    chosen = resolve_steps(model, steps)
    if int(power_reps) < 1:
        raise BadInputError(f"--power-reps {power_reps}: use a positive integer")
    run_id = run_id or new_run_id()
    names = [f"{model}@step{s}" for s in chosen]
    with shared_bootstrap(bootstrap_seed):
        df = run_claims(models=names, claims=claims, rarity_which=which, rarity_q=q,
                        seeds=seed, out=out, quick=quick, power_reps=int(power_reps),
                        run_id=run_id, **options)
    run_dir = Path(df.attrs["results_path"]).parent
    summary = summarise(df, model=model, steps=chosen)
    summary.update(rarity=f"{which} q{q:g}", run_id=run_id, shared_bootstrap_seed=bootstrap_seed,
                   settings={"quick": bool(quick), "power_reps": int(power_reps), "seed": seed,
                             "claims": claims, **{k: v for k, v in options.items()
                                                  if v is not None}},
                   argv=df.attrs.get("argv"))
    summary["paths"] = write_outputs(summary, run_dir / SUBDIR)
    summary["exit_code"] = int(df.attrs.get("exit_code", 0))
    return summary


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v


def _text(x: Any) -> str:
    """A DataFrame cell as text ('' for None/NaN)."""
    return x if isinstance(x, str) else ""


def summarise(df, *, model: str, steps: Sequence[int]) -> dict:
    """The emergence.json content of a run_claims DataFrame over `model@stepN` models: one
    series per (claim, variant, rarity), its checkpoints in step order and its trend."""
    from harness.analyses.emergence import METHOD, trend
    from harness.api import list_claims
    from harness.models.registry import parse_name

    specs = list_claims(as_frame=False)
    groups: dict[tuple, list[dict]] = {}
    for _, r in df.iterrows():
        _, step = parse_name(str(r["model"]))
        details = r["details"] if isinstance(r["details"], dict) else {}
        pre = details.get("precondition") or {}
        margin = pre.get("margin_uniform")
        reps = details.get("effect_replicates")
        groups.setdefault((r["claim"], _text(r["variant"]), _text(r["rarity"])), []).append({
            "step": step, "model": r["model"], "verdict": r["verdict"],
            "verdict_without_precondition": details.get("verdict_without_precondition",
                                                        r["verdict"]),
            "effect": _num(r["effect"]), "ci_low": _num(r["ci_low"]),
            "ci_high": _num(r["ci_high"]), "p": _num(r["p"]),
            "precondition": {"ok": pre.get("ok"), "rare_loss": pre.get("rare_loss"),
                             "uniform_loss": pre.get("uniform_loss"),
                             "margin_uniform": list(margin) if margin else None},
            "sesoi": _num(r["sesoi"]), "effect_name": _text(r["effect_name"]),
            "direction": _text(r["direction"]) or None, "message": _text(r["message"]),
            "replicates": list(reps) if reps is not None else None})
    series = []
    for (claim, variant, rarity), cps in sorted(
            groups.items(), key=lambda kv: (getattr(specs.get(kv[0][0]), "number", 99),
                                            kv[0][1], kv[0][2])):
        cps.sort(key=lambda c: c["step"])
        tr = trend([c["step"] for c in cps], [c["effect"] for c in cps],
                   [c["replicates"] for c in cps])
        spec = specs.get(claim)
        sesoi = next((c["sesoi"] for c in cps if math.isfinite(c["sesoi"])), None)
        series.append({
            "claim": claim, "number": getattr(spec, "number", None),
            "title": getattr(spec, "title", claim), "variant": variant, "rarity": rarity,
            "effect_name": cps[0]["effect_name"] or getattr(spec, "effect", ""),
            "direction": cps[0]["direction"] or getattr(spec, "direction", None),
            "sesoi": sesoi if sesoi is not None else getattr(getattr(spec, "sesoi", None),
                                                             "value", None),
            "checkpoints": cps, "trend": tr.to_dict(), "trend_text": str(tr)})
    ran = {c["step"] for s in series for c in s["checkpoints"]}
    return {"schema": SCHEMA, "model": model, "steps": list(steps),
            "steps_without_result": [s for s in steps if s not in ran],
            "trend_method": METHOD, "series": series,
            "skipped": list(df.attrs.get("skipped") or []),
            "errors": list(df.attrs.get("errors") or []),
            "claims_results": df.attrs.get("results_path"),
            "claims_report": df.attrs.get("report_path")}


# ------------------------------------------------------------------------- outputs

def write_outputs(summary: dict, out_dir: Path) -> dict[str, str]:
    """emergence.json, emergence.png, EMERGENCE.md and REPORT.html in `out_dir`."""
    from harness.report.html import render_html
    from harness.report.schema import to_jsonable

    out_dir.mkdir(parents=True, exist_ok=True)
    for key in ("claims_report", "claims_results"):  # links that survive moving the folder
        if summary.get(key) and Path(summary[key]).is_absolute():
            summary = {**summary, key: os.path.relpath(summary[key], out_dir)}
    fig = plot_emergence(summary, out_dir / FIGURE) if summary["series"] else None
    paths = {"json": str(out_dir / "emergence.json"), "figure": str(fig) if fig else None,
             "markdown": str(out_dir / "EMERGENCE.md")}
    Path(paths["markdown"]).write_text(markdown(summary, fig), encoding="utf-8")
    paths["report_html"] = str(render_html(paths["markdown"], out_dir / "REPORT.html"))
    relative = {k: os.path.relpath(v, out_dir) if v else None for k, v in paths.items()}
    Path(paths["json"]).write_text(json.dumps(to_jsonable({**summary, "paths": relative}),
                                              indent=1) + "\n", encoding="utf-8")
    return paths


def _f(x: Any, fmt: str = "+.3f") -> str:
    v = _num(x)
    return format(v, fmt) if math.isfinite(v) else "-"


def _ci(lo: Any, hi: Any) -> str:
    return f"[{_f(lo)}, {_f(hi)}]" if math.isfinite(_num(lo)) else "-"


def _series_name(s: dict) -> str:
    name = f"Claim {s['number']}, {s['title'].lower()}" if s.get("number") else s["title"]
    return name + (f" ({s['variant']})" if s.get("variant") else "")


def markdown(summary: dict, figure: Path | None) -> str:
    model, rarity = summary["model"], summary.get("rarity", "")
    lines = [f"# Emergence over training: {model} ({rarity})", "",
             f"Every claim re-run at {len(summary['steps'])} checkpoints of {model} (steps "
             f"{', '.join(map(str, summary['steps']))}) on the same evaluation rows, with a "
             "paired row bootstrap: bootstrap replicate b resamples the same rows at every "
             f"checkpoint (`RAREBENCH_SHARED_BOOTSTRAP={summary.get('shared_bootstrap_seed')}`"
             "). Trend: " + summary["trend_method"] + ".", ""]
    if summary.get("claims_report"):
        lines += [f"Per-checkpoint claim report: [{summary['claims_report']}]"
                  f"({summary['claims_report']}) (results: [{summary.get('claims_results')}]"
                  f"({summary.get('claims_results')}); `rarebench report` on it re-renders the "
                  "report).", ""]
    lines += ["## Trends", "",
              "| claim | Spearman rho vs log step | 95% CI (paired row bootstrap) | p | "
              "order p | checkpoints | trend |", "|---|---|---|---|---|---|---|"]
    for s in summary["series"]:
        t = s["trend"]
        lines.append(f"| {_series_name(s)} | {_f(t['rho'])} | {_ci(t['ci_low'], t['ci_high'])}"
                     f" | {_f(t['p_value'], '.3g')} | {_f(t['order_p'], '.3g')} | "
                     f"{t['n_checkpoints']} | {t['direction']}"
                     + (f": {t['reason']}" if t.get("reason") else "") + " |")
    if not summary["series"]:
        lines.append("| (no claim result) | - | - | - | - | 0 | untestable |")
    if figure is not None:
        lines += ["", f"![effect vs training step per claim]({Path(figure).name})"]
    for s in summary["series"]:
        t = s["trend"]
        sesoi = s.get("sesoi")
        lines += ["", f"## {_series_name(s)}", "",
                  f"Effect: {s['effect_name']}"
                  + (f"; SESOI {sesoi:.3g}" if isinstance(sesoi, (int, float)) else "")
                  + f"; rarity {s['rarity']}.", "",
                  "| step | verdict | without precondition | effect | CI (the claim's) | "
                  "p (the claim's) | learnedness margin ln V - rare loss (nats) [95% CI] |",
                  "|---|---|---|---|---|---|---|"]
        for c in s["checkpoints"]:
            m = c["precondition"].get("margin_uniform") or [None, None, None]
            lines.append(f"| {c['step']} | {c['verdict']} | {c['verdict_without_precondition']}"
                         f" | {_f(c['effect'])} | {_ci(c['ci_low'], c['ci_high'])} | "
                         f"{_f(c['p'], '.3g')} | {_f(m[0], '.3f')} {_ci(m[1], m[2])} |")
        lines += ["", s["trend_text"][:1].upper() + s["trend_text"][1:] + "."]
        if t["skipped"]:
            lines.append("Skipped checkpoints: " + "; ".join(
                f"step {k['step']}: {k['reason']}" for k in t["skipped"]) + ".")
    if summary.get("steps_without_result"):
        lines += ["", "Checkpoints without any claim result: "
                  + ", ".join(map(str, summary["steps_without_result"]))
                  + " (see the skipped and errored cases of the claims report)."]
    for kind in ("skipped", "errors"):
        if summary.get(kind):
            lines += ["", f"{kind.capitalize()}: " + "; ".join(
                f"{e.get('model', '')} {e.get('claim', '')}: "
                f"{e.get('reason') or e.get('message') or ''}".strip()
                for e in summary[kind] if isinstance(e, dict))]
    lines += ["", "## How to read this", "",
              "- Each point is one checkpoint's effect with its CI as the claim reports it (claim "
              "1: 95% row bootstrap; claim 2: union of the folds' 90% intervals; claim 3: the "
              "simultaneous band over heads); "
              "its colour is the verdict. Hollow: 'untestable' (the model had not learned the "
              "rare tokens: learnedness precondition failed); the colour is then the verdict the "
              "rule gives without the precondition, and the numbers are for information only.",
              "- The trend is rank-based (Spearman) over the checkpoints that have an effect; its "
              "CI recomputes rho in every paired bootstrap replicate, so it carries each "
              "checkpoint's row-sampling noise. 'no trend detected' is not evidence of no "
              "trend; with few checkpoints rho is coarse (4 checkpoints: multiples of 0.2).",
              "- A verdict per checkpoint is that checkpoint's own test; the trend is a separate "
              "descriptive question and is not corrected for the claims' multiplicity."]
    return "\n".join(lines) + "\n"


def plot_emergence(summary: dict, path: str | Path) -> Path:
    """One panel per series (effect with CI vs step, symlog axis so step 0 shows; verdict as
    colour, hollow = untestable; SESOI and zero lines) and a bottom panel of the rare-token
    learnedness margin per checkpoint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from harness.report.figures import VERDICT_COLORS, figure_title

    series = summary["series"]
    margins = _margin_series(series)
    n = len(series) + (1 if margins else 0)
    fig, axes = plt.subplots(n, 1, figsize=(7.6, 3.3 * n + 0.5), squeeze=False)
    axes = axes[:, 0]
    steps_all = sorted({c["step"] for s in series for c in s["checkpoints"]})
    for ax, s in zip(axes, series):
        cps = s["checkpoints"]
        xs = [c["step"] for c in cps]
        ys = [_num(c["effect"]) for c in cps]
        ax.plot(xs, ys, "-", color="0.6", lw=1, zorder=1)
        for c, x, y in zip(cps, xs, ys):
            if not math.isfinite(y):
                continue
            hollow = c["verdict"] == "untestable"
            color = VERDICT_COLORS.get(c["verdict_without_precondition"] if hollow
                                       else c["verdict"], "black")
            lo, hi = _num(c["ci_low"]), _num(c["ci_high"])
            if math.isfinite(lo) and math.isfinite(hi):
                ax.errorbar([x], [y], yerr=[[y - lo], [hi - y]], fmt="none", ecolor=color,
                            elinewidth=1.4, capsize=4, zorder=2)
            ax.plot([x], [y], "o", ms=8, mec=color, mew=1.8,
                    mfc="white" if hollow else color, zorder=3)
        ax.axhline(0, color="0.3", lw=0.8)
        sesoi = s.get("sesoi")
        if isinstance(sesoi, (int, float)) and math.isfinite(sesoi):
            ax.axhline(sesoi, color="tab:green", lw=1.1, ls="--")
            ax.text(1.0, sesoi, f" SESOI {sesoi:.3g}", transform=ax.get_yaxis_transform(),
                    color="tab:green", fontsize=8, va="center", ha="left")
        t = s["trend"]
        stat = (f"Spearman rho vs log step {_f(t['rho'], '+.2f')} "
                f"[95% {_f(t['ci_low'], '+.2f')}, {_f(t['ci_high'], '+.2f')}], "
                f"p={_f(t['p_value'], '.2g')}, {t['n_checkpoints']} checkpoints"
                if math.isfinite(_num(t["rho"])) else f"trend untestable: {t['reason']}")
        ax.set_title(figure_title(_series_name(s) + " over training", model=summary["model"],
                                  setting=f"rarity {s['rarity']}") + "\n" + stat, fontsize=9.5)
        ax.set_ylabel("\n".join(textwrap.wrap(s["effect_name"] or "effect", 34)), fontsize=8)
        _step_axis(ax, steps_all)
    if margins:
        ax = axes[-1]
        for label, pts in margins.items():
            xs = [p[0] for p in pts]
            ys = [p[1] for p in pts]
            ax.plot(xs, ys, "o-", color="tab:purple", ms=5, lw=1.2, label=label)
            for x, y, lo, hi in pts:
                if lo is not None and hi is not None:
                    ax.errorbar([x], [y], yerr=[[y - lo], [hi - y]], fmt="none",
                                ecolor="tab:purple", capsize=3, elinewidth=1)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_ylabel("ln V - mean rare-position loss\n(nats; > 0: better than uniform)",
                      fontsize=8)
        ax.set_title(f"Learnedness of the rare tokens (the claims' precondition): "
                     f"{summary['model']}, rarity {series[0]['rarity']}", fontsize=9.5)
        _step_axis(ax, steps_all)
    handles = [Line2D([], [], marker="o", ls="", ms=7, color=c, label=v)
               for v, c in VERDICT_COLORS.items() if v != "untestable"]
    handles.append(Line2D([], [], marker="o", ls="", ms=7, mfc="white", mec="0.3",
                          label="hollow: untestable (colour: verdict without precondition)"))
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, LEGEND_IN / fig.get_figheight(), 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _step_axis(ax, steps: list[int]) -> None:
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.5)
    ax.set_xticks(steps)
    ax.set_xticklabels([str(s) for s in steps], fontsize=8,
                       rotation=45 if len(steps) > 6 else 0)
    ax.minorticks_off()
    lo, hi = min(steps), max(steps)
    ax.set_xlim(lo - 0.3 if lo == 0 else lo / 1.5, hi * 1.4)
    ax.set_xlabel("training step (symlog axis: 0 = initialisation)", fontsize=8)
    ax.grid(axis="x", color="0.9", lw=0.6)


def _margin_series(series: list[dict]) -> dict[str, list[tuple]]:
    """{label: [(step, margin, lo, hi)]}: the learnedness margin per checkpoint (one line:
    it depends on the rarity only, the same for every claim of a rarity)."""
    out: dict[str, list[tuple]] = {}
    seen: set = set()
    for s in series:
        for c in s["checkpoints"]:
            m = c["precondition"].get("margin_uniform")
            key = (s["rarity"], c["step"])
            if not m or m[0] is None or key in seen:
                continue
            seen.add(key)
            out.setdefault(f"rarity {s['rarity']}", []).append((c["step"], m[0], m[1], m[2]))
    return {k: sorted(v) for k, v in out.items()}
