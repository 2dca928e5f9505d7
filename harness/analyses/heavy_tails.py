"""Claim 5: heavy-tailed specialist weights (HT-SR; P2/P3: the plateau group's weight spectrum
has a lower power-law alpha than random groups').

Why these choices:
- Spectrum (ESD) = eigenvalues of W W^T of the group's rows of the final-layer MLP weights
  (k x d_model), for the input rows (what each neuron reads: GPT-2 c_fc, NeoX dense_h_to_4h,
  Llama gate_proj - the gate, because its pre-activation is the one that passes the
  nonlinearity, as W_in's does in a GELU MLP; up_proj only rescales it) and the output rows
  (facade.W_out: what each neuron writes). The authors' code (analysis/htsr.py) used the input
  rows (dense_h_to_4h) only, and the row-standardised correlation matrix of them; both rows
  are reported here.
- alpha is the density exponent p(lambda) ~ lambda^-alpha (WeightWatcher's convention, 2-4
  "heavy-tailed" in HT-SR), by two estimators: Hill on the top 10% (the authors' estimator;
  theirs printed alpha - 1) and Clauset's maximum likelihood with xmin chosen by the KS
  distance (tail >= MIN_TAIL eigenvalues). Both are scale-free: alpha does not see the norm.
- Nulls, per cross-fit fold's group (claim 2's selection; weights do not depend on rows, the
  selection does): >= 1,000 random groups matched member by member on input- and output-row
  norm (a plateau neuron is picked for its influence, which grows with its output norm, and
  norm heterogeneity alone spreads a spectrum: an unmatched null would read 'chosen for large
  rows' as 'heavy-tailed'); unmatched random groups (the authors' comparison) reported. The
  control: groups made by the same selection on common positions.
- Resampling unit: neurons, not positions (positions do not enter weights). The s.e. of the
  group's alpha is a bootstrap over its members (a member drawn c times weights its row by
  sqrt(c): the spectrum of the weighted Gram); order-statistic estimators bootstrap poorly,
  so the interval is approximate; the test itself is the exact empirical p.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.analyses.clustering import (FOLD_KEYS, MAX_SMD, N_CANDIDATES, CrossFit, _t_quantile,
                                         matched_groups, random_groups)
from harness.errors import BadInputError
from harness.stats.empirical import empirical_p
from harness.stats.result import TestResult

PAPER = {"alpha": "lower for specialists than for random groups (P2/P3, no number given)",
         "source": "P2/P3 HT-SR weight analysis; authors' code: Hill on the top 10% of the "
                   "eigenvalues of the correlation matrix of dense_h_to_4h (input) rows"}
MATRICES = ("input", "output")
ESTIMATORS = ("mle", "hill")
MEASURES = tuple((m, e) for m in MATRICES for e in ESTIMATORS)   # input-mle is the headline
HILL_SHARE = 0.10
MIN_TAIL = 3      # eigenvalues an ML power-law tail needs
MIN_K = 10        # below it the top-10% Hill has no tail: inconclusive (validity gate)
ALPHA_CAP = 50.0  # a flat top (lambda_1 ~ lambda_2) gives alpha -> inf; capped, ranks kept
PLANT_FLOOR = 0.05  # the power plant's lowest alpha - 1 (a drop to alpha <= 1 is no law)
NORM_NAMES = ("input_norm", "output_norm")
EFFECT_NAME = "alpha reduction vs norm-matched null (input rows, ML fit, cross-fitted)"
EFFECT_MEASURE = ("alpha = density exponent of a power law fitted (ML, xmin by KS) to the "
                  "eigenvalues of W W^T, W = the group's k input rows of the final-layer MLP; "
                  "effect = mean alpha of norm-matched random groups minus the group's, "
                  "averaged over the two cross-fit folds (alpha units; positive = heavier "
                  "tail)")
FAMILY_TEXT = ("Holm over {input, output rows} x {ML, Hill}: each measure's p is the larger "
               "of its two folds' one-sided p vs the norm-matched null (IUT over folds); "
               "'supported' needs the smallest Holm-adjusted p <= alpha (Holm's first step: "
               "4 x min p) and the selection control on that measure in both folds; "
               "'refuted' needs every measure's upper (1 - 2 alpha) bound below the SESOI")


# ---------------------------------------------------------------- pure maths

def esd(w: np.ndarray) -> np.ndarray:
    """Eigenvalues of W W^T, descending (= squared singular values; min(k, d) of them)."""
    return np.linalg.svd(np.asarray(w, dtype=np.float64), compute_uv=False) ** 2


def group_spectra(w: np.ndarray, groups: np.ndarray, chunk: int = 256) -> np.ndarray:
    """[G, k] descending eigenvalues of W[g] W[g]^T for each group g (k <= d)."""
    groups = np.atleast_2d(np.asarray(groups, dtype=np.int64))
    w = np.asarray(w, dtype=np.float64)
    out = np.empty(groups.shape, dtype=np.float64)
    for s in range(0, len(groups), chunk):
        wg = w[groups[s:s + chunk]]
        out[s:s + chunk] = np.linalg.eigvalsh(wg @ wg.transpose(0, 2, 1))[:, ::-1]
    return np.clip(out, 0.0, None)


def hill_alpha(ev: np.ndarray, share: float = HILL_SHARE) -> np.ndarray:
    """Hill estimate of the density exponent from the top max(1, share x n) of each row of
    descending eigenvalues: 1 + j / sum_{i<j} ln(l_i / l_j)."""
    ev = np.atleast_2d(np.asarray(ev, dtype=np.float64))
    n = ev.shape[1]
    j = min(max(1, int(share * n)), n - 1)
    if j < 1:
        raise BadInputError("the Hill estimator needs at least 2 eigenvalues")
    s = np.log(np.maximum(ev[:, :j], 1e-300)).sum(1) - j * np.log(np.maximum(ev[:, j], 1e-300))
    return np.minimum(1.0 + j / np.maximum(s, j / (ALPHA_CAP - 1.0)), ALPHA_CAP)


def mle_alpha(ev: np.ndarray, min_tail: int = MIN_TAIL, return_xmin: bool = False):
    """Clauset-Shalizi-Newman ML fit per row: for every candidate xmin (an eigenvalue leaving
    >= min_tail values in the tail) alpha = 1 + n_t / sum ln(x / xmin); xmin minimises the KS
    distance between the tail's empirical CDF and the fitted one."""
    ev = np.atleast_2d(np.asarray(ev, dtype=np.float64))
    x = np.sort(np.maximum(ev, 1e-300), axis=1)          # ascending
    g, n = x.shape
    if n < min_tail + 1:
        raise BadInputError(f"an ML power-law fit needs > {min_tail} eigenvalues, got {n}")
    best_d = np.full(g, np.inf)
    best_a = np.full(g, np.nan)
    best_x = np.full(g, np.nan)
    logx = np.log(x)
    for j in range(0, n - min_tail + 1):
        tail = logx[:, j:] - logx[:, j:j + 1]                # ln(x / xmin) >= 0
        nt = n - j
        a = 1.0 + nt / np.maximum(tail.sum(1), nt / (ALPHA_CAP - 1.0))
        a = np.minimum(a, ALPHA_CAP)
        cdf = 1.0 - np.exp((1.0 - a)[:, None] * tail)
        i = np.arange(nt)
        d = np.maximum(np.abs(cdf - i / nt), np.abs(cdf - (i + 1) / nt)).max(1)
        better = (d < best_d - 1e-12) & (x[:, j] > 1e-12 * x[:, -1])  # zeros: rank < k
        best_d = np.where(better, d, best_d)
        best_a = np.where(better, a, best_a)
        best_x = np.where(better, x[:, j], best_x)
    return (best_a, best_x, best_d) if return_xmin else best_a


