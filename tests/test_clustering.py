"""Claim-2 statistics and nulls on small synthetic layers."""

import numpy as np
import pytest

from harness.analyses.clustering import (concentration_entropy, index_locality,
                                         no_clustering_test, rotation_graphs, shuffled_graphs)
from harness.analyses.communities import louvain_dense
from harness.analyses.graphs import correlation_matrix, group_graph
from harness.analyses.synthetic_clustering import synthetic_layer
from harness.errors import BadInputError

FAST = dict(n_random=99, resolutions=(0.5, 1.0), seeds=(0, 1), n_shuffle=49, n_rotation=49,
            n_boot=30, n_leiden_check=10)


def test_planted_module_is_called_clustered_with_all_details():
    layer = synthetic_layer(strength=0.8, seed=3)
    res = no_clustering_test(layer.acts, layer.row, layer.group, **FAST)
    assert res.verdict == "not supported" and res.details["clustered"]
    mq = next(c for c in res.details["comparisons"] if c["metric"] == "module_Q")
    assert mq["z"] > 3 and mq["p_adj"] <= 0.05
    assert res.effect < 0  # the paper's own-subgraph Q drops for a cohesive module
    assert res.details["paper"]["Q_random"] == [0.04, 0.09]
    assert {c["null"] for c in res.details["comparisons"]} == {"random", "shuffle", "rotation"}
    assert len(res.details["sensitivity"]) == 2 and "leiden_Q" in res.details["leiden_check"]
    assert res.to_dict()["verdict"] == "not supported"


def test_null_group_is_not_called_clustered():
    layer = synthetic_layer(strength=0.0, seed=4)
    res = no_clustering_test(layer.acts, layer.row, layer.group, **FAST)
    assert not res.details["clustered"] and res.p_value > 0.05
    # the default 2-SD margin certifies this random group as typical ...
    assert res.verdict == "supported" and res.details["equivalent"]
    # ... a 1-SD margin cannot at this data size (bootstrap s.e. of z ~0.5): inconclusive
    strict = no_clustering_test(layer.acts, layer.row, layer.group, tost_margin=1.0, **FAST)
    assert strict.verdict == "not supported" and strict.details["inconclusive"]


def test_shuffle_keeps_weights_and_strengths_and_destroys_modules():
    layer = synthetic_layer(k=12, m=24, strength=1.0, seed=5)
    w = group_graph(correlation_matrix(layer.acts), np.arange(24))
    out = shuffled_graphs(w, 20, np.random.default_rng(0), strength_tol=0.1)
    iu = np.triu_indices(24, 1)
    np.testing.assert_allclose(np.sort(out[:, iu[0], iu[1]], axis=1),
                               np.tile(np.sort(w[iu]), (20, 1)))
    s0 = np.clip(w, 0, None).sum(1)
    assert np.max(np.abs(np.clip(out, 0, None).sum(2) - s0)) <= 0.1 * s0.mean() + 1e-9
    assert louvain_dense(out)[1].mean() < 0.8 * louvain_dense(w)[1]


def test_rotation_null_gives_valid_correlations():
    layer = synthetic_layer(seed=6)
    out = rotation_graphs(layer.acts, layer.group, 30, np.random.default_rng(0), dim=None)
    assert out.shape == (30, 10, 10) and np.all(np.abs(out) <= 1.0)
    np.testing.assert_allclose(out, np.swapaxes(out, 1, 2), atol=1e-12)


def test_concentration_entropy_and_locality():
    labels = np.array([0, 0, 0, 1, 1, 2])
    conc, ent = concentration_entropy(labels, np.array([[0, 1, 2], [0, 3, 5]]))
    np.testing.assert_allclose(conc, [1.0, 1 / 3])
    np.testing.assert_allclose(ent, [0.0, np.log(3)])
    assert index_locality(np.array([[1, 2, 4]]))[0] == pytest.approx(2.0)


def test_bad_input_is_a_user_error():
    layer = synthetic_layer(seed=0)
    with pytest.raises(BadInputError):
        no_clustering_test(layer.acts, layer.row[:-1], layer.group, **FAST)
    with pytest.raises(BadInputError):
        no_clustering_test(layer.acts, layer.row, np.arange(35), **FAST)


def test_plots_write_pngs(tmp_path):
    from harness.analyses.clustering import clustering_analysis
    from harness.analyses.plots_clustering import plot_community_map, plot_group_graph, plot_nulls

    layer = synthetic_layer(strength=0.8, seed=7)
    a = clustering_analysis(layer.acts, layer.row, layer.group, **FAST)
    w = group_graph(correlation_matrix(layer.acts), layer.group)
    paths = [plot_group_graph(w, a.group_labels, tmp_path / "g.png"),
             plot_community_map(a.layer_labels, a.group, tmp_path / "c.png"),
             plot_nulls(a, tmp_path / "n.png")]
    assert all(p.stat().st_size > 5000 for p in paths)
