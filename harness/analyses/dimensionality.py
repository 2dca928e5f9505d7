"""Claim 4: the plateau group is coordinated - its co-activation at rare positions spans fewer
dimensions than groups with the same activation statistics (P3: principal components for 95%
of the variance, 0.49 vs 0.56 of group size) - while claim 2 finds no module.

Why these choices:
- Effective dimension = participation ratio PR = (sum l)^2 / sum l^2 of the eigenvalues l of
  the group's correlation matrix, over the group size k (P3's count of components for 95% of
  the variance, also over k, is reported beside it: on groups of 5-30 neurons it moves in
  steps of 1/k, PR/k is continuous). Correlations, not covariances: a few high-variance
  members would otherwise set the dimension by their scale alone.
- Cross-fitted exactly as claim 2 (clustering.crossfit_analysis: same row halves, same group
  selection, same selection null), so the group is never measured on the rows that chose it.
- Verdict nulls, per fold: >= 1,000 random groups matched member by member on activation mean,
  SD, share active and strength outside the group (clustering.matched_groups: the statistics
  that drive correlation); the effect is their mean PR/k minus the group's. Control: the
  group must also lie below groups made by the same selection on common positions (any
  top-influence group of a trained layer may be coordinated: the claim is about the plateau).
- Row bootstrap (rows, not positions) of the group's PR/k with the nulls held fixed gives the
  s.e.; the interval is the union of the folds' (1 - 2 alpha) t intervals (as claim 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.analyses.clustering import (FOLD_KEYS, N_CANDIDATES, CorrView, CrossFit, Fold,
                                         _t_quantile, copula_plant, crossfit_validity,
                                         fold_matched, plant_for, random_groups,
                                         row_bootstrap_cov)
from harness.errors import BadInputError
from harness.stats.bootstrap import replicate_list, shared_bootstrap_seed
from harness.stats.empirical import empirical_p
from harness.stats.result import TestResult

PAPER = {"n95_over_k": {"specialists": 0.49, "random": 0.56},
         "source": "P3: components for 95% of the co-activation variance over group size"}
EFFECT_NAME = "PR/k reduction vs matched null (cross-fitted)"
EFFECT_MEASURE = ("effective dimension PR/k: participation ratio (sum l)^2 / sum l^2 of the "
                  "eigenvalues l of the group's correlation matrix at the rare positions of the "
                  "test half, over group size k; effect = mean PR/k of matched random groups "
                  "minus the group's, averaged over the two cross-fit folds (fraction of group "
                  "size; positive = the group spans fewer dimensions)")
FAMILY_TEXT = ("intersection-union over folds A->B and B->A: 'supported' needs the one-sided "
               "p vs the matched null <= alpha in both folds (the largest p is the test's p: "
               "an IUT, no correction) and the selection control in both folds; 'refuted' "
               "needs the upper (1 - 2 alpha) bound below the SESOI in both folds")
NULLS = ("matched", "selection", "random")
PLANT_GRID = (0.0, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0, 1.3, 1.7, 2.2, 3.0, 4.5, 7.0)


# ---------------------------------------------------------------- pure maths

def block_spectra(view: CorrView, groups: np.ndarray, chunk: int = 512) -> np.ndarray:
    """[G, k] eigenvalues (descending) of each group's correlation matrix, read from a fold's
    correlation view (clustering.CorrView, planted rows included): no activations touched.
    A constant neuron has r = 0 with every other (one dimension of its own)."""
    groups = np.atleast_2d(np.asarray(groups, dtype=np.int64))
    k = groups.shape[1]
    out = np.empty(groups.shape, dtype=np.float64)
    eye = np.eye(k)
    for s in range(0, len(groups), chunk):
        out[s:s + chunk] = np.linalg.eigvalsh(view.block(groups[s:s + chunk]) + eye)[:, ::-1]
    return np.clip(out, 0.0, None)


def participation_ratio(ev: np.ndarray) -> np.ndarray:
    """PR / k per row of eigenvalues [G, k]: 1 for k independent neurons, 1/k for one factor."""
    ev = np.atleast_2d(ev)
    s1, s2 = ev.sum(1), (ev ** 2).sum(1)
    return np.where(s2 > 0, s1 ** 2 / np.where(s2 > 0, s2, 1.0), 0.0) / ev.shape[1]


def components_for(ev: np.ndarray, share: float = 0.95) -> np.ndarray:
    """Components needed for `share` of the variance, over k (P3's measure), per row."""
    ev = np.atleast_2d(ev)
    cum = np.cumsum(ev, 1) / np.maximum(ev.sum(1, keepdims=True), 1e-300)
    return ((cum < share - 1e-12).sum(1) + 1) / ev.shape[1]


def pr_bootstrap(xg: np.ndarray, row: np.ndarray, n_boot: int, rng: np.random.Generator,
                 key: tuple[int, ...] = ()) -> np.ndarray:
    """[n_boot] row-bootstrap replicates of one group's PR/k (xg [n, k]; rows resampled,
    from per-row sums so a replicate costs one k x k eigendecomposition)."""
    cov = row_bootstrap_cov(xg, row, n_boot, rng, key=key)
    k = cov.shape[1]
    sd = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0, None))
    inv_sd = np.where(sd > 1e-12, 1.0 / np.where(sd > 1e-12, sd, 1.0), 0.0)
    corr = cov * inv_sd[:, :, None] * inv_sd[:, None, :]
    idx = np.arange(k)
    corr[:, idx, idx] = 1.0  # constant in a replicate: its own dimension, as in block_spectra
    return participation_ratio(np.clip(np.linalg.eigvalsh(corr), 0, None))


