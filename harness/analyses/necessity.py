"""Claim 6: the plateau group is necessary for rare-token prediction beyond its size - jointly
mean-ablating it costs more loss at rare positions than ablating random groups of the same
size, and more so at rare than at common positions (P1's next check 3, issue 15.3).

Why these choices:
- Exact joint ablation (harness.ablation.group: the closed form as a rank-k update) at every
  rare and (sampled) common position of the test half, for the group and >= 200 random groups:
  the group is a set, so its members' single-neuron Deltas do not add up to its effect.
- Cross-fitted exactly as claims 2 and 4: the same row halves (clustering.split_rows with the
  claim-2 seed stream) and the same selection (the plateau of the rare-token boost curve on the
  selection half); the ablation is measured on the other half only.
- Verdict null = unmatched random groups of the group's size (P1's comparison: "beyond its
  size"). Reported beside it: groups matched member by member on single-neuron importance
  outside rarity (mean Delta at the selection half's common positions, and activation SD): does
  the group matter for rare tokens beyond being made of generally important neurons?
- Control (rare beyond common): the excess over random groups must be larger at rare than at
  common positions (difference in differences), else a generally important group passes.
- Sufficiency (reported, not in the verdict): every final-layer neuron mean-ablated except the
  group; the group's restored loss vs random groups restored alike.
- Row bootstrap (rows resampled, random groups held fixed) gives each fold's s.e.; the interval
  is the union of the folds' (1 - 2 alpha) t intervals (claim 4's rule); p = empirical p among
  the random groups (the group exchangeable with them under H0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.analyses.clustering import (FOLD_KEYS, MIN_TEST_ROWS, _t_quantile, matched_groups,
                                         random_groups, split_rows)
from harness.errors import BadInputError
from harness.stats.bootstrap import replicate_list, resample_weights, shared_bootstrap_seed
from harness.stats.empirical import empirical_p
from harness.stats.result import TestResult

EFFECT_NAME = "rare-position loss increase vs random groups (nats, cross-fitted)"
EFFECT_MEASURE = ("necessity = mean CE increase (nats) at the test half's rare positions when the "
                  "plateau group is jointly mean-ablated, minus the mean increase of random "
                  "groups of the same size, averaged over the two cross-fit folds (positive = "
                  "the group matters more for rare tokens than its size)")
FAMILY_TEXT = ("intersection-union over folds A->B and B->A and the two parts of the claim: "
               "'supported' needs the empirical p of the rare-position increase vs random "
               "groups < alpha in both folds AND the rare-minus-common difference of the "
               "excess p < alpha in both folds (the largest p is the test's p: an IUT, no "
               "correction); 'refuted' needs the necessity's upper (1 - 2 alpha) bound below "
               "the SESOI in both folds; sufficiency and the matched null are reported only")
MAX_RARE = 100    # rare positions ablated per test half (a uniform subsample beyond it: the
MAX_COMMON = 100  # cost is groups x positions x V; SmolLM2 has ~20 rare per half at q50)
N_RESTORE = 100   # random groups restored alike for the (reported) sufficiency comparison


# ---------------------------------------------------------------- measurement (model side)

def final_resid(prep) -> np.ndarray:
    """float32 [n_pos, d_model] final hook_resid_post at the evaluated positions (aligned with
    the influence rows, as pipeline.final_activations). Memoised on the Prepared object; where
    the activations are not memoised yet they are taken from the same forward pass, exactly as
    final_activations takes them (a forward pass over the rows is the costly part on CPU)."""
    from harness.pipeline import evaluated_grid

    if "resid" not in prep.extras:
        with_acts = "acts" not in prep.extras
        parts, acts, evaluated = [], [], evaluated_grid(prep)
        for start in range(0, len(prep.rows), 8):
            sl = slice(start, start + 8)
            with torch.no_grad():
                final = prep.facade.forward_final(torch.from_numpy(prep.rows[sl]))
            mask = torch.from_numpy(evaluated[sl])
            parts.append(final.resid[mask.to(final.resid.device)].float().cpu().numpy())
            if with_acts:
                acts.append(final.post[mask.to(final.post.device)].float().cpu().numpy())
        prep.extras["resid"] = np.concatenate(parts)
        if with_acts:
            prep.extras["acts"] = np.concatenate(acts).astype(np.float32)
    return prep.extras["resid"]


def crossfit_groups(row: np.ndarray, rare: np.ndarray, select, seed: int) -> list[tuple]:
    """[(fold name, selection rows, test rows, group)] - claim 2's halves and groups exactly
    (crossfit_analysis draws split_rows first from default_rng([seed, 2]))."""
    halves = split_rows(row, rare, np.random.default_rng([seed, 2]))
    out = []
    for h, name in ((0, "A->B"), (1, "B->A")):
        group = np.asarray(select(rare & np.isin(row, halves[h])), dtype=np.int64)
        if group.size < 1:
            raise BadInputError(f"fold {name}: the selection found no plateau neurons")
        out.append((name, halves[h], halves[1 - h], group))
    return out


@dataclass
class FoldData:
    """One fold's measured losses (nats). Group rows: 0 = plateau, 1..n_random = random,
    then matched (necessity only)."""

    name: str
    group: np.ndarray
    groups: np.ndarray          # [1 + n_random + n_matched, k]
    n_random: int
    row_r: np.ndarray           # [n_r] rows of the rare test positions
    row_c: np.ndarray           # [n_c] rows of the (sampled) common test positions
    inc_r: np.ndarray           # [G, n_r] CE increase, group ablated
    inc_c: np.ndarray           # [G, n_c]
    clean_r: np.ndarray         # [n_r] clean CE
    clean_c: np.ndarray
    all_r: np.ndarray           # [n_r] CE with every final-layer neuron mean-ablated
    all_c: np.ndarray
    rest_r: np.ndarray          # [1 + n_restore, n_r] CE with only that group restored
    rest_c: np.ndarray
    balance: dict = field(default_factory=dict)
    n_available: tuple = (0, 0)  # (rare, common) test positions before subsampling

    @property
    def n_test_rows(self) -> int:
        return int(np.unique(self.row_r).size)


def measure(prep, rare: np.ndarray, common: np.ndarray, folds: list[tuple], *, n_random: int,
            n_matched: int, seed: int, max_rare: int = MAX_RARE,
            max_common: int = MAX_COMMON, n_restore: int = N_RESTORE,
            dtype: torch.dtype = torch.float32) -> list[FoldData]:
    """The joint ablations of every fold's plateau, random and matched groups (necessity) and
    the restorations of the plateau and random groups (sufficiency) on its test half."""
    from harness.ablation.group import ablate_groups, restore_groups
    from harness.ablation.neuron import closed_form_for
    from harness.pipeline import final_activations

    fac, inf = prep.facade, prep.influence
    op = closed_form_for(fac, dtype=dtype)  # final norm, unembedding, Gemma's post-MLP norm
    resid = final_resid(prep)
    acts = final_activations(prep)
    mu = torch.from_numpy(np.asarray(prep.extras["mean_act_all"], dtype=np.float64))
    m = acts.shape[1]
    rng = np.random.default_rng([seed, 6])
    out = []
    for name, sel_rows, test_rows, group in folds:
        in_test = np.isin(inf.row, test_rows)
        idx_r = np.flatnonzero(rare & in_test)
        idx_c = np.flatnonzero(common & in_test)
        n_avail = (idx_r.size, idx_c.size)
        if idx_r.size > max_rare:
            idx_r = np.sort(rng.choice(idx_r, max_rare, replace=False))
        if idx_c.size > max_common:
            idx_c = np.sort(rng.choice(idx_c, max_common, replace=False))
        rand = random_groups(m, group, n_random, rng)
        sel_c = common & ~in_test
        stats_ = np.column_stack([inf.delta[sel_c].mean(0) if sel_c.any() else np.zeros(m),
                                  acts[~in_test].std(0)])
        matched, balance = matched_groups(stats_, group, n_matched, rng)
        groups = np.vstack([group[None], rand, matched])
        idx = np.concatenate([idx_r, idx_c])
        args = (op, torch.from_numpy(resid[idx]), torch.from_numpy(acts[idx]),
                torch.from_numpy(inf.target[idx]), mu)
        clean, inc = (t.cpu().numpy() for t in ablate_groups(*args, torch.from_numpy(groups)))
        every, rest = (t.cpu().numpy() for t in restore_groups(
            *args, torch.from_numpy(groups[:1 + min(n_restore, n_random)])))
        nr = idx_r.size
        out.append(FoldData(name, group, groups, n_random, inf.row[idx_r], inf.row[idx_c],
                            inc[:, :nr], inc[:, nr:], clean[:nr], clean[nr:], every[:nr],
                            every[nr:], every[None, :nr] + rest[:, :nr],
                            every[None, nr:] + rest[:, nr:], balance, n_avail))
    return out


# ---------------------------------------------------------------- pure statistics

def _row_sums(row: np.ndarray, rows: np.ndarray, v: np.ndarray) -> np.ndarray:
    """[..., n_rows] per-row sums of v [..., n] (rows = the sorted row ids)."""
    pos = np.searchsorted(rows, row)
    out = np.zeros(v.shape[:-1] + (rows.size,))
    for i in range(rows.size):
        out[..., i] = v[..., pos == i].sum(-1)
    return out


def _excess(t_r, t_c, null_r, null_c, row_r, row_c, w):
    """(excess at rare, rare-minus-common difference of the excess) per bootstrap weight row:
    ratio means over the resampled rows of (target - mean of the null groups) per position."""
    rows = np.unique(np.concatenate([row_r, row_c]))
    d_r = t_r - null_r.mean(0)
    d_c = t_c - null_c.mean(0) if t_c.size else np.zeros(0)
    sr, nr = _row_sums(row_r, rows, d_r), _row_sums(row_r, rows, np.ones_like(d_r))
    sc, nc = _row_sums(row_c, rows, d_c), _row_sums(row_c, rows, np.ones_like(d_c))
    with np.errstate(invalid="ignore", divide="ignore"):
        ex_r = (w @ sr) / (w @ nr)
        ex_c = (w @ sc) / (w @ nc) if t_c.size else np.zeros(len(w))
    return ex_r, ex_r - ex_c, rows


def fold_stats(fd: FoldData, rng: np.random.Generator, *, n_boot: int, alpha: float,
               target: int | None = None, plant: np.ndarray | None = None) -> dict:
    """The verdict's numbers in one fold. target: the group row tested (default the plateau,
    row 0; own-data null: a random row, the others its null); plant [n_r]: added to the tested
    group's rare-position increase (own-data power)."""
    R = 1 + fd.n_random
    t = 0 if target is None else target
    null_ids = np.array([i for i in range(1, R) if i != t])
    t_r = fd.inc_r[t] + (0.0 if plant is None else plant)
    t_c = fd.inc_c[t]
    nul_r, nul_c = fd.inc_r[null_ids], fd.inc_c[null_ids]
    obs, obs_d = float(t_r.mean()), float(t_r.mean() - (t_c.mean() if t_c.size else 0.0))
    null, null_d = nul_r.mean(1), nul_r.mean(1) - (nul_c.mean(1) if t_c.size else 0.0)
    rows_all = np.unique(np.concatenate([fd.row_r, fd.row_c]))
    w = resample_weights(rows_all.size, n_boot, rng, key=(FOLD_KEYS.get(fd.name, 2),))
    b_nec, b_diff, _ = _excess(t_r, t_c, nul_r, nul_c, fd.row_r, fd.row_c, w)
    df = max(fd.n_test_rows - 1, 1)
    tq = _t_quantile(1 - alpha, df)
    out: dict[str, Any] = {"fold": fd.name, "k": int(fd.group.size),
                           "n_test_rows": fd.n_test_rows, "n_rare": int(t_r.size),
                           "n_common": int(t_c.size),
                           "n_available": list(fd.n_available),
                           "n_random": int(null.size), "_boot": b_nec}
    for key, o, nu, boot, pos in (("necessity", obs, null, b_nec, "rare"),
                                  ("difference", obs_d, null_d, b_diff, "rare minus common")):
        est = o - float(nu.mean())
        se = max(float(np.nanstd(boot, ddof=1)), 1e-12)
        out[key] = {"estimate": est, "p": empirical_p(o, nu, "greater"),
                    "percentile": float(np.mean(nu < o) + 0.5 * np.mean(nu == o)),
                    "observed": o, "null_mean": float(nu.mean()),
                    "null_sd": float(nu.std(ddof=1)), "se": se,
                    "ci_low": est - tq * se, "ci_high": est + tq * se, "positions": pos}
    if target is None:  # reported: matched null and sufficiency (plateau only)
        mat = fd.inc_r[R:].mean(1)
        if mat.size:
            out["matched"] = {"estimate": obs - float(mat.mean()),
                              "p": empirical_p(obs, mat, "greater"),
                              "percentile": float(np.mean(mat < obs)), "n": int(mat.size),
                              "balance": fd.balance}
        out["sufficiency"] = _sufficiency(fd, rng, n_boot, tq)
        out["increase_rare"], out["increase_common"] = obs, float(t_c.mean()) if t_c.size \
            else float("nan")
    return out