def alphas(ev: np.ndarray, estimator: str) -> np.ndarray:
    if estimator == "mle":
        return mle_alpha(ev)
    if estimator == "hill":
        return hill_alpha(ev)
    raise BadInputError(f"unknown estimator {estimator!r}; use one of {ESTIMATORS}")


def member_bootstrap(w: np.ndarray, group: np.ndarray, n_boot: int, rng: np.random.Generator
                     ) -> dict[str, np.ndarray]:
    """{estimator: [n_boot]} alpha of the group resampled over its members: counts c drawn
    multinomially, the spectrum of diag(sqrt c) G diag(sqrt c) (G = W_g W_g^T) - a member
    drawn twice weighs its row by sqrt 2, one not drawn leaves a zero eigenvalue, which the
    fits ignore (Hill keeps the group's top-10% count)."""
    wg = np.asarray(w, dtype=np.float64)[np.asarray(group)]
    gram = wg @ wg.T
    k = len(group)
    r = np.sqrt(rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot).astype(np.float64))
    ev = np.clip(np.linalg.eigvalsh(gram[None] * r[:, :, None] * r[:, None, :]), 0, None)
    ev = ev[:, ::-1]
    return {e: alphas(ev, e) for e in ESTIMATORS}


def power_plant(wg: np.ndarray, gamma: float) -> np.ndarray:
    """The group's rows with singular values s -> s^gamma, rescaled to the same Frobenius
    norm: every eigenvalue goes to lambda^gamma (x const), so a power-law tail with density
    exponent alpha gets 1 + (alpha - 1) / gamma - exactly, for Hill and for the KS-xmin ML fit
    (both are scale-free and the KS distance is invariant under the map)."""
    u, s, vt = np.linalg.svd(np.asarray(wg, dtype=np.float64), full_matrices=False)
    pos = s > 1e-300 * max(s[0], 1e-300)
    s2 = np.zeros_like(s)
    s2[pos] = np.exp(gamma * (np.log(s[pos]) - np.log(s[0])))   # in (0, 1]: no overflow
    s2 *= np.sqrt((s ** 2).sum() / max((s2 ** 2).sum(), 1e-300))
    return (u * s2) @ vt


