"""REPORT.md from results.json: a paper-style results section (summary table, one section per
claim with figures, exact settings, the original paper's numbers beside ours, caveats, skipped
models) and the manifest.

`render_report` is a pure function of the results content (plus figure files it copies), so
`rarebench report results.json` re-renders any run without recomputing anything.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tabulate import tabulate

from harness.errors import BadInputError
from harness.report.figures import forest_plot
from harness.report.html import render_html
from harness.report.schema import claim_sort_key, registered_claims, validate
from harness.stats.multiple import bh_fdr

SUMMARY_FIGURE = "effects_forest.png"
Q_FAMILY = "BH-FDR over this run's records of the same claim (all models, seeds, settings)"


@dataclass(frozen=True)
class PaperNumber:
    """One number the original papers reported; `details_key` names the TestResult.details
    entry (or calibration entry) where a claim test puts our counterpart."""

    quantity: str
    model: str
    value: str
    source: str
    details_key: str | None = None
    extract: Callable[[dict], Any] | None = None  # details -> our counterpart, when nested


def _legacy_q_vs_random(d: dict) -> str | None:
    """Claim 2's counterpart of P1's 'specialist vs random Q' test: per cross-fitting fold,
    the permutation p of the plateau group's Q against random groups (1,000 draws)."""
    out = []
    for fold in d.get("legacy") or []:
        for c in fold.get("comparisons") or []:
            if c.get("metric") == "Q" and c.get("null") == "random" and _finite(c.get("p")):
                out.append(f"p = {_num(c['p'])} ({fold.get('fold', '?')})")
    return ", ".join(out) or None


def _heads_significant(d: dict) -> str | None:
    """Claim 3's statistics where P1 only plotted selectivity: heads significant (BH) of all
    heads tested, and the heads called equivalent within the SESOI."""
    per = d.get("per_head")
    n = len(per) if isinstance(per, (list, dict)) else None
    sig = d.get("significant_heads")
    k = len(sig) if isinstance(sig, list) else None
    if n is None or k is None:
        return None
    eq = d.get("n_heads_equivalent")
    return (f"{k} of {n} heads significant (BH q 0.05)"
            + (f", {eq} equivalent within +-SESOI" if eq is not None else ""))


def _loss_effect_rho(d: dict) -> Any:
    return (d.get("loss_effect") or {}).get("spearman_rare_common")


CLAIM_TEXT = {
    "dual-regimes": (
        "Ranked by their influence on rare-token prediction, final-layer MLP neurons show three "
        "regimes (plateau, power law, rapid decay); for common tokens the plateau is absent."),
    "no-clustering": (
        "Plateau neurons do not form a module in the co-activation graph: their modularity is no "
        "higher than that of random neuron groups of the same size."),
    "no-routing": (
        "No attention head selectively routes rare-token contexts to the plateau neurons: head "
        "ablation changes their activations about as much in rare as in other contexts."),
}

PAPER_NUMBERS: dict[str, list[PaperNumber]] = {
    "dual-regimes": [
        PaperNumber("plateau / power-law / decay split, % (ln r = 3.5, 5.5)",
                    "P3 (~1,940 boost neurons)", "1.7% / 10.9% / 87.4%", "P3", "regime_split"),
        PaperNumber("power-law slope alpha, rare boost, ln r in [3.5, 4.5]", "GPT-2 large",
                    "0.534", "P3", "power_law_alpha"),
        PaperNumber("plateau size (manual)", "GPT-2 large / GPT-2 XL / Pythia-1B / Pythia-2.8B",
                    "35 / 30 / 50 / 50", "P1/P3", "plateau_size"),
    ],
    "no-clustering": [
        PaperNumber("modularity Q, specialist groups", "P1 models", "0.05-0.11", "P1",
                    "plateau_q"),
        PaperNumber("modularity Q, random groups", "P1 models", "0.04-0.09", "P1",
                    "random_q"),
        PaperNumber("specialist vs random Q (t-test vs 2 random groups; here: permutation "
                    "vs 1,000 random groups per fold)", "P1 models", "p > 0.4", "P1",
                    extract=_legacy_q_vs_random),
        PaperNumber("(contested: P2's table reportedly has plateau Q above random)", "", "", "P2"),
    ],
    "no-routing": [
        PaperNumber("statistics", "GPT-2 XL, Pythia", "none (selectivity plotted only)", "P1",
                    extract=_heads_significant),
        PaperNumber("rare vs common attention patterns", "P2 models", "highly correlated",
                    "P2", "rare_common_corr"),
        PaperNumber("rare vs common: per-head ablation effect on the loss (Spearman across "
                    "heads; a counterpart of P2's pattern correlation)", "P2 models",
                    "highly correlated", "P2", extract=_loss_effect_rho),
    ],
}