def _sufficiency(fd: FoldData, rng, n_boot: int, tq: float) -> dict:
    """Only the group restored (every other neuron mean-ablated): its rare-position CE vs
    random groups restored alike; estimate = random mean minus the group's (nats; positive =
    the group alone recovers more), and the share of the all-ablated loss gap it recovers."""
    g_r, nul_r = fd.rest_r[0], fd.rest_r[1:]
    obs, null = float(g_r.mean()), nul_r.mean(1)
    rows_all = np.unique(np.concatenate([fd.row_r, fd.row_c]))
    w = resample_weights(rows_all.size, n_boot, rng, key=(FOLD_KEYS.get(fd.name, 2) + 4,))
    boot, _, _ = _excess(-g_r, -fd.rest_c[0], -nul_r, -fd.rest_c[1:], fd.row_r, fd.row_c, w)
    est = float(null.mean()) - obs
    se = max(float(np.nanstd(boot, ddof=1)), 1e-12)
    gap = float(fd.all_r.mean() - fd.clean_r.mean())
    common = (float(fd.rest_c[1:].mean() - fd.rest_c[0].mean()) if fd.rest_c.shape[1]
              else float("nan"))
    return {"estimate": est, "p": empirical_p(obs, null, "less"),
            "percentile": float(np.mean(null > obs)), "se": se, "ci_low": est - tq * se,
            "ci_high": est + tq * se, "restored_loss": obs, "random_restored_loss":
            float(null.mean()), "all_ablated_loss": float(fd.all_r.mean()),
            "clean_loss": float(fd.clean_r.mean()),
            "recovered_share": float((fd.all_r.mean() - obs) / gap) if gap else float("nan"),
            "estimate_common": common}


