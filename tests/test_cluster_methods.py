"""Claim 2's clustering-method family (harness.analyses.cluster_methods): the statistics on
known partitions, the BH family, and the family on synthetic runs - a planted module is found by the
graph methods and refutes the claim; a plateau that shares nothing refutes nothing."""

import numpy as np
import pytest

from harness.analyses import cluster_methods as cm
from harness.analyses.clustering import crossfit_analysis
from harness.analyses.regimes import top_neurons
from harness.analyses.synthetic_clustering import synthetic_run

SMALL_GRID = {"louvain": (1.0,), "leiden-modularity": (1.0,), "leiden-cpm": (0.05,),
              "spectral": (8,), "hierarchical": (8,)}


def test_coassignment_counts_pairs_in_one_community():
    labels = np.array([0, 0, 0, 1, 1, 2])
    got = cm.coassignment(labels, np.array([[0, 1, 2, 3], [0, 3, 5, 4], [0, 1, 3, 4]]))
    np.testing.assert_allclose(got, [3 / 6, 1 / 6, 2 / 6])


def test_silhouette_matches_the_definition():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 9))
    corr = np.corrcoef(x.T)
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 0])
    group = np.array([0, 2, 5])
    d = 1 - corr
    want = []
    for i in group:
        a = np.mean([d[i, j] for j in group if j != i])
        b = min(np.mean([d[i, j] for j in range(9) if labels[j] == c and j not in group])
                for c in range(3))
        want.append((b - a) / max(a, b))
    np.testing.assert_allclose(cm.silhouette(corr, labels, group[None])[0], np.mean(want))


def test_partitions_are_seeded_and_cover_the_grid():
    rng = np.random.default_rng(1)
    corr = np.corrcoef(rng.standard_normal((80, 60)).T)
    a, b = cm.partitions(corr, SMALL_GRID, 3), cm.partitions(corr, SMALL_GRID, 3)
    assert set(a) == {(m, v[0]) for m, v in SMALL_GRID.items()}
    for key in a:
        assert a[key].shape == (60,) and np.array_equal(a[key], b[key]), key


def _family(kind: str, effect: float = 0.0, seed: int = 0):
    run = synthetic_run(n_rows=40, positions=10, m=120, k=10, kind=kind, effect=effect,
                        seed=seed)
    cf = crossfit_analysis(run.acts, run.delta, run.row, run.rare, run.common,
                           lambda mask: top_neurons(run.delta, mask, 10, "boost"),
                           n_selection=100, n_matched=100, n_random=50, n_boot=50,
                           legacy=None, graph_stats=False, seed=seed)
    return cf, cm.method_family(cf, SMALL_GRID, n_boot=8, seed=seed)


def test_a_planted_module_is_found_by_the_graph_methods():
    cf, fam = _family("module", effect=0.4)
    rows = {r["method"]: r for r in fam.members}
    assert fam.decision.verdict == "refuted", fam.decision.reason
    for method in ("louvain", "leiden-modularity", "spectral"):
        assert rows[method]["finds_module"] and rows[method]["estimate"] > 0.3, rows[method]
        assert fam.per_method[method]["verdict"] == "refuted"
    assert rows["hierarchical"]["estimate"] > 0.1


@pytest.mark.parametrize("run_seed", [0, 1])
def test_a_plateau_without_a_module_is_not_refuted(run_seed):
    cf, fam = _family("plateau", seed=run_seed)
    assert fam.decision.verdict != "refuted", fam.decision.reason
    assert not any(r["finds_module"] for r in fam.members)
    assert all(abs(r["estimate"]) < 0.3 for r in fam.members[1:])
    assert all(r["q_bh"] >= r["p"] for r in fam.members)


@pytest.mark.tiny
def test_a_careless_coassignment_breaks_the_golden(monkeypatch):
    """Mutation: co-assignment counting self-pairs (counts^2 / k^2) - a careless formula edit -
    moves the pinned method numbers of the committed tiny-gpt2 golden out of tolerance (the
    unmutated family first reproduces them; the full case is checked by claims/)."""
    import json

    from harness import goldens
    from harness.claimkit import golden_path
    from harness.claimset import CI_SEED, ci_prepared, load_claims
    from harness.data.rarity import RaritySpec

    claim = load_claims()["no-clustering"]
    rarity = RaritySpec(q=50.0, which="target")
    prep = ci_prepared("tiny-gpt2")
    golden = json.loads(golden_path("no-clustering/plateau-boost", "tiny-gpt2", CI_SEED,
                                    rarity).read_text())
    paths = [p for p in golden["numbers"] if p.startswith("methods.")]
    assert len(paths) >= 5
    cf = claim.crossfit(prep, rarity, CI_SEED, legacy=False)

    def diffs():
        details = {"methods": claim.methods(cf, CI_SEED, claim.CI_POWER_REPS).members}
        return [p for p in paths if abs(goldens._number(goldens._get(details, p))
                                        - golden["numbers"][p]) > golden["tolerance"][p]]

    assert diffs() == []
    monkeypatch.setattr(cm, "coassignment", lambda labels, groups: (
        lambda c: (c ** 2).sum(1) / np.atleast_2d(groups).shape[1] ** 2)(
        np.stack([np.bincount(g, minlength=int(labels.max()) + 1)
                  for g in np.asarray(labels)[np.atleast_2d(groups)]]).astype(float)))
    assert diffs()


def test_the_report_renders_the_per_method_table():
    from harness.report.render import _detail_tables

    cf, fam = _family("plateau", seed=0)
    table = cm.methods_table(fam)
    rec = {"model": "m", "seed": 0, "settings": {},
           "result": {"details": {"methods_table": table}}}
    out = _detail_tables([rec])
    assert out.count("\n|") == 2 + len(cm.METHODS) + 1     # header rule + contrast + methods
    for method, v in fam.per_method.items():
        assert f"| {method}" in out and v["verdict"] in out
    assert _detail_tables([{"model": "m", "result": {"details": {}}}]) == ""