def gamma_for(alpha_now: float, drop: float) -> float:
    """The power plant's gamma that lowers alpha by `drop` (alpha - 1 shrinks by 1/gamma)."""
    if drop <= 0:
        return 1.0
    rest = max(alpha_now - 1.0 - drop, PLANT_FLOOR)  # alpha cannot reach 1: capped there
    return float((alpha_now - 1.0) / rest) if alpha_now - 1.0 > rest else 1.0


# ---------------------------------------------------------------- the model's weights

# HF model_type family -> (module path of the last MLP's input projection, stored transposed?)
_IN_PATH = {"gpt2": ("transformer.h.{L}.mlp.c_fc", True),       # Conv1D [d_model, d_mlp]
            "neox": ("gpt_neox.layers.{L}.mlp.dense_h_to_4h", False),
            "llama": ("model.layers.{L}.mlp.gate_proj", False),
            "gemma": ("model.layers.{L}.mlp.gate_proj", False)}  # GeGLU: gate as for Llama


def mlp_rows(facade) -> dict[str, np.ndarray]:
    """{'input': [d_mlp, d_model], 'output': [d_mlp, d_model]} float64 rows of the final-layer
    MLP: row j is what neuron j reads (gate for Llama) / writes (facade.W_out)."""
    path, transposed = _IN_PATH[facade.family]
    weight = facade.hf_model.get_submodule(path.format(L=facade.n_layers - 1)).weight.detach()
    w_in = (weight.T if transposed else weight).double().cpu().numpy()
    w_out = facade.W_out.double().cpu().numpy()
    if w_in.shape != w_out.shape:
        raise BadInputError(f"input rows {w_in.shape} and output rows {w_out.shape} differ")
    return {"input": w_in, "output": w_out}


# ---------------------------------------------------------------- one fold's group

def _alpha_table(weights: dict[str, np.ndarray], groups: np.ndarray) -> dict[str, np.ndarray]:
    """{'input-mle': [G], ...} for groups [G, k]."""
    out = {}
    for mat in MATRICES:
        ev = group_spectra(weights[mat], groups)
        for e in ESTIMATORS:
            out[f"{mat}-{e}"] = alphas(ev, e)
    return out


def norm_stats(weights: dict[str, np.ndarray]) -> np.ndarray:
    """[m, 2] log row norms (input, output): what the matched null matches."""
    return np.column_stack([np.log(np.maximum(np.linalg.norm(weights[m], axis=1), 1e-300))
                            for m in MATRICES])


