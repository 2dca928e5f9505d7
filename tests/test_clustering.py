"""Claim-2 building blocks on small synthetic data: the reported graph statistics and nulls,
and the pieces of the cross-fitted verdict (contrast, planted views, bootstrap, matching,
selection null, row split, copula plant)."""

import numpy as np
import pytest

from harness.analyses.clustering import (CorrView, activation_stats, clustering_analysis,
                                         concentration_entropy, contrast_bootstrap,
                                         copula_plant, index_locality, matched_groups,
                                         plant_curve, plant_for, rotation_graphs,
                                         selection_null, shuffled_graphs, split_rows)
from harness.analyses.communities import louvain_dense
from harness.analyses.graphs import correlation_matrix, group_graph
from harness.analyses.regimes import top_neurons
from harness.analyses.synthetic_clustering import synthetic_run
from harness.errors import BadInputError

FAST = dict(n_random=99, resolutions=(0.5, 1.0), seeds=(0, 1), n_shuffle=49, n_rotation=49,
            n_boot=30, n_leiden_check=10)
SMALL = dict(n_rows=30, positions=10, m=80, k=8)


def _direct_contrast(corr, g):
    m, k = corr.shape[0], len(g)
    inside = corr[np.ix_(g, g)]
    within = (inside.sum() - k) / (k * (k - 1))
    rest = np.setdiff1d(np.arange(m), g)
    return within - corr[np.ix_(g, rest)].mean(), within


# ---------------------------------------------------------------- reported statistics

def test_reported_analysis_on_a_planted_module():
    run = synthetic_run(**SMALL, kind="module", effect=0.4, seed=3)
    a = clustering_analysis(run.acts[run.rare], run.row[run.rare], run.plateau, **FAST)
    mq = a.comparison("module_Q", "random")
    assert mq.z > 3 and mq.p_adj <= 0.05
    assert {c.null for c in a.comparisons} == {"random", "shuffle", "rotation"}
    assert len(a.extra["sensitivity"]) == 2 and "leiden_Q" in a.extra["leiden_check"]


def test_shuffle_keeps_weights_and_strengths_and_destroys_modules():
    run = synthetic_run(n_rows=40, positions=10, m=24, k=12, kind="module", effect=0.6, seed=5)
    w = group_graph(correlation_matrix(run.acts[run.rare]), np.arange(24))
    out = shuffled_graphs(w, 20, np.random.default_rng(0), strength_tol=0.1)
    iu = np.triu_indices(24, 1)
    np.testing.assert_allclose(np.sort(out[:, iu[0], iu[1]], axis=1),
                               np.tile(np.sort(w[iu]), (20, 1)))
    s0 = np.clip(w, 0, None).sum(1)
    assert np.max(np.abs(np.clip(out, 0, None).sum(2) - s0)) <= 0.1 * s0.mean() + 1e-9
    assert louvain_dense(out)[1].mean() < louvain_dense(w)[1]


def test_rotation_null_gives_valid_correlations():
    run = synthetic_run(**SMALL, seed=6)
    out = rotation_graphs(run.acts, run.plateau, 30, np.random.default_rng(0), dim=None)
    assert out.shape == (30, 8, 8) and np.all(np.abs(out) <= 1.0)
    np.testing.assert_allclose(out, np.swapaxes(out, 1, 2), atol=1e-12)


def test_concentration_entropy_and_locality():
    labels = np.array([0, 0, 0, 1, 1, 2])
    conc, ent = concentration_entropy(labels, np.array([[0, 1, 2], [0, 3, 5]]))
    np.testing.assert_allclose(conc, [1.0, 1 / 3])
    np.testing.assert_allclose(ent, [0.0, np.log(3)])
    assert index_locality(np.array([[1, 2, 4]]))[0] == pytest.approx(2.0)


def test_bad_input_is_a_user_error():
    run = synthetic_run(**SMALL, seed=0)
    with pytest.raises(BadInputError):
        clustering_analysis(run.acts, run.row[:-1], run.plateau, **FAST)
    with pytest.raises(BadInputError):
        clustering_analysis(run.acts, run.row, np.arange(3), **FAST)


# ---------------------------------------------------------------- the verdict's pieces

def test_contrast_matches_a_direct_computation():
    run = synthetic_run(**SMALL, seed=1)
    corr = correlation_matrix(run.acts[run.rare])
    view = CorrView(corr)
    groups = np.array([run.plateau, np.arange(8), np.arange(40, 48)])
    c, within, _ = view.contrast(groups)
    for g, cv, wv in zip(groups, c, within):
        want_c, want_w = _direct_contrast(corr, g)
        assert cv == pytest.approx(want_c, abs=1e-12) and wv == pytest.approx(want_w, abs=1e-12)