def combine(per_fold: list[dict], sesoi: float, alpha: float) -> list[dict]:
    """The verdict family: necessity and the rare-minus-common difference, folds combined."""
    rows = []
    for key in ("necessity", "difference"):
        f = [p[key] for p in per_fold]
        ps = [x["p"] for x in f]
        rows.append({"part": key, "estimate": float(np.mean([x["estimate"] for x in f])),
                     "estimate_by_fold": [x["estimate"] for x in f], "p_by_fold": ps,
                     "p_max": max(ps), "se_by_fold": [x["se"] for x in f],
                     "ci_low": min(x["ci_low"] for x in f),
                     "ci_high": max(x["ci_high"] for x in f),
                     "percentile_by_fold": [x["percentile"] for x in f],
                     "significant": bool(max(ps) <= alpha),
                     "upper_below_sesoi": bool(max(x["ci_high"] for x in f) < sesoi)})
    return rows


def decide(family: list[dict], per_fold: list[dict], sesoi: float, alpha: float):
    """decide_exists on the IUT family (FAMILY_TEXT) with its validity gate and control."""
    from harness.verdicts import Gate, decide_exists

    nec, diff = family
    rows_min = min(f["n_test_rows"] for f in per_fold)
    validity = (Gate("test_rows", bool(rows_min >= MIN_TEST_ROWS), float(rows_min),
                     float(MIN_TEST_ROWS), f"only {rows_min} rows with rare positions in a "
                     f"test half (need >= {MIN_TEST_ROWS} for a row bootstrap)"),)
    control = Gate("rare_beyond_common", bool(diff["p_max"] < alpha), diff["p_max"], alpha,
                   f"the excess over random groups is not larger at rare than at common "
                   f"positions in both folds (p {', '.join(f'{p:.3g}' for p in diff['p_by_fold'])}"
                   f"; difference {diff['estimate']:+.3g} nats)")
    # IUT over folds: the largest fold p must pass (decide_exists tests p < alpha)
    return decide_exists(p_value=nec["p_max"], alpha=alpha, upper=nec["ci_high"], sesoi=sesoi, validity=validity,
                         controls=(control,))