def render_report(results: dict[str, Any], out_dir: str | Path,
                  source_dir: str | Path | None = None) -> Path:
    """Write out_dir/REPORT.md (and the summary forest plot, and REPORT.html: the same report
    as one self-contained file, harness.report.html); return the REPORT.md path.

    Figure paths in `results` are relative to the run directory; with `source_dir` (where the
    results.json lies) they are copied into out_dir when it differs.
    """
    validate(results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = sorted(results["claims"], key=_record_order)
    q_values = assign_q_values(records)
    if source_dir is not None:
        _copy_figures(records, Path(source_dir), out_dir)
    keys = sorted({r["claim"] for r in records} | {e["claim"] for e in results["skipped"]}
                  | {e["claim"] for e in results["errors"]}, key=claim_sort_key)
    summary_png = forest_plot({_claim_title(k): [_forest_row(r) for r in records
                                                 if r["claim"] == k] for k in keys},
                              out_dir / SUMMARY_FIGURE)
    parts = [
        f"# rarebench results: run `{results['run_id']}`",
        _interrupted_banner(results),
        _glance_section(records, results),
        _settings_section(results),
        _summary_section(records, q_values, summary_png, results["skipped"],
                         results["errors"]),
    ]
    for key in keys:
        parts.append(_claim_section(key, records, q_values, results))
    parts.append(_manifest_section(results.get("manifest") or {}))
    path = out_dir / "REPORT.md"
    path.write_text("\n\n".join(p.strip() for p in parts if p) + "\n", encoding="utf-8")
    render_html(path)
    return path


def assign_q_values(records: list[dict]) -> dict[int, float | None]:
    """id(record) -> q-value: details['q_value'] when the claim test corrected its own family,
    else Benjamini-Hochberg over the p-values of this run's records of the same claim."""
    out: dict[int, float | None] = {}
    for key in {r["claim"] for r in records}:
        family = [r for r in records if r["claim"] == key]
        own = [r for r in family if _finite(r["result"].get("details", {}).get("q_value"))]
        for r in own:
            out[id(r)] = float(r["result"]["details"]["q_value"])
        rest = [r for r in family if id(r) not in out]
        p = np.array([r["result"].get("p_value") if _finite(r["result"].get("p_value"))
                      else np.nan for r in rest], dtype=np.float64)
        _, q = bh_fdr(p) if len(p) else (None, p)
        for r, qv in zip(rest, q):
            out[id(r)] = float(qv) if np.isfinite(qv) else None
    return out


# -- sections --------------------------------------------------------------------------------
def _interrupted_banner(results: dict) -> str:
    """First thing a reader sees of a run that was stopped: its results are a part only."""
    if not results.get("interrupted"):
        return ""
    how = f" by {results['interrupt_signal']}" if results.get("interrupt_signal") else ""
    done = (f" - {results['cases_finished']} of {results['cases_total']} claim cases finished"
            if results.get("cases_total") is not None else "")
    return (f"> **INTERRUPTED{done}.** The run was stopped{how}; this report holds only the "
            "claim cases that finished. Re-running with the same `--cache-dir` reuses what "
            "was computed.")


def _settings_section(results: dict) -> str:
    s = results.get("settings") or {}
    rows = [
        ("run id", results["run_id"]),
        ("started / finished (UTC)", f"{results.get('started_utc')} / {results.get('finished_utc')}"),
        ("models", ", ".join(map(str, s.get("models") or [])) or "-"),
        ("seeds", ", ".join(map(str, s.get("seeds") or [])) or "-"),
        ("rarity: whose token", ", ".join(s.get("rarity_which") or []) or "-"),
        ("rarity: percentiles q", ", ".join(_num(q) for q in s.get("rarity_q") or []) or "-"),
        ("quick mode (fewer resamples)", "yes" if s.get("quick") else "no"),
        ("device requested", s.get("device") or "-"),
        ("selection (-k / -m)", " / ".join(str(s.get(k) or "-") for k in ("keyword", "markers"))),
        *_timing_rows(results.get("timing") or {}),
        ("results file", "results.json (schema version "
                         f"{results['schema_version']}, docs/RESULTS_SCHEMA.md)"),
    ]
    return "## Run settings\n\n" + tabulate(rows, headers=["setting", "value"], tablefmt="github")


def _timing_rows(t: dict) -> list[tuple[str, str]]:
    """Run time and where it went (results['timing'], harness.report.plugin)."""
    if not t:
        return []
    rows = [("run wall time", f"{_num(t.get('run_wall_s'))} s")]
    rows += [(f"stage: {k}", f"{_num(v)} s") for k, v in (t.get("stages_s") or {}).items()]
    by = t.get("prepare_s_by_model") or {}
    if by:
        rows.append(("preparation by model", ", ".join(f"{m} {_num(v)} s" for m, v in by.items())))
    return rows


def _glance_section(records: list[dict], results: dict) -> str:
    """The one screen a reader needs: claims x models with each case's verdict, effect [CI]
    and power, then everything that gave no verdict or did not go as expected, with why."""
    models = list(dict.fromkeys(r["model"] for r in records))
    keys = sorted({r["claim"] for r in records}, key=claim_sort_key)
    counts: dict[str, int] = {}
    for r in records:
        counts[_verdict(r["result"])] = counts.get(_verdict(r["result"]), 0) + 1
    failed = [r for r in records if r.get("test_outcome") == "failed"]
    differs = [r for r in records
               if ((r["result"].get("details") or {}).get("golden") or {}).get("matches") is False]
    head = (f"{len(records)} claim results ("
            + (", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "none") + "); "
            f"{len(results['skipped'])} skipped, {len(results['errors'])} errors, "
            f"{len(failed)} failed claim tests, {len(differs)} golden mismatches.")
    lines = ["## At a glance", "", head]
    if records:
        rows = []
        for key in keys:
            row = [_claim_title(key)]
            for m in models:
                cell = [f"**{_verdict(r['result'])}** {_effect_ci(r['result'])}, power "
                        f"{_power_value(r)}" + (f" ({setting})" if setting else "")
                        for r in records if r["claim"] == key and r["model"] == m
                        for setting in (_glance_setting(r),)]
                row.append("<br>".join(cell) or "-")
            rows.append(row)
        lines += ["", tabulate(rows, headers=["claim", *models], tablefmt="github",
                               disable_numparse=True),
                  "", "Cells: verdict, effect [CI], power at the SESOI on this run's own data "
                      "(details in the summary below and each claim's section)."]
    problems = []
    if results.get("interrupted"):
        problems.append(f"interrupted: {results.get('cases_finished', '?')} of "
                        f"{results.get('cases_total', '?')} claim cases finished")
    for e in results["errors"]:
        problems.append(f"error: {e.get('model') or '-'} {e['claim']}: {e['reason']}")
    for r in failed:
        problems.append(f"claim test failed: {_who(r)} {r['claim']} (verdict "
                        f"{_verdict(r['result'])}; pytest asserts the golden or the claim)")
    for r in differs:
        diff = (r["result"]["details"]["golden"].get("diff") or [])
        problems.append(f"golden mismatch: {_who(r)} {r['claim']}: "
                        + "; ".join(map(str, diff[:3])) + (" ..." if len(diff) > 3 else ""))
    reasons: dict[str, list[str]] = {}
    for e in results["skipped"]:
        reasons.setdefault(str(e["reason"]), []).append(f"{e.get('model') or '-'} {e['claim']}")
    for reason, who in reasons.items():
        problems.append(f"skipped ({len(who)}: {', '.join(who[:4])}"
                        + (" ..." if len(who) > 4 else "") + f"): {reason}")
    if problems:
        lines += ["", "Without a verdict or not as expected:", ""]
        lines += [f"- {p}" for p in problems]
    return "\n".join(lines)


def _glance_setting(r: dict) -> str:
    s = r.get("settings") or {}
    return " ".join(x for x in (_rarity(s), _variant(s)) if x and x != "-")


def _summary_section(records: list[dict], q: dict, png: Path | None, skipped: list,
                     errors: list) -> str:
    counts = (f"{len(records)} claim results, {len(skipped)} skipped tests, "
              f"{len(errors)} errors (reasons in each claim's section).")
    if not records:
        return f"## Summary\n\n{counts} No claim produced a result in this run."
    rows = [(_claim_title(r["claim"]), r["model"], _num(r.get("seed")),
             _rarity(r.get("settings") or {}), _variant(r.get("settings") or {}),
             _verdict(r["result"]), _effect_ci(r["result"]),
             _num(r["result"].get("p_value")), _num(q.get(id(r))), _sesoi(r), _power(r),
             _num(_calibration(r, "mde80")), _num(_calibration(r, "fpr")))
            for r in records]
    table = tabulate(rows, headers=["claim", "model", "seed", "rarity", "variant", "verdict",
                                    "effect [CI]", "p", "q", "SESOI", "power (s.e.)",
                                    "MDE 80%", "FPR"],
                     tablefmt="github", disable_numparse=True)
    text = (f"## Summary\n\n{counts}\n\n{table}\n\n"
            f"q: {Q_FAMILY}, unless the claim test reports its own q-value. Verdicts: "
            "**supported** (the claim holds at the stated level), **refuted** (the data "
            "contradict it), **inconclusive** (the data cannot decide: too little data or a "
            "failed validity gate, reason in the claim's caveats), **untestable** (a "
            "precondition failed: the model never learned its rare tokens). SESOI: the "
            "smallest effect of interest each claim states in advance. Power: how often the "
            "claim's full decision rule finds an effect of exactly the SESOI planted into this "
            "run's own data; MDE 80%: the smallest planted effect found 80% of the time; FPR: "
            "how often it 'finds' one on label-shuffled copies of the same data. A verdict is a "
            "result, not an error.")
    if png is not None:
        text += f"\n\n![effect sizes with CIs per claim and model]({png.name})"
    return text


def _claim_section(key: str, records: list[dict], q: dict, results: dict) -> str:
    mine = [r for r in records if r["claim"] == key]
    parts = [f"## {_claim_title(key)}"]
    if text := _claim_text(key):
        parts.append(f"*Claim:* {text}")
    if mine:
        rows = [(r["model"], _num(r.get("seed")), _rarity(r.get("settings") or {}),
                 _variant(r.get("settings") or {}),
                 r["result"].get("effect_name", "effect"), _effect_ci(r["result"]),
                 _num(r["result"].get("statistic")), _num(r["result"].get("p_value")),
                 _num(q.get(id(r))), _power(r),
                 _num(_calibration(r, "fpr")), _verdict(r["result"]),
                 r.get("test_outcome") or "-", _time(r))
                for r in mine]
        parts.append(tabulate(rows, headers=["model", "seed", "rarity", "variant", "effect size",
                                             "value [CI]", "statistic", "p", "q", "power",
                                             "FPR", "verdict", "test",
                                             "time s (own + prep.)"],
                              tablefmt="github", disable_numparse=True))
        parts.append(_detail_tables(mine))
        parts.append(_figures_block(mine))
        parts.append(_settings_block(mine))
    if _paper_numbers(key):
        parts.append(_paper_block(key, mine))
    parts.append(_caveats_block(mine))
    parts.append(_skips_block([e for e in results["skipped"] if e["claim"] == key],
                              [e for e in results["errors"] if e["claim"] == key]))
    return "\n\n".join(p for p in parts if p)


def _detail_tables(records: list[dict]) -> str:
    """A claim's own compact table (details['methods_table']: headers, rows, caption), e.g.
    claim 2's per-clustering-method verdicts; one per record."""
    out = []
    for r in records:
        t = (r["result"].get("details") or {}).get("methods_table")
        if isinstance(t, dict) and t.get("rows"):
            out.append(f"**{_who(r)}: {t.get('caption', '')}**\n\n" + tabulate(
                t["rows"], headers=t["headers"], tablefmt="github", disable_numparse=True))
    return "\n\n".join(out)


def _figures_block(records: list[dict]) -> str:
    lines = []
    for r in records:
        for name, rel in sorted((r.get("figures") or {}).items()):
            lines.append(f"**{_who(r)}: {name}**\n\n![{name}]({rel})")
    return "### Figures\n\n" + "\n\n".join(lines) if lines else ""


def _settings_block(records: list[dict]) -> str:
    lines = []
    for r in records:
        extra = {"revision": r.get("revision"), "alpha": r["result"].get("alpha"),
                 **(r.get("settings") or {})}
        cal = r.get("calibration") or {}
        text = json.dumps({k: v for k, v in extra.items() if v is not None}, sort_keys=True)
        line = f"- {_who(r)} (`{r.get('nodeid', '-')}`): `{text}`"
        if cal:
            line += f"; calibration `{json.dumps(cal, sort_keys=True)}`"
        lines.append(line)
    return "### Exact settings\n\n" + "\n".join(lines)


def _paper_block(key: str, records: list[dict]) -> str:
    rows = []
    for n in _paper_numbers(key):
        ours = []
        if n.details_key or n.extract:
            for r in records:
                details = r["result"].get("details") or {}
                value = n.extract(details) if n.extract else details.get(n.details_key)
                if value is not None:
                    ours.append(f"{_who(r)}: {_value(value)}")
        rows.append((n.quantity, n.model, n.value, n.source, "; ".join(ours) or "-"))
    return ("### Original papers vs this run\n\n"
            + tabulate(rows, headers=["quantity", "model", "paper", "source", "this run"],
                       tablefmt="github", disable_numparse=True)
            + "\n\nP1 = arXiv 2509.04479, P2 = arXiv 2509.21163, P3 = arXiv 2505.12822.")


def _caveats_block(records: list[dict]) -> str:
    lines = []
    for r in records:
        details = r["result"].get("details") or {}
        notes = []
        for key in ("message", "reason"):  # analyses name the why of a verdict either way
            if details.get(key):
                notes.append(str(details[key]))
        caveats = details.get("caveats") or []
        notes.extend([caveats] if isinstance(caveats, str) else map(str, caveats))
        freq = str((r.get("settings") or {}).get("frequency") or "")
        if freq.startswith(("proxy", "weak proxy")):
            notes.append(f"{freq} - not the model's training counts; rarity is approximate")
        if r["result"]["verdict"] == "untestable" and not notes:
            notes.append("untestable (no reason given)")
        lines.extend(f"- {_who(r)}: {n}" for n in notes)
    return "### Caveats\n\n" + "\n".join(lines) if lines else ""


def _skips_block(skipped: list[dict], errors: list[dict]) -> str:
    lines = [f"- skipped: {_who(e)}: {e['reason']}" for e in skipped]
    lines += [f"- error ({e.get('when', 'call')}): {_who(e)} (`{e['nodeid']}`): {e['reason']}"
              for e in errors]
    return "### Skipped models and errors\n\n" + "\n".join(lines) if lines else ""


def _manifest_section(manifest: dict) -> str:
    packages = manifest.get("packages") or {}
    git = manifest.get("git") or {}
    device = manifest.get("device") or {}
    rows = [(name, version or "not installed") for name, version in packages.items()]
    sha = git.get("sha") or "unknown"
    rows += [
        ("git sha", sha + (" (uncommitted changes)" if git.get("dirty") else "")),
        ("device", (", ".join(manifest.get("device_used") or []) or device.get("resolved")
                    or "-") + (f" ({device['name']})" if device.get("name") else "")),
        ("dtype", ", ".join(manifest.get("dtype_used") or []) or "-"),
        ("processing mode", ", ".join(manifest.get("processing_used") or []) or "-"),
        ("python", manifest.get("python") or "-"),
        ("platform", manifest.get("platform") or "-"),
    ]
    return "## Manifest\n\n" + tabulate(rows, headers=["item", "value"], tablefmt="github",
                                         disable_numparse=True)


# -- small formatting helpers ----------------------------------------------------------------
def _record_order(r: dict) -> tuple:
    s = r.get("settings") or {}
    return (claim_sort_key(r["claim"]), str(r["model"]), _sortable(r.get("seed")),
            _rarity(s), json.dumps(s, sort_keys=True), r.get("nodeid", ""))


def _sortable(x: Any) -> tuple:
    return (0, x, "") if isinstance(x, (int, float)) else (1, 0, str(x))


def _claim_title(key: str) -> str:
    known = registered_claims()
    if key in known:
        number, title = known[key]
        return f"Claim {number}: {title}"
    return f"Claim {key}"


def _claim_module(key: str):
    try:
        from harness.claimset import load_claims
        return load_claims().get(key)
    except Exception:  # noqa: BLE001 - no claims/ directory: the static texts only
        return None


def _claim_text(key: str) -> str | None:
    """The claim as stated: the static text of the original three, else its ClaimSpec."""
    if key in CLAIM_TEXT:
        return CLAIM_TEXT[key]
    spec = getattr(_claim_module(key), "SPEC", None)
    return None if spec is None else spec.hypothesis


def _paper_numbers(key: str) -> list[PaperNumber]:
    """The papers' numbers beside ours: the static table of the original three, else the
    claim file's PAPER_NUMBERS_ROWS (quantity, model, value, source, details key)."""
    if key in PAPER_NUMBERS:
        return PAPER_NUMBERS[key]
    rows = getattr(_claim_module(key), "PAPER_NUMBERS_ROWS", ())
    return [PaperNumber(*r) for r in rows]


def _who(r: dict) -> str:
    bits = [str(r.get("model") or "(no model parameter)")]
    if r.get("seed") is not None:
        bits.append(f"seed {r['seed']}")
    rarity = _rarity(r.get("settings") or {})
    if rarity != "-":
        bits.append(rarity)
    variant = _variant(r.get("settings") or {})
    if variant != "-":
        bits.append(variant)
    return ", ".join(bits)


def _variant(settings: dict) -> str:
    """What distinguishes records of one claim beyond model/seed/rarity: the ablation mode and
    scope, the neuron group, rows and layers when not the defaults."""
    bits = [str(settings[k]) for k in ("group", "mode") if settings.get(k)]
    if settings.get("scope") and settings["scope"] != "all-positions":
        bits.append(str(settings["scope"]))
    if settings.get("layers") and settings["layers"] != "all":
        bits.append(str(settings["layers"]))
    if settings.get("rows_ablated"):
        bits.append(f"{settings['rows_ablated']} rows")
    return " ".join(bits) or "-"


def _verdict(result: dict) -> str:
    """One of the four verdicts (version-1 files are upgraded on load)."""
    return result["verdict"]


def _rarity(settings: dict) -> str:
    spec = settings.get("rarity") if isinstance(settings.get("rarity"), dict) else settings
    which = spec.get("which", spec.get("rarity_which"))
    q = spec.get("q", spec.get("rarity_q"))
    if which is None and q is None:
        return str(settings["rarity"]) if isinstance(settings.get("rarity"), str) else "-"
    label = " ".join(b for b in (which and str(which), q is not None and f"q{_num(q)}") if b)
    return label + (" +elbow" if spec.get("elbow") else "")


def _calibration(r: dict, kind: str) -> float | None:
    """Power at the SESOI / false-positive rate / MDE measured on the run's own data
    (details['own_power']); a version-1 record's synthetic calibration otherwise."""
    names = {"power": ("power",), "fpr": ("fpr", "false_positive_rate"),
             "mde80": ("mde80",)}[kind]
    own = (r["result"].get("details") or {}).get("own_power") or {}
    for source in (own, r.get("calibration") or {}, r["result"].get("details") or {}):
        for name in names:
            if _finite(source.get(name)):
                return float(source[name])
    return None


def _power(r: dict) -> str:
    own = (r["result"].get("details") or {}).get("own_power") or {}
    if _finite(own.get("power")):
        return f"{_power_value(r)} ({_num(own.get('power_se'))}, n={own.get('n_reps')})"
    return _power_value(r)


def _power_value(r: dict) -> str:
    """Power at the SESOI: measured on the run's own data, else the calibration's."""
    own = (r["result"].get("details") or {}).get("own_power") or {}
    return _num(own["power"] if _finite(own.get("power")) else _calibration(r, "power"))


def _sesoi(r: dict) -> str:
    dec = (r["result"].get("details") or {}).get("decision") or {}
    return _num(dec.get("sesoi")) if dec.get("sesoi") is not None else "-"


def _effect_ci(res: dict) -> str:
    return f"{_num(res.get('effect'))} [{_num(res.get('ci_low'))}, {_num(res.get('ci_high'))}]"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _time(r: dict) -> str:
    """A result's own analysis time plus its share of the model's preparation."""
    own, share = r.get("wall_time_s"), r.get("prep_share_s")
    if own is None:
        return "-"
    return f"{_num(own + (share or 0.0))} ({_num(own)} + {_num(share or 0.0)})"


def _num(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        return "n/a"
    if x == int(x) and abs(x) < 1e6:
        return str(int(x))
    return f"{x:.3g}" if abs(x) >= 1e-3 else f"{x:.2g}"


def _value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return " / ".join(_value(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k} {_value(x)}" for k, x in sorted(v.items()))
    return _num(v)


def _forest_row(r: dict) -> dict:
    res = r["result"]
    return {"label": _who(r), "effect": res.get("effect") if _finite(res.get("effect")) else None,
            "ci_low": res.get("ci_low") if _finite(res.get("ci_low")) else None,
            "ci_high": res.get("ci_high") if _finite(res.get("ci_high")) else None,
            "verdict": res["verdict"], "effect_name": res.get("effect_name"),
            "sesoi": (res.get("details") or {}).get("decision", {}).get("sesoi"),
            "direction": (res.get("details") or {}).get("decision", {}).get("direction"),
            "model": r.get("model"), "rarity": _rarity(r.get("settings") or {}),
            "alpha": res.get("alpha") if _finite(res.get("alpha")) else None}


def _copy_figures(records: list[dict], source_dir: Path, out_dir: Path) -> None:
    """Copy each figure to the same relative path under out_dir; a path that would leave
    out_dir (`..`, absolute, a symlinked folder) is refused: re-rendering a results.json from
    elsewhere must never write outside the directory asked for."""
    if source_dir.resolve() == out_dir.resolve():
        return
    for r in records:
        for rel in (r.get("figures") or {}).values():
            src, dest = source_dir / rel, inside(out_dir, rel)
            if src.is_file():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)


def inside(root: Path, rel: str) -> Path:
    """root / rel, if it resolves inside root (else BadInputError naming the path)."""
    path = (root / rel).resolve()
    if Path(rel).is_absolute() or not path.is_relative_to(root.resolve()):
        raise BadInputError(f"figure path {rel!r} points outside the report directory {root}; "
                            "figure paths must be relative paths inside the run directory")
    return path
