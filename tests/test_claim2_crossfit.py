"""Claim 2's verdict end to end on synthetic runs (activations AND influences, so the selection
is exercised): cross-fitting, the selection and matched nulls, the four-verdict decision, the
direction of the headline effect and own-data power. Small sizes: seconds."""

import numpy as np
import pytest

from harness.analyses.clustering import (DEFAULT_SESOI, crossfit_analysis, crossfit_own_power,
                                         crossfit_result)
from harness.analyses.regimes import top_neurons
from harness.analyses.synthetic_clustering import synthetic_run

SHAPE = dict(n_rows=40, positions=10, m=400, k=10)
SIZES = dict(n_selection=200, n_matched=100, n_random=99, n_boot=50, graph_stats=False)


def analyse(run, seed=0, **kw):
    return crossfit_analysis(run.acts, run.delta, run.row, run.rare, run.common,
                             lambda mask: top_neurons(run.delta, mask, run.plateau.size),
                             legacy=None, seed=seed, **{**SIZES, **kw})


def both(cf, null):
    return all(f[null]["p"] <= 0.05 for f in cf.per_fold)


def test_matching_and_selection_remove_the_selection_artefact():
    """Issue 13.4's planted case: top-influence groups of high-gain neurons are 'clustered'
    against unmatched random groups, not against the nulls the verdict uses."""
    runs = [synthetic_run(**SHAPE, kind="artefact", seed=s) for s in range(6)]
    cfs = [analyse(r, seed=s) for s, r in enumerate(runs)]
    assert sum(both(cf, "random") for cf in cfs) >= 3           # the artefact is there
    assert sum(both(cf, "matched") for cf in cfs) == 0           # matching removes it
    assert sum(both(cf, "selection") for cf in cfs) == 0         # so does the selection null
    assert all(cf.decision.verdict != "refuted" for cf in cfs)
    assert max(abs(cf.family[1]["estimate"]) for cf in cfs) < 0.05
    assert min(cf.per_fold[0]["random"]["estimate"] for cf in cfs) > 0.0


def test_planted_module_is_refuted_and_the_effect_grows_with_it():
    """Issue 20.6: a stronger planted module gives a larger headline effect with a
    non-degenerate interval; Q (kept in the details) is not the headline."""
    out = {}
    for eff in (0.0, 0.2, 0.4):
        run = synthetic_run(**SHAPE, kind="module" if eff else "plateau", effect=eff, seed=12)
        out[eff] = crossfit_result(analyse(run, seed=12, graph_stats=True))
    effects = [out[e].effect for e in (0.0, 0.2, 0.4)]
    assert effects[0] < effects[1] < effects[2]
    assert effects[2] - effects[0] == pytest.approx(0.4, abs=0.1)
    assert all(0.02 < r.ci_high - r.ci_low < 0.5 for r in out.values())
    assert out[0.4].verdict == "refuted" and out[0.0].verdict == "supported"
    fam = {r["null"]: r for r in out[0.4].details["family"]}
    assert fam["matched"]["estimate"] > 0.3 and fam["selection"]["p_max"] <= 0.05
    assert out[0.4].details["decision"]["gates"]["matched_balance"]["passed"]
    assert {"Q", "module_Q", "reported", "plateau_q", "random_q"} <= set(out[0.4].details)
    assert out[0.4].details["plateau_q"] == pytest.approx(out[0.4].details["Q"])
    assert out[0.4].details["Q"] < out[0.0].details["Q"] + 0.05  # Q does not rise with it


def test_results_say_which_rows_did_what():
    run = synthetic_run(**SHAPE, kind="plateau", seed=3)
    res = crossfit_result(analyse(run, seed=3))
    cf = res.details["crossfit"]
    a, b = cf["halves"]["A"], cf["halves"]["B"]
    assert sorted(a + b) == list(range(40)) and not set(a) & set(b)
    (f1, f2) = cf["folds"]
    assert (f1["fold"], f2["fold"]) == ("A->B", "B->A")
    assert len(f1["group"]) == len(f2["group"]) == 10
    assert f1["n_rare_select"] + f2["n_rare_select"] == int(run.rare.sum())
    assert f1["n_test_positions"] == f2["n_rare_select"]
    assert len(set(f1["group"]) & set(run.plateau.tolist())) >= 8  # the plateau is found
    assert res.details["decision"]["direction"] == "absent"
    assert res.verdict == "supported" and res.details["family"][0]["non_superior"]


def test_own_data_power_on_a_synthetic_run():
    run = synthetic_run(**SHAPE, kind="plateau", seed=5)
    cf = analyse(run, seed=5)
    op = crossfit_own_power(cf, reps=6, seed=0, n_matched=50, n_boot=30)
    assert op.detect == "refuted" and op.n_reps == 6 and op.sesoi == DEFAULT_SESOI
    assert op.fpr == 0.0 and op.verdicts_null.get("supported", 0) >= 3
    curve = [op.curve[k] for k in sorted(op.curve)]
    assert curve[-1] == 1.0 and curve[0] <= 0.5     # 4 x SESOI always found, 0.5 x rarely
    assert op.mde80 is not None and op.mde80 <= 0.4
    assert op.verdicts_at_sesoi.get("supported", 0) <= 1
    assert "copula_plant" in op.how


def test_too_little_data_is_a_user_error():
    from harness.errors import BadInputError

    run = synthetic_run(n_rows=3, positions=10, m=60, k=8, seed=0)
    with pytest.raises(BadInputError):
        analyse(run)
    with pytest.raises(BadInputError):
        crossfit_analysis(run.acts, run.delta, run.row[:-1], run.rare, run.common,
                          lambda mask: np.arange(8))


def test_null_figure_shows_the_selection_null_and_the_sesoi(tmp_path):
    from harness.analyses.clustering import clustering_analysis
    from harness.analyses.graphs import correlation_matrix, group_graph
    from harness.analyses.plots_clustering import (plot_community_map, plot_group_graph,
                                                   plot_nulls)

    run = synthetic_run(n_rows=30, positions=10, m=120, k=8, kind="module", effect=0.3, seed=2)
    cf = analyse(run, seed=2)
    a = clustering_analysis(run.acts[run.rare], run.row[run.rare], run.plateau, n_random=49,
                            n_shuffle=0, n_rotation=0, n_boot=10, n_leiden_check=0,
                            resolutions=(1.0,), seeds=(0,))
    w = group_graph(correlation_matrix(run.acts[run.rare]), run.plateau)
    paths = [plot_nulls(cf, tmp_path / "n.png"),
             plot_group_graph(w, a.group_labels, tmp_path / "g.png"),
             plot_community_map(a.layer_labels, a.group, tmp_path / "c.png")]
    assert all(p.stat().st_size > 5000 for p in paths)