# ---------------------------------------------------------------- one fold

def fold_dimension(fold: Fold, group: np.ndarray, rng: np.random.Generator, *,
                   n_matched: int, n_boot: int, n_random: int = 0, xg: np.ndarray | None = None,
                   nulls: dict[str, np.ndarray] | None = None,
                   n_cand: int = N_CANDIDATES) -> dict:
    """The group's PR/k (and components/k) on one fold's test half against the matched and
    selection nulls (and unmatched random groups when n_random > 0); xg overrides the group's
    activations (own-data power plants), `nulls` gives precomputed null PR/k values."""
    group = np.asarray(group, dtype=np.int64)
    view = fold.view if xg is None else fold.view.planted(fold.x, fold.sd, group, xg)
    xg = fold.x[:, group] if xg is None else xg
    ev = block_spectra(view, group[None])
    pr, n95 = float(participation_ratio(ev)[0]), float(components_for(ev)[0])
    out: dict[str, Any] = {"pr": pr, "n95": n95, "k": int(group.size),
                           "n_test_rows": fold.n_test_rows}
    nulls = dict(nulls or {})
    if "matched" not in nulls:
        matched, balance = fold_matched(fold, group, n_matched, rng, n_cand)
        ev_m = block_spectra(view, matched)
        nulls["matched"], nulls["matched_n95"] = participation_ratio(ev_m), components_for(ev_m)
        out["balance"] = balance
    if "selection" not in nulls:
        ev_s = block_spectra(view, fold.selection)
        nulls["selection"], nulls["selection_n95"] = (participation_ratio(ev_s),
                                                      components_for(ev_s))
    if n_random and "random" not in nulls:
        ev_r = block_spectra(view, random_groups(view.m, group, n_random, rng))
        nulls["random"], nulls["random_n95"] = participation_ratio(ev_r), components_for(ev_r)
    boot = pr_bootstrap(xg, fold.row, n_boot, rng,
                        key=(FOLD_KEYS.get(fold.name, len(FOLD_KEYS)),))
    out["se"] = max(float(np.std(boot, ddof=1)), 1e-9)
    out["_boot"] = boot
    for name in NULLS:
        null = nulls.get(name)
        if null is None:
            continue
        sd = float(np.std(null, ddof=1))
        out[name] = {"estimate": float(np.mean(null)) - pr, "p": empirical_p(pr, null, "less"),
                     "z": (pr - float(np.mean(null))) / sd if sd > 0 else float("nan"),
                     "percentile": float(np.mean(null < pr) + 0.5 * np.mean(null == pr)),
                     "null_mean": float(np.mean(null)), "null_sd": sd, "n": int(null.size),
                     "n95_null_mean": float(np.mean(nulls[f"{name}_n95"]))
                     if f"{name}_n95" in nulls else None}
    out["_nulls"] = nulls
    return out