def norm_matched(weights: dict[str, np.ndarray], group: np.ndarray, n: int,
                 rng: np.random.Generator, n_cand: int = N_CANDIDATES,
                 stats_: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """clustering.matched_groups on (input, output) row norm, balance relabelled."""
    stats_ = norm_stats(weights) if stats_ is None else stats_
    groups, bal = matched_groups(stats_, group, n, rng, n_cand)
    smd = list(bal["smd"].values())
    bal["smd"] = dict(zip(NORM_NAMES, smd))
    bal["group_mean"] = dict(zip(NORM_NAMES, stats_[group].mean(0).tolist()))
    bal["matched_mean"] = dict(zip(NORM_NAMES, stats_[groups].reshape(-1, 2).mean(0).tolist()))
    return groups, bal


def _compare(obs: float, null: np.ndarray) -> dict:
    sd = float(np.std(null, ddof=1))
    return {"estimate": float(np.mean(null)) - obs, "p": empirical_p(obs, null, "less"),
            "z": (obs - float(np.mean(null))) / sd if sd > 0 else float("nan"),
            "percentile": float(np.mean(null < obs) + 0.5 * np.mean(null == obs)),
            "null_mean": float(np.mean(null)), "null_sd": sd, "n": int(null.size)}


def fold_tails(weights: dict[str, np.ndarray], group: np.ndarray, selection: np.ndarray,
               rng: np.random.Generator, *, n_matched: int, n_boot: int, n_random: int = 0,
               nulls: dict[str, dict] | None = None, stats_: np.ndarray | None = None,
               n_cand: int = N_CANDIDATES) -> dict:
    """The group's alpha (4 measures) against its norm-matched null, the selection null and
    (n_random > 0) unmatched random groups; `nulls` gives precomputed null alpha tables."""
    group = np.asarray(group, dtype=np.int64)
    obs = {key: float(v[0]) for key, v in _alpha_table(weights, group[None]).items()}
    out: dict[str, Any] = {"k": int(group.size), "alpha": obs, "group": group.tolist()}
    nulls = dict(nulls or {})
    if "matched" not in nulls:
        matched, out["balance"] = norm_matched(weights, group, n_matched, rng, n_cand, stats_)
        nulls["matched"] = _alpha_table(weights, matched)
    if "selection" not in nulls:
        nulls["selection"] = _alpha_table(weights, selection)
    if n_random and "random" not in nulls:
        nulls["random"] = _alpha_table(weights, random_groups(len(weights["input"]), group,
                                                              n_random, rng))
    boot = {mat: member_bootstrap(weights[mat], group, n_boot, rng) for mat in MATRICES}
    out["se"] = {f"{m}-{e}": max(float(np.std(boot[m][e], ddof=1)), 1e-9)
                 for m in MATRICES for e in ESTIMATORS}
    out["_boot"] = {f"{m}-{e}": boot[m][e] for m in MATRICES for e in ESTIMATORS}
    for name, table in nulls.items():
        out[name] = {key: _compare(obs[key], table[key]) for key in obs}
    out["_nulls"] = nulls
    return out


# ---------------------------------------------------------------- both folds: the verdict

@dataclass
class HeavyTails:
    """Everything claim 5 measured (arrays kept for the figure and own-data power)."""

    cf: CrossFit
    weights: dict[str, np.ndarray]
    per_fold: list[dict]
    family: list[dict]
    layer: dict
    decision: Any
    sesoi: float
    alpha: float
    settings: dict

    @property
    def headline(self) -> dict:
        return self.family[0]


def combine(per_fold: list[dict], sesoi: float, alpha: float) -> list[dict]:
    """One row per measure (MEASURES order): estimate = fold mean vs the matched null, IUT
    p = the larger fold p, Holm-adjusted over the four, the union of the folds' (1 - 2 alpha)
    t intervals (df = k - 1: the resampling unit is the member neuron), and the selection
    control's p."""
    rows = []
    for mat, est in MEASURES:
        key = f"{mat}-{est}"
        e = [float(f["matched"][key]["estimate"]) for f in per_fold]
        ps = [float(f["matched"][key]["p"]) for f in per_fold]
        se = [float(f["se"][key]) for f in per_fold]
        tq = [_t_quantile(1 - alpha, max(int(f["k"]) - 1, 1)) for f in per_fold]
        sel = [float(f["selection"][key]["p"]) for f in per_fold]
        hi = max(x + t * s for x, s, t in zip(e, se, tq))
        rows.append({"measure": key, "matrix": mat, "estimator": est,
                     "estimate": float(np.mean(e)), "estimate_by_fold": e, "p_by_fold": ps,
                     "p_max": max(ps), "se_by_fold": se,
                     "ci_low": min(x - t * s for x, s, t in zip(e, se, tq)), "ci_high": hi,
                     "upper_below_sesoi": bool(hi < sesoi),
                     "alpha_group": float(np.mean([f["alpha"][key] for f in per_fold])),
                     "alpha_matched": float(np.mean([f["matched"][key]["null_mean"]
                                                     for f in per_fold])),
                     "z_by_fold": [f["matched"][key]["z"] for f in per_fold],
                     "selection_estimate": float(np.mean([f["selection"][key]["estimate"]
                                                          for f in per_fold])),
                     "selection_p_by_fold": sel, "selection_p_max": max(sel)})
    order = np.argsort([r["p_max"] for r in rows], kind="stable")
    running, n = 0.0, len(rows)
    for rank, i in enumerate(order):  # Holm step-down adjusted p
        running = max(running, min(1.0, (n - rank) * rows[i]["p_max"]))
        rows[i]["p_holm"] = running
        rows[i]["significant"] = bool(running <= alpha)
    return rows


def lead(family: list[dict]) -> dict:
    """The measure Holm's first step tests (smallest p; MEASURES order breaks ties)."""
    return min(family, key=lambda r: (r["p_holm"], MEASURES.index((r["matrix"],
                                                                    r["estimator"]))))


def decide(family: list[dict], per_fold: list[dict], sesoi: float, alpha: float):
    """decide_exists on the Holm family: p = the lead measure's Holm p, upper = the largest
    upper bound of the four; the selection control on the lead measure; validity: k >= MIN_K
    and the norm-matched null balanced in both folds."""
    from harness.verdicts import Gate, decide_exists

    top = lead(family)
    k_min = min(int(f["k"]) for f in per_fold)
    smd = max((f["balance"]["max_abs_smd"] for f in per_fold if "balance" in f), default=0.0)
    validity = (
        Gate("group_size", bool(k_min >= MIN_K), float(k_min), float(MIN_K),
             f"group of {k_min} neurons: fewer than {MIN_K} eigenvalues, the top-10% Hill "
             "estimate rests on no tail and the ML fit on a handful"),
        Gate("matched_balance", bool(smd <= MAX_SMD), smd, MAX_SMD,
             f"norm-matched random groups are unbalanced (max |SMD| {smd:.2f} > {MAX_SMD:g})"))
    sel_p = ", ".join(f"{p:.3g}" for p in top["selection_p_by_fold"])
    controls = (Gate("beyond_selection", bool(top["selection_p_max"] <= alpha),
                     top["selection_p_max"], alpha,
                     f"{top['measure']}: not below groups made by the same selection on common "
                     f"positions (alpha reduction {top['selection_estimate']:+.3f}, p {sel_p}) "
                     "- heavy tails of any top-influence group, not of the plateau"),)
    return decide_exists(p_value=top["p_holm"], alpha=alpha,
                         upper=max(r["ci_high"] for r in family), sesoi=sesoi,
                         validity=validity, controls=controls)


def layer_fits(weights: dict[str, np.ndarray]) -> dict:
    """The whole final-layer W_in / W_out ESD fits (reported: the layer's own HT-SR alpha)."""
    out = {}
    for mat in MATRICES:
        ev = esd(weights[mat])[None]
        a, xmin, ks = mle_alpha(ev, return_xmin=True)
        out[mat] = {"mle": float(a[0]), "hill": float(hill_alpha(ev)[0]),
                    "xmin": float(xmin[0]), "ks": float(ks[0]),
                    "n_tail": int((ev[0] >= xmin[0]).sum()), "n_eigenvalues": int(ev.shape[1])}
    return out


def heavy_tails_analysis(cf: CrossFit, weights: dict[str, np.ndarray], *, sesoi: float,
                         n_matched: int = 1000, n_random: int = 1000, n_boot: int = 200,
                         seed: int = 0) -> HeavyTails:
    """Claim 5's verdict on the groups (and selection nulls) of a claim-2 cross-fit."""
    if n_matched < 2 or n_boot < 2:
        raise BadInputError("n_matched and n_boot must be >= 2")
    rng = np.random.default_rng([seed, 55])
    stats_ = norm_stats(weights)
    per_fold = []
    for fold in cf.folds:
        st = fold_tails(weights, fold.group, fold.selection, rng, n_matched=n_matched,
                        n_boot=n_boot, n_random=n_random, stats_=stats_)
        st.update(fold=fold.name, n_selection=int(len(fold.selection)))
        per_fold.append(st)
    family = combine(per_fold, sesoi, cf.alpha)
    decision = decide(family, per_fold, sesoi, cf.alpha)
    settings = {"n_matched": n_matched, "n_random": n_random, "n_boot": n_boot, "seed": seed,
                "n_selection": int(len(cf.folds[0].selection)), "n_cand": N_CANDIDATES,
                "hill_share": HILL_SHARE, "min_tail": MIN_TAIL, "min_k": MIN_K}
    return HeavyTails(cf, weights, per_fold, family, layer_fits(weights), decision, sesoi,
                      cf.alpha, settings)


# ---------------------------------------------------------------- own-data power

def own_power(ht: HeavyTails, *, reps: int, seed: int = 0,
              factors: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0), n_matched: int = 200,
              n_boot: int = 50):
    """Power at the SESOI, MDE and false-positive rate of the verdict on this run's own data.

    plant: per fold, the group's REAL input and output rows get singular values s -> s^gamma
    (power_plant: Frobenius norm kept), gamma per matrix such that its ML alpha drops by the
    effect (exact, see power_plant); fresh norm-matched groups are drawn on the real norms
    and the selection null is rescored with the planted rows. null: a selection-null group
    in the group's place vs fresh matched groups and the other selection draws. The alpha
    shift is deterministic: what varies between replicates is the null draw and the
    bootstrap - the power says where the planted alpha falls in this layer's null spread."""
    from harness.stats.own_power import own_data_power

    stats_ = norm_stats(ht.weights)

    def decide_state(state: dict) -> str:
        per = [fold_tails(kw["weights"], kw["group"], kw["selection"], state["rng"],
                          n_matched=n_matched, n_boot=n_boot, stats_=stats_)
               for kw in state["folds"]]
        return decide(combine(per, ht.sesoi, ht.alpha), per, ht.sesoi, ht.alpha).verdict

    def plant(rng: np.random.Generator, effect: float) -> dict:
        folds = []
        for fold, st in zip(ht.cf.folds, ht.per_fold):
            w = {}
            for mat in MATRICES:
                g = fold.group
                gamma = gamma_for(st["alpha"][f"{mat}-mle"], effect)
                w[mat] = ht.weights[mat].copy()
                w[mat][g] = power_plant(ht.weights[mat][g], gamma)
            folds.append({"weights": w, "group": fold.group, "selection": fold.selection})
        return {"rng": rng, "folds": folds}

    def null(rng: np.random.Generator) -> dict:
        folds = []
        for fold in ht.cf.folds:
            b = int(rng.integers(len(fold.selection)))
            others = np.delete(np.arange(len(fold.selection)), b)
            folds.append({"weights": ht.weights, "group": fold.selection[b],
                          "selection": fold.selection[others]})
        return {"rng": rng, "folds": folds}

    how = (f"plant: the group's real input and output rows, singular values s -> s^gamma "
           f"(Frobenius norm kept; alpha - 1 shrinks by 1/gamma exactly, gamma per matrix and "
           f"fold for an ML-alpha drop of the effect); base alpha reduction vs the matched "
           f"null {ht.headline['estimate']:+.3f}; null: a selection-null group in the group's "
           f"place vs {n_matched} fresh norm-matched groups and the other selection draws; "
           f"replicates use {n_matched} matched groups and {n_boot} bootstrap draws (verdict: "
           f"{ht.settings['n_matched']} / {ht.settings['n_boot']})")
    return own_data_power(decide_state, plant, null, sesoi=ht.sesoi, detect="supported",
                          reps=reps, factors=factors, seed=seed, how=how)