def test_planted_view_equals_recomputed_correlations():
    run = synthetic_run(**SMALL, seed=2)
    x = run.acts[run.rare].astype(np.float64)
    xc = x - x.mean(0)
    g = run.plateau
    xg = copula_plant(x[:, g], 1.0, np.random.default_rng(0).standard_normal(len(x)))
    view = CorrView(correlation_matrix(x)).planted(xc, xc.std(0), g, xg)
    x2 = x.copy()
    x2[:, g] = xg
    full = correlation_matrix(x2)
    other = np.array([g[0], g[1], 3, 5, 7, 60, 61, 62])  # straddles planted and other neurons
    np.testing.assert_allclose(view.block(other[None])[0],
                               group_graph(full, other), atol=1e-6)
    np.testing.assert_allclose(view.rowsum, full.sum(1), atol=1e-5)
    np.testing.assert_allclose(view.strength_outside(g)[g],
                               [(full[i].sum() - full[i, g].sum()) / (80 - 8) for i in g],
                               atol=1e-6)


def test_copula_plant_keeps_each_neurons_values_and_raises_the_contrast():
    run = synthetic_run(**SMALL, seed=4)
    x = run.acts[run.rare].astype(np.float64)
    xg = copula_plant(x[:, run.plateau], 2.0, np.random.default_rng(1).standard_normal(len(x)))
    np.testing.assert_array_equal(np.sort(xg, 0), np.sort(x[:, run.plateau], 0))
    np.testing.assert_allclose(activation_stats(xg), activation_stats(x[:, run.plateau]))
    xc = x - x.mean(0)
    view = CorrView(correlation_matrix(x))
    loads, rise = plant_curve(xc, xc.std(0), view, run.plateau, x[:, run.plateau],
                              np.random.default_rng(2))
    assert np.all(np.diff(rise) >= 0) and abs(rise[0]) < 1e-6 and rise[-1] > 0.4
    s = plant_for(0.2, loads, rise)
    assert 0 < s < loads[-1]
    got = np.mean([view.planted(xc, xc.std(0), run.plateau, copula_plant(
        x[:, run.plateau], s, np.random.default_rng(10 + i).standard_normal(len(x))))
        .contrast(run.plateau[None])[0][0] for i in range(20)]) - view.contrast(
        run.plateau[None])[0][0]
    assert got == pytest.approx(0.2, abs=0.03)


def test_bootstrap_at_unit_weights_is_the_contrast():
    run = synthetic_run(**SMALL, seed=5)
    x = run.acts[run.rare].astype(np.float64)
    xc = x - x.mean(0)
    sd = xc.std(0)
    g = run.plateau
    rest = np.setdiff1d(np.arange(80), g)
    u_rest = xc[:, rest] @ (1 / sd[rest])
    n_rows = np.unique(run.row[run.rare]).size
    c = contrast_bootstrap(xc[:, g], u_rest, run.row[run.rare], 80, 1, None,
                           weights=np.ones((1, n_rows)))
    want = CorrView(correlation_matrix(x)).contrast(g[None])[0][0]
    assert c[0] == pytest.approx(want, abs=1e-6)
    boot = contrast_bootstrap(xc[:, g], u_rest, run.row[run.rare], 80, 200,
                              np.random.default_rng(0))
    assert 0.005 < boot.std() < 0.1 and abs(boot.mean() - want) < 2 * boot.std()


def test_matched_groups_match_and_exclude_the_group():
    rng = np.random.default_rng(0)
    drive = rng.standard_normal((500, 1))         # mean, SD, active share move together
    st = np.column_stack([drive + 0.3 * rng.standard_normal((500, 3)),
                          rng.standard_normal(500)])
    group = np.argsort(-st[:, 1])[10:20]          # high-SD neurons, not the very top
    out, bal = matched_groups(st, group, 50, rng, n_cand=5)
    assert out.shape == (50, 10) and not np.isin(out, group).any()
    assert all(np.unique(r).size == 10 for r in out)
    assert bal["max_abs_smd"] < 0.25 and abs(bal["smd"]["sd"]) < 0.15
    naive = rng.choice(np.setdiff1d(np.arange(500), group), 500)
    assert st[out.ravel(), 1].mean() > st[naive, 1].mean() + 1.0  # matching moved the draws


def test_selection_null_repeats_the_selection_and_split_is_balanced():
    run = synthetic_run(**SMALL, kind="artefact", seed=7)
    rng = np.random.default_rng(0)
    a, b = split_rows(run.row, run.rare, rng)
    assert np.intersect1d(a, b).size == 0 and np.union1d(a, b).size == 30
    ra, rb = (int(run.rare[np.isin(run.row, h)].sum()) for h in (a, b))
    assert abs(ra - rb) <= 10  # at most one row's rare positions apart
    pool = np.flatnonzero(run.common & np.isin(run.row, a))
    groups = selection_null(run.delta, pool, ra, 8, "boost", 20, np.random.default_rng(1))
    assert groups.shape == (20, 8)
    # each draw is top_neurons on some ra common positions of half a
    mask = np.zeros(len(run.row), dtype=bool)
    rng2 = np.random.default_rng(1)
    sub = np.zeros(pool.size, dtype=bool)
    sub[rng2.choice(pool.size, ra, replace=False)] = True
    mask[pool[sub]] = True
    np.testing.assert_array_equal(groups[0], top_neurons(run.delta, mask, 8, "boost"))
    # high-gain neurons are picked: the selection artefact the null reproduces
    assert np.isin(groups, run.plateau).mean() > 0.25  # chance: 8 / 80