# ---------------------------------------------------------------- both folds: the verdict

@dataclass
class Dimensionality:
    """Everything claim 4 measured (arrays kept for the figure and own-data power)."""

    cf: CrossFit
    per_fold: list[dict]
    family: list[dict]
    decision: Any
    sesoi: float
    alpha: float
    settings: dict

    @property
    def headline(self) -> dict:
        return self.family[0]


def combine(per_fold: list[dict], sesoi: float, alpha: float) -> list[dict]:
    """One row per verdict null (matched, then the selection control): estimate = fold mean,
    p_max over folds, the union of the folds' (1 - 2 alpha) t intervals (test rows - 1 df)."""
    dfs = [max(int(f["n_test_rows"]) - 1, 1) for f in per_fold]
    tq = [_t_quantile(1 - alpha, df) for df in dfs]
    rows = []
    for name in ("matched", "selection"):
        est = [float(f[name]["estimate"]) for f in per_fold]
        ps = [float(f[name]["p"]) for f in per_fold]
        ses = [float(f["se"]) for f in per_fold]
        hi = [e + t * s for e, s, t in zip(est, ses, tq)]
        rows.append({"null": name, "estimate": float(np.mean(est)), "estimate_by_fold": est,
                     "p_by_fold": ps, "p_max": max(ps), "se_by_fold": ses,
                     "ci_low": min(e - t * s for e, s, t in zip(est, ses, tq)),
                     "ci_high": max(hi), "upper_below_sesoi": bool(max(hi) < sesoi),
                     "significant": bool(max(ps) <= alpha),
                     "z_by_fold": [f[name]["z"] for f in per_fold],
                     "percentile_by_fold": [f[name]["percentile"] for f in per_fold]})
    return rows


def decide(family: list[dict], per_fold: list[dict], sesoi: float, alpha: float):
    """decide_exists on the matched-null row, the selection row as a control."""
    from harness.verdicts import Gate, decide_exists

    head, sel = family
    validity = crossfit_validity(per_fold)  # own-data plants reuse the checked matched null
    sel_p = ", ".join(f"{p:.3g}" for p in sel["p_by_fold"])
    controls = (
        Gate("beyond_selection", sel["significant"], sel["p_max"], alpha,
             f"not below groups made by the same selection on common positions (PR/k "
             f"reduction {sel['estimate']:+.3f}, p {sel_p}) - coordination of any "
             "top-influence group, not of the plateau"),)
    # IUT across folds: p = the larger fold p; upper = the larger fold upper bound
    return decide_exists(p_value=head["p_max"], alpha=alpha, upper=head["ci_high"],
                         sesoi=sesoi, validity=validity, controls=controls)


def dimensionality_analysis(cf: CrossFit, *, sesoi: float, n_matched: int = 1000,
                            n_random: int = 1000, n_boot: int = 200, seed: int = 0
                            ) -> Dimensionality:
    """Claim 4's verdict on the folds of a claim-2 cross-fit (same halves, groups and
    selection nulls)."""
    if n_matched < 2 or n_boot < 2:
        raise BadInputError("n_matched and n_boot must be >= 2")
    rng = np.random.default_rng([seed, 44])
    per_fold = []
    for fold in cf.folds:
        st = fold_dimension(fold, fold.group, rng, n_matched=n_matched, n_boot=n_boot,
                            n_random=n_random)
        st.update(fold=fold.name, n_test_positions=int(fold.x.shape[0]))
        per_fold.append(st)
    family = combine(per_fold, sesoi, cf.alpha)
    decision = decide(family, per_fold, sesoi, cf.alpha)
    settings = {"n_matched": n_matched, "n_random": n_random, "n_boot": n_boot, "seed": seed,
                "n_selection": int(len(cf.folds[0].selection)), "n_cand": N_CANDIDATES}
    return Dimensionality(cf, per_fold, family, decision, sesoi, cf.alpha, settings)