# ---------------------------------------------------------------- result and figure

def heavy_tails_result(ht: HeavyTails, power=None) -> TestResult:
    """Claim 5's TestResult: effect = input-row ML alpha reduction vs the norm-matched null
    (fold mean) with the union of the folds' (1 - 2 alpha) intervals; p = the Holm-adjusted p
    of the family's lead measure (the p the verdict uses)."""
    head, top = ht.headline, lead(ht.family)
    public = [{k: v for k, v in f.items() if not k.startswith("_")} for f in ht.per_fold]
    mean_of = lambda name, key: float(np.mean([f[name][key]["estimate"]  # noqa: E731
                                               for f in public]))
    details = {
        "decision": ht.decision.to_dict(), "message": ht.decision.reason,
        "sesoi": ht.sesoi, "effect_measure": EFFECT_MEASURE, "family": ht.family,
        "correction": FAMILY_TEXT, "lead_measure": top["measure"], "folds": public,
        "alpha_group": {f"{m}-{e}": float(np.mean([f["alpha"][f"{m}-{e}"] for f in public]))
                        for m, e in MEASURES},
        "alpha_matched": {r["measure"]: r["alpha_matched"] for r in ht.family},
        "layer": ht.layer,
        "alpha_input_hill": float(np.mean([f["alpha"]["input-hill"] for f in public])),
        "matched_alpha_input_hill": ht.family[1]["alpha_matched"],   # the authors' measure
        "random": {f"{m}-{e}": {"estimate": mean_of("random", f"{m}-{e}"),
                                "p_max": max(f["random"][f"{m}-{e}"]["p"] for f in public)}
                   for m, e in MEASURES} if all("random" in f for f in public) else None,
        "crossfit": {"unit": "rows (selection); neurons (weights' bootstrap)",
                     "halves": {"A": ht.cf.halves[0].tolist(), "B": ht.cf.halves[1].tolist()},
                     "k_by_fold": [f["k"] for f in public]},
        "weights": {"input": "final-layer MLP input rows (GPT-2 c_fc, NeoX dense_h_to_4h, "
                             "Llama gate_proj)", "output": "facade.W_out rows",
                    "authors_used": "input (dense_h_to_4h)"},
        "settings": ht.settings, "paper": PAPER,
        "ci_method": (f"union of the two folds' {100 * (1 - 2 * ht.alpha):.0f}% t intervals "
                      "(df k - 1) from the member-neuron bootstrap s.e. of the group's alpha; "
                      "null means fixed (approximate: order statistics bootstrap poorly)"),
    }
    if power is not None:
        details["own_power"] = power.to_dict()
    return TestResult(name="claim5_heavy_tails", statistic=head["alpha_group"],
                      p_value=top["p_holm"], effect=head["estimate"], ci_low=head["ci_low"],
                      ci_high=head["ci_high"], verdict=ht.decision.verdict,
                      effect_name=EFFECT_NAME, alpha=ht.alpha, details=details)


