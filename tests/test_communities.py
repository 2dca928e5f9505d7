"""Graphs and community detection: dense batched Louvain vs networkx/leidenalg, signed Q."""

import networkx as nx
import numpy as np
import pytest

from harness.analyses.communities import (leiden, louvain_dense, louvain_networkx, modularity,
                                          partition_summary)
from harness.analyses.graphs import correlation_matrix, group_graph, knn_edges


def _two_blocks(k=30, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((400, k))
    x[:, : k // 2] += rng.standard_normal((400, 1))
    x[:, k // 2:] += 0.8 * rng.standard_normal((400, 1))
    return group_graph(correlation_matrix(x.astype(np.float32)), np.arange(k))


def test_correlation_matches_numpy_and_constant_neuron_is_zero():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 6)).astype(np.float32)
    x[:, 3] = 2.0
    c = correlation_matrix(x)
    ref = np.corrcoef(np.delete(x, 3, axis=1).T)
    np.testing.assert_allclose(np.delete(np.delete(c, 3, 0), 3, 1), ref, atol=1e-6)
    assert np.all(c[3, [0, 1, 2, 4, 5]] == 0.0) and c[3, 3] == 1.0


def test_modularity_matches_networkx_and_gomez_weighting():
    w = _two_blocks()
    lab = louvain_dense(w)[0]
    g = nx.from_numpy_array(np.clip(w, 0, None))
    ref = nx.community.modularity(g, [set(np.flatnonzero(lab == c)) for c in np.unique(lab)])
    assert modularity(w, lab) == pytest.approx(ref, abs=1e-10)
    wp, wn = np.clip(w, 0, None), np.clip(-w, 0, None)
    qp, qn = modularity(wp, lab), modularity(wn, lab)
    expected = (wp.sum() * qp - wn.sum() * qn) / (wp.sum() + wn.sum())
    assert modularity(w, lab, signed=True) == pytest.approx(expected, abs=1e-10)


def test_dense_louvain_recovers_blocks_and_agrees_with_reference_algorithms():
    w = _two_blocks()
    lab, q = louvain_dense(w)
    assert len(set(lab[:15])) == 1 and len(set(lab[15:])) == 1 and lab[0] != lab[-1]
    assert q == pytest.approx(modularity(w, louvain_networkx(w)), abs=0.01)
    assert q == pytest.approx(modularity(w, leiden(w)), abs=0.01)
    _, qs = louvain_dense(w, signed=True)
    assert qs == pytest.approx(modularity(w, leiden(w, signed=True), signed=True), abs=0.01)


def test_batched_louvain_equals_single_runs():
    ws = np.stack([_two_blocks(12, s) for s in range(5)])
    _, q = louvain_dense(ws, resolution=1.5, seed=3)
    single = [louvain_dense(w, resolution=1.5, seed=3)[1] for w in ws]
    np.testing.assert_allclose(q, single, atol=1e-12)


def test_knn_edges_symmetric_union_and_summary():
    w = _two_blocks(20)
    i, j, v = knn_edges(w + np.eye(20), k=3)
    assert np.all(i < j) and len(set(zip(i, j))) == len(i) and len(i) >= 30
    np.testing.assert_allclose(v, w[i, j])
    s = partition_summary(w, louvain_dense(w)[0])
    assert s.n_communities == 2 and s.intra_density > 0.3 > s.inter_density