@dataclass
class Necessity:
    """Everything claim 6's verdict measured (arrays kept for the figure and own-data power)."""

    folds: list[FoldData]
    per_fold: list[dict]
    family: list[dict]
    decision: Any
    sesoi: float
    alpha: float
    settings: dict

    @property
    def headline(self) -> dict:
        return self.family[0]


def analyse(folds: list[FoldData], *, sesoi: float, alpha: float = 0.05, n_boot: int = 1000,
            seed: int = 0, settings: dict | None = None) -> Necessity:
    rng = np.random.default_rng([seed, 61])
    per_fold = [fold_stats(fd, rng, n_boot=n_boot, alpha=alpha) for fd in folds]
    family = combine(per_fold, sesoi, alpha)
    return Necessity(folds, per_fold, family, decide(family, per_fold, sesoi, alpha), sesoi,
                     alpha, {"n_boot": n_boot, "seed": seed, **(settings or {})})


# ---------------------------------------------------------------- own-data power

def own_power(nec: Necessity, *, reps: int, seed: int = 0,
              factors: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0), n_boot: int = 200):
    """Power at the SESOI, MDE and false-positive rate of the verdict on this run's own data.

    plant: a random group's REAL per-position increases (a left-out draw, per fold), plus
    effect x v(p) at the rare positions, v = |its increase| / mean |increase| (mean 1, the
    real positions' heavy-tailed spread); common positions untouched, so the planted group
    costs `effect` nats more at rare positions, beyond its size and beyond common positions.
    null: the same left-out random group unplanted, against the other random groups."""
    from harness.stats.own_power import own_data_power

    def pick(rng):
        return [int(rng.integers(1, 1 + fd.n_random)) for fd in nec.folds]

    def decide_state(state: dict) -> str:
        per = [fold_stats(fd, state["rng"], n_boot=n_boot, alpha=nec.alpha, target=t,
                          plant=p) for fd, t, p in zip(nec.folds, state["target"],
                                                       state["plant"])]
        return decide(combine(per, nec.sesoi, nec.alpha), per, nec.sesoi, nec.alpha).verdict

    def plant(rng: np.random.Generator, effect: float) -> dict:
        target, planted = pick(rng), []
        for fd, t in zip(nec.folds, target):
            a = np.abs(fd.inc_r[t])
            v = a / a.mean() if a.mean() > 0 else np.ones_like(a)
            planted.append(effect * v)
        return {"rng": rng, "target": target, "plant": planted}

    def null(rng: np.random.Generator) -> dict:
        return {"rng": rng, "target": pick(rng), "plant": [None] * len(nec.folds)}

    how = (f"plant: a left-out random group's real per-position increases (per fold) plus "
           f"effect x |its increase| / mean |increase| at the rare positions (common untouched); "
           f"null: the same left-out random group unplanted vs the other "
           f"{nec.folds[0].n_random - 1} random groups; replicates use {n_boot} bootstrap draws "
           f"(verdict: {nec.settings['n_boot']}); base necessity "
           f"{nec.headline['estimate']:+.4f} nats")
    return own_data_power(decide_state, plant, null, sesoi=nec.sesoi, detect="supported",
                          reps=reps, factors=factors, seed=seed, how=how)