def plot_tails(ht: HeavyTails, path: str | Path, *, model: str = "", setting: str = "",
               verdict: str = "") -> Path:
    """Per fold (rows) and matrix (columns): the norm-matched and selection nulls' ML alpha,
    the group's alpha and the whole layer's."""
    from harness.analyses.figio import plt, save_figure

    nf = len(ht.per_fold)
    fig, axes = plt.subplots(nf, 2, figsize=(10, 3.2 * nf), squeeze=False)
    for r, f in enumerate(ht.per_fold):
        for c, mat in enumerate(MATRICES):
            ax, key = axes[r][c], f"{mat}-mle"
            m, s = f["_nulls"]["matched"][key], f["_nulls"]["selection"][key]
            obs, lay = f["alpha"][key], ht.layer[mat]["mle"]
            lo, hi = np.percentile(np.concatenate([m, s, [obs]]), [0.5, 99.5])
            bins = np.linspace(min(lo, obs), max(hi, obs) + 1e-9, 40)
            ax.hist(np.clip(m, bins[0], bins[-1]), bins=bins, alpha=0.6, density=True,
                    label=f"norm-matched random ({m.size})")
            ax.hist(np.clip(s, bins[0], bins[-1]), bins=bins, histtype="step", density=True,
                    lw=1.5, label=f"same selection, common ({s.size})")
            ax.axvline(obs, color="k", lw=2, label=f"plateau group {obs:.2f}")
            ax.axvline(lay, color="r", ls="--", lw=1, label=f"whole layer {lay:.2f}")
            ax.set_xlabel(f"{mat} rows: power-law alpha (ML, xmin by KS)")
            ax.set_title(f"fold {f['fold']} (k = {f['k']})", fontsize=9)
            ax.legend(fontsize=7)
    fig.suptitle(f"{model} {setting}: heavy-tailed weights - {verdict}", fontsize=10)
    return save_figure(fig, path)
