"""Claim 2 - no spatial clustering: the plateau neurons do not form a module
(P1, claim 2; methods.md sections 6, 8).

Preregistration
- Group: the plateau neurons of the rare-token boost curve from claim 1 (fixed rank window,
  the paper's ln r < 3.5 scaled to the layer width); also the top-50 suppress neurons.
- Graph: Pearson correlation of final-layer activations over the rare positions, sign kept,
  complete graph on the group; whole-layer graph (k-nearest |r|) for concentration.
- Statistics: the paper's Louvain Q of the group's own subgraph, signed Q (Q+ - Q-),
  module_Q (the group taken as one community of the whole-layer graph) and concentration of
  the group in the whole-layer partition.
- Nulls: 1,000 random equal-size groups (the verdict family), a weight-preserving shuffled
  graph and a random-rotation null of the activation basis (reported); empirical p-values
  (+1), z-scores; row-bootstrap s.e. of z.
- H0 for the rejection: the group is no more clustered than random groups. Multiple
  comparisons: BH across the four metrics vs random groups (verdict family); the
  shuffle/rotation comparisons form a second BH family, reported only.
- Equivalence: TOST that z(Q) and z(module_Q) lie within +-2 SD of random groups, so "no
  clustering" is a positive finding, not only a failure to reject.
- Decision: 'supported' iff rare tokens were learned, nothing in the verdict family rejects at
  alpha = 0.05, and the equivalence holds; 'not supported' if clustered, or (inconclusive) if
  neither; 'untestable' if rare tokens were not learned (numbers still shown).
- Calibration (synthetic, reports/CALIBRATION.md): power 0.975 at a planted module of
  strength 0.5; null false-positive rate 0.030 (MC s.e. 0.012) over 200 replicates.
- Note: the paper's own Q *drops* for a cohesive module (one block is not split), so a
  verdict built on Q alone would have no power; module_Q and concentration carry it.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from harness import pipeline
from harness.analyses.clustering import clustering_analysis, clustering_result
from harness.analyses.plots_clustering import plot_nulls
from harness.analyses.regimes import plateau_neurons, top_neurons
from harness.claimkit import apply_precondition, check_verdict, settings_for
from harness.stats.precondition import check_learned

CLAIM = "no-clustering"
CALIBRATION = {"power": 0.975, "power_setting": "synthetic, planted module strength 0.5",
               "fpr": 0.030, "fpr_mc_se": 0.012, "n_null": 200,
               "source": "reports/CALIBRATION.md (claim 2)"}
GROUP_KINDS = ("plateau-boost", "top10-boost", "top50-boost", "top100-boost", "top10-suppress",
               "top50-suppress", "top100-suppress")


def pytest_generate_tests(metafunc):
    if "group_kind" in metafunc.fixturenames:
        kinds = [k.strip() for k in metafunc.config.getoption("--groups").split(",") if k.strip()]
        unknown = sorted(set(kinds) - set(GROUP_KINDS))
        if unknown:
            raise pytest.UsageError(f"--groups: unknown {unknown}; choose from {GROUP_KINDS}")
        metafunc.parametrize("group_kind", kinds, scope="module")


def select_group(prep, rare: np.ndarray, kind: str) -> np.ndarray:
    inf = prep.influence
    if kind == "plateau-boost":
        return plateau_neurons(inf.delta, rare, sign="boost", method="fixed")
    top, sign = kind.split("-")
    return top_neurons(inf.delta, rare, int(top.removeprefix("top")), sign=sign)


def test_no_clustering(prepared, rarity, seed, model_name, group_kind, record_claim, figure_dir,
                       request):
    quick = request.config.getoption("--quick")
    start = time.perf_counter()
    rare, _ = prepared.masks(rarity)
    if rare.sum() < 20:
        pytest.skip(f"only {int(rare.sum())} {rarity} positions; a correlation graph needs >= 20")
    group = np.asarray(select_group(prepared, rare, group_kind))
    acts = pipeline.final_activations(prepared)
    inf = prepared.influence
    n = 199 if quick else 1000  # random groups: the verdict's null
    analysis = clustering_analysis(acts[rare], inf.row[rare], group, n_random=n,
                                   n_shuffle=n // 5, n_rotation=n // 5, n_boot=100,
                                   n_leiden_check=10 if quick else 50, seed=seed)
    pre = check_learned(inf.loss[rare], prepared.facade.d_vocab, prepared.unigram_loss(rare))
    result = apply_precondition(clustering_result(analysis), pre)
    figure = plot_nulls(analysis, figure_dir / f"nulls-{group_kind}-{rarity.which}-q{rarity.q:g}.png")
    record_claim(result, model=model_name, claim=CLAIM, seed=seed,
                 settings=settings_for(prepared, rarity, group=group_kind, group_size=len(group)),
                 figures={f"nulls ({group_kind})": figure}, calibration=CALIBRATION,
                 wall_time_s=time.perf_counter() - start)
    check_verdict(request, result, claim=f"{CLAIM}/{group_kind}", model_name=model_name,
                  seed=seed, rarity=rarity)