# ---------------------------------------------------------------- result and figure

def necessity_result(nec: Necessity, power=None) -> TestResult:
    """Claim 6's TestResult: effect = necessity (fold mean) with the union of the folds'
    (1 - 2 alpha) intervals; p = the larger fold p of necessity (IUT)."""
    head = nec.headline
    public = [{k: v for k, v in f.items() if not k.startswith("_")} for f in nec.per_fold]
    suf = [f["sufficiency"] for f in public]
    details = {
        "decision": nec.decision.to_dict(), "message": nec.decision.reason,
        "sesoi": nec.sesoi, "effect_measure": EFFECT_MEASURE, "family": nec.family,
        "correction": FAMILY_TEXT, "folds": public,
        "increase_rare": float(np.mean([f["increase_rare"] for f in public])),
        "increase_common": float(np.mean([f["increase_common"] for f in public])),
        "random_increase_rare": float(np.mean([f["necessity"]["null_mean"] for f in public])),
        "percentile": float(np.mean([f["necessity"]["percentile"] for f in public])),
        "difference": {"estimate": nec.family[1]["estimate"], "p_max": nec.family[1]["p_max"],
                       "ci_low": nec.family[1]["ci_low"], "ci_high": nec.family[1]["ci_high"]},
        "sufficiency": {"estimate": float(np.mean([s["estimate"] for s in suf])),
                        "p_max": max(s["p"] for s in suf),
                        "ci_low": min(s["ci_low"] for s in suf),
                        "ci_high": max(s["ci_high"] for s in suf),
                        "recovered_share": float(np.mean([s["recovered_share"] for s in suf])),
                        "estimate_common": float(np.mean([s["estimate_common"] for s in suf]))},
        "matched": ({"estimate": float(np.mean([f["matched"]["estimate"] for f in public])),
                     "p_max": max(f["matched"]["p"] for f in public),
                     "max_abs_smd": max(f["matched"]["balance"]["max_abs_smd"]
                                        for f in public)}
                    if all("matched" in f for f in public) else None),
        "crossfit": {"unit": "rows", "k_by_fold": [f["k"] for f in public],
                     "groups": [fd.group.tolist() for fd in nec.folds]},
        "settings": nec.settings,
        "ci_method": (f"union of the two folds' {100 * (1 - 2 * nec.alpha):.0f}% t intervals "
                      "from the row-bootstrap s.e. (test rows resampled, random groups fixed; "
                      "t with test rows - 1 df)"),
    }
    if power is not None:
        details["own_power"] = power.to_dict()
    if shared_bootstrap_seed() is not None:  # paired across checkpoints (emergence)
        details["effect_replicates"] = replicate_list(np.mean(
            [f["_boot"] for f in nec.per_fold], axis=0))
        details["effect_replicates_how"] = (
            "replicate b = mean over the two folds of the rare-position excess increase over "
            "the random groups' mean in fold f's row-bootstrap replicate b")
    return TestResult(name="claim6_necessity", statistic=details["increase_rare"],
                      p_value=head["p_max"], effect=head["estimate"], ci_low=head["ci_low"],
                      ci_high=head["ci_high"], verdict=nec.decision.verdict,
                      effect_name=EFFECT_NAME, alpha=nec.alpha, details=details)