# ---------------------------------------------------------------- own-data power

def plant_curve(fold: Fold, rng: np.random.Generator, draws: int = 4
                ) -> tuple[np.ndarray, np.ndarray]:
    """(loadings, mean drop of the group's PR/k) over PLANT_GRID for copula_plant on this
    fold's real activations (made monotone), so that an effect maps to a loading."""
    g = fold.group
    xg = fold.x[:, g]
    base = float(participation_ratio(block_spectra(fold.view, g[None]))[0])
    drop = []
    for s in PLANT_GRID:
        vals = [base - float(participation_ratio(block_spectra(
            fold.view.planted(fold.x, fold.sd, g, copula_plant(
                xg, s, rng.standard_normal(xg.shape[0]))), g[None]))[0])
            for _ in range(draws if s else 1)]
        drop.append(np.mean(vals))
    return np.array(PLANT_GRID), np.maximum.accumulate(np.array(drop))


def own_power(dim: Dimensionality, *, reps: int, seed: int = 0,
              factors: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0), n_matched: int = 200,
              n_boot: int = 50):
    """Power at the SESOI, MDE and false-positive rate of the verdict on this run's own data.

    plant: the group's REAL test-half activations, per fold, share an N(0, 1) factor
    (clustering.copula_plant: each neuron keeps its activation distribution, so the matching
    statistics do not move), the loading read off plant_curve so that PR/k drops by the
    effect in expectation beyond its real value; the matched null is reused (it excludes the
    group), the selection null recomputed on the planted activations. null: a selection-null
    group in the group's place, against fresh matched groups and the other selection draws."""
    from harness.stats.own_power import own_data_power

    curve_rng = np.random.default_rng([seed, 78])
    curves = [plant_curve(f, curve_rng) for f in dim.cf.folds]
    reuse = [{"matched": f["_nulls"]["matched"]} for f in dim.per_fold]
    balance = [f["balance"] for f in dim.per_fold]

    def decide_state(state: dict) -> str:
        per = []
        for fold, kw in zip(dim.cf.folds, state["folds"]):
            st = fold_dimension(fold, rng=state["rng"], n_matched=n_matched, n_boot=n_boot, **kw)
            per.append(st)
        return decide(combine(per, dim.sesoi, dim.alpha), per, dim.sesoi, dim.alpha).verdict

    def plant(rng: np.random.Generator, effect: float) -> dict:
        folds = []
        for fold, (loads, drop), nulls, bal in zip(dim.cf.folds, curves, reuse, balance):
            xg = copula_plant(fold.x[:, fold.group], plant_for(effect, loads, drop),
                              rng.standard_normal(fold.x.shape[0]))
            folds.append({"group": fold.group, "xg": xg, "nulls": dict(nulls)})
        return {"rng": rng, "folds": folds}

    def null(rng: np.random.Generator) -> dict:
        folds = []
        for fold in dim.cf.folds:
            b = int(rng.integers(len(fold.selection)))
            others = np.delete(np.arange(len(fold.selection)), b)
            sel = participation_ratio(block_spectra(fold.view, fold.selection[others]))
            folds.append({"group": fold.selection[b], "nulls": {"selection": sel}})
        return {"rng": rng, "folds": folds}

    reach = min(float(d[-1]) for _, d in curves)
    how = (f"plant: copula_plant - the group's real test-half activations re-ordered within "
           f"each neuron to share an N(0,1) factor (marginals, hence the matching statistics, "
           f"unchanged), loading interpolated for an expected PR/k drop of effect beyond the "
           f"real one (largest reachable drop {reach:.3f}); base reduction vs the matched null "
           f"{dim.headline['estimate']:+.3f}; null: a selection-null group in the group's place "
           f"vs {n_matched} fresh matched groups and the other selection draws; replicates use "
           f"{n_matched} matched groups and {n_boot} bootstrap draws (verdict: "
           f"{dim.settings['n_matched']} / {dim.settings['n_boot']})")
    return own_data_power(decide_state, plant, null, sesoi=dim.sesoi, detect="supported",
                          reps=reps, factors=factors, seed=seed, how=how)