def plot_necessity(nec: Necessity, path: str | Path, *, model: str = "", setting: str = "",
                   verdict: str = "") -> Path:
    """Per fold: the random (and matched) groups' mean rare-position loss increase with the
    plateau group's; the rare-minus-common difference; the restored loss (sufficiency)."""
    from harness.analyses.figio import plt, save_figure

    n = len(nec.folds)
    fig, axes = plt.subplots(3, n, figsize=(5 * n, 8.4), squeeze=False)
    for j, (fd, f) in enumerate(zip(nec.folds, nec.per_fold)):
        R = 1 + fd.n_random
        rand_c = fd.inc_c[1:R].mean(1) if fd.inc_c.shape[1] else np.zeros(R - 1)
        panels = (
            (fd.inc_r[1:R].mean(1), fd.inc_r[R:].mean(1), f["necessity"]["observed"],
             "mean CE increase at rare positions (nats), group ablated"),
            (fd.inc_r[1:R].mean(1) - rand_c, None, f["difference"]["observed"],
             "increase at rare minus at common positions (nats)"),
            (fd.rest_r[1:].mean(1), None, f["sufficiency"]["restored_loss"],
             "CE at rare positions, only the group restored (nats)"))
        for ax, (rand, matched, obs, label) in zip(axes[:, j], panels):
            lo = min(rand.min(), obs, matched.min() if matched is not None and matched.size
                     else obs)
            hi = max(rand.max(), obs, matched.max() if matched is not None and matched.size
                     else obs)
            bins = np.linspace(lo, hi if hi > lo else lo + 1e-9, 40)
            ax.hist(rand, bins=bins, alpha=0.6, density=True,
                    label=f"random groups ({rand.size})")
            if matched is not None and matched.size:
                ax.hist(matched, bins=bins, histtype="step", lw=1.5, density=True,
                        label=f"matched on importance ({matched.size})")
            ax.axvline(obs, color="k", lw=2, label=f"plateau group {obs:.4g}")
            ax.set_xlabel(label, fontsize=8)
            ax.legend(fontsize=7)
        axes[0, j].set_title(f"fold {fd.name} (k = {fd.group.size}, {fd.n_test_rows} test rows, "
                             f"{fd.row_r.size} rare / {fd.row_c.size} common positions)",
                             fontsize=9)
    fig.suptitle(f"{model} {setting}: necessity and sufficiency - {verdict}", fontsize=10)
    return save_figure(fig, path)