# ---------------------------------------------------------------- result and figure

def dimensionality_result(dim: Dimensionality, power=None) -> TestResult:
    """Claim 4's TestResult: effect = PR/k reduction vs the matched null (fold mean) with the
    union of the folds' (1 - 2 alpha) intervals; p = the larger fold p (IUT)."""
    head = dim.headline
    public = [{k: v for k, v in f.items() if not k.startswith("_")} for f in dim.per_fold]
    details = {
        "decision": dim.decision.to_dict(), "message": dim.decision.reason,
        "sesoi": dim.sesoi, "effect_measure": EFFECT_MEASURE, "family": dim.family,
        "correction": FAMILY_TEXT, "folds": public,
        "pr_over_k": float(np.mean([f["pr"] for f in public])),
        "n95_over_k": float(np.mean([f["n95"] for f in public])),
        "matched_pr_over_k": float(np.mean([f["matched"]["null_mean"] for f in public])),
        "matched_n95_over_k": float(np.mean([f["matched"]["n95_null_mean"] for f in public])),
        "random": {"estimate": float(np.mean([f["random"]["estimate"] for f in public])),
                   "p_max": max(f["random"]["p"] for f in public),
                   "n95_null_mean": float(np.mean([f["random"]["n95_null_mean"]
                                                   for f in public]))}
        if all("random" in f for f in public) else None,
        "crossfit": {"unit": "rows", "halves": {"A": dim.cf.halves[0].tolist(),
                                                 "B": dim.cf.halves[1].tolist()},
                     "k_by_fold": [f["k"] for f in public]},
        "settings": dim.settings, "paper": PAPER,
        "ci_method": (f"union of the two folds' {100 * (1 - 2 * dim.alpha):.0f}% t intervals "
                      "from the row-bootstrap s.e. of the group's PR/k; null means fixed"),
    }
    if power is not None:
        details["own_power"] = power.to_dict()
    if shared_bootstrap_seed() is not None:  # paired across checkpoints (emergence)
        details["effect_replicates"] = replicate_list(np.mean(
            [f["matched"]["null_mean"] - f["_boot"] for f in dim.per_fold], axis=0))
        details["effect_replicates_how"] = (
            "replicate b = mean over the two folds of (matched-null mean PR/k, held fixed, "
            "minus the group's PR/k in fold f's row-bootstrap replicate b)")
    return TestResult(name="claim4_coordination", statistic=details["pr_over_k"],
                      p_value=head["p_max"], effect=head["estimate"], ci_low=head["ci_low"],
                      ci_high=head["ci_high"], verdict=dim.decision.verdict,
                      effect_name=EFFECT_NAME, alpha=dim.alpha, details=details)


def plot_dimension(dim: Dimensionality, path: str | Path, *, model: str = "",
                   setting: str = "", verdict: str = "") -> Path:
    """Per fold: the matched and selection nulls' PR/k with the group's value."""
    from harness.analyses.figio import plt, save_figure

    fig, axes = plt.subplots(1, len(dim.per_fold), figsize=(5 * len(dim.per_fold), 3.4),
                             squeeze=False)
    for ax, f in zip(axes[0], dim.per_fold):
        nulls = f["_nulls"]
        bins = np.linspace(min(nulls["matched"].min(), nulls["selection"].min(), f["pr"]),
                           max(nulls["matched"].max(), nulls["selection"].max(), f["pr"]), 40)
        ax.hist(nulls["matched"], bins=bins, alpha=0.6, density=True,
                label=f"matched random ({nulls['matched'].size})")
        ax.hist(nulls["selection"], bins=bins, histtype="step", density=True, lw=1.5,
                label=f"same selection, common ({nulls['selection'].size})")
        ax.axvline(f["pr"], color="k", lw=2, label=f"plateau group {f['pr']:.3f}")
        ax.set_xlabel("participation ratio / group size")
        ax.set_title(f"fold {f['fold']} (k = {f['k']}, {f['n_test_rows']} test rows)",
                     fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"{model} {setting}: effective dimension - {verdict}", fontsize=10)
    return save_figure(fig, path)
