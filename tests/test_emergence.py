"""Emergence over training (issue 14.5): the shared (paired) bootstrap switch, each claim's
effect replicates under it, the trend test on synthetic checkpoints, the runner's input
checks, and one run of `rarebench emergence` on three tiny-pythia checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.analyses.emergence import TrendResult, synthetic_checkpoints, trend
from harness.errors import BadInputError
from harness.stats.bootstrap import (SHARED_BOOTSTRAP_ENV, percentile_ci, resample_weights,
                                     shared_bootstrap_seed)

REPO = Path(__file__).resolve().parents[1]
PYTHIA_LIKE = [0, 1, 4, 16, 64, 256, 512, 1024, 1536, 2048]


def _plain_weights(n_rows, n_boot, rng):
    """resample_weights before the switch existed (the unchanged default)."""
    idx = rng.integers(0, n_rows, size=(n_boot, n_rows))
    w = np.zeros((n_boot, n_rows))
    np.add.at(w, (np.repeat(np.arange(n_boot), n_rows), idx.ravel()), 1.0)
    return w


# ------------------------------------------------------------------ the switch

def test_unset_switch_is_the_plain_draw(monkeypatch):
    monkeypatch.delenv(SHARED_BOOTSTRAP_ENV, raising=False)
    assert shared_bootstrap_seed() is None
    np.testing.assert_array_equal(resample_weights(17, 40, np.random.default_rng(3)),
                                  _plain_weights(17, 40, np.random.default_rng(3)))
    monkeypatch.setenv(SHARED_BOOTSTRAP_ENV, "  ")  # empty = unset
    np.testing.assert_array_equal(resample_weights(17, 40, np.random.default_rng(3)),
                                  _plain_weights(17, 40, np.random.default_rng(3)))


def test_shared_switch_same_rows_whatever_the_rng(monkeypatch):
    monkeypatch.setenv(SHARED_BOOTSTRAP_ENV, "7")
    a = resample_weights(30, 50, np.random.default_rng(1))
    b = resample_weights(30, 50, np.random.default_rng(999))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (50, 30) and np.all(a.sum(1) == 30)
    assert not np.array_equal(a, _plain_weights(30, 50, np.random.default_rng(1)))
    # another shape, key or seed gives another (independent) draw
    assert not np.array_equal(a[:, :29], resample_weights(29, 50, np.random.default_rng(1)))
    assert not np.array_equal(a, resample_weights(30, 50, np.random.default_rng(1), key=(1,)))
    np.testing.assert_array_equal(resample_weights(30, 50, np.random.default_rng(5), key=(1,)),
                                  resample_weights(30, 50, np.random.default_rng(6), key=(1,)))
    monkeypatch.setenv(SHARED_BOOTSTRAP_ENV, "8")
    assert not np.array_equal(a, resample_weights(30, 50, np.random.default_rng(1)))


def test_shared_switch_advances_rng_as_usual(monkeypatch):
    """Every other random stream of an analysis stays what it is without the switch."""
    monkeypatch.delenv(SHARED_BOOTSTRAP_ENV, raising=False)
    rng = np.random.default_rng(11)
    resample_weights(25, 60, rng)
    after_plain = rng.random(5)
    monkeypatch.setenv(SHARED_BOOTSTRAP_ENV, "0")
    rng = np.random.default_rng(11)
    resample_weights(25, 60, rng)
    np.testing.assert_array_equal(rng.random(5), after_plain)


@pytest.mark.parametrize("value", ["x", "-1", "1.5"])
def test_bad_switch_value_is_one_clear_error(monkeypatch, value):
    monkeypatch.setenv(SHARED_BOOTSTRAP_ENV, value)
    with pytest.raises(BadInputError, match=SHARED_BOOTSTRAP_ENV):
        resample_weights(5, 5, np.random.default_rng(0))


# ------------------------------------------------------------------ replicates per claim

def _with_and_without(monkeypatch, fn):
    monkeypatch.delenv(SHARED_BOOTSTRAP_ENV, raising=False)
    plain = fn()
    monkeypatch.setenv(SHARED_BOOTSTRAP_ENV, "0")
    return plain, fn()


def test_claim1_replicates_under_the_switch_only(monkeypatch):
    from harness.analyses.regimes import dual_regimes_test
    from harness.analyses.synthetic_regimes import make_regimes_data

    d = make_regimes_data(seed=5, k=9, effect=1.0)
    plain, shared = _with_and_without(monkeypatch, lambda: dual_regimes_test(
        d.delta, d.row, d.rare, d.common, d.loss, seed=1, n_perm=99, n_boot=100,
        n_size_draws=10, n_loss_draws=5, describe=False))
    assert "effect_replicates" not in plain.details
    reps = np.array(shared.details["effect_replicates"], dtype=float)
    assert reps.shape == (100,)
    # only the bootstrap draw differs: estimate, statistic and permutation p are identical
    assert (shared.effect, shared.statistic, shared.p_value) == (plain.effect, plain.statistic,
                                                                 plain.p_value)
    assert (shared.ci_low, shared.ci_high) == pytest.approx(percentile_ci(reps))


def test_claim2_replicates_under_the_switch_only(monkeypatch):
    from harness.analyses.clustering import crossfit_analysis, crossfit_result
    from harness.analyses.regimes import top_neurons
    from harness.analyses.synthetic_clustering import synthetic_run

    run = synthetic_run(n_rows=40, positions=10, m=400, k=10, kind="plateau", seed=3)

    def result():
        cf = crossfit_analysis(run.acts, run.delta, run.row, run.rare, run.common,
                               lambda mask: top_neurons(run.delta, mask, run.plateau.size),
                               legacy=None, seed=0, n_selection=200, n_matched=100,
                               n_random=99, n_boot=50, graph_stats=False)
        return crossfit_result(cf), cf

    (plain, _), (shared, cf) = _with_and_without(monkeypatch, result)
    assert "effect_replicates" not in plain.details
    reps = np.array(shared.details["effect_replicates"], dtype=float)
    assert reps.shape == (50,)
    assert shared.effect == plain.effect and shared.p_value == plain.p_value
    # the replicates are the draws behind the folds' s.e., centred near the estimate
    assert abs(reps.mean() - shared.effect) < 3 * reps.std()
    folds = cf.per_fold
    np.testing.assert_allclose(reps, np.mean([f["_boot"] - f["selection"]["null_mean"]
                                              for f in folds], axis=0))
    assert not np.array_equal(folds[0]["_boot"] - folds[0]["contrast"],
                              folds[1]["_boot"] - folds[1]["contrast"])


def test_claim3_replicates_under_the_switch_only(monkeypatch):
    from harness.analyses.routing import RoutingAnalysis
    from harness.analyses.synthetic_routing import synthetic_routing

    d = synthetic_routing(seed=4, n_rows=30)
    plain, shared = _with_and_without(monkeypatch, lambda: RoutingAnalysis(
        d.infl_plateau, d.infl_random, d.rare, d.common, d.row, d.pos, d.heads,
        n_boot=200, n_flip=1999).result())
    assert "effect_replicates" not in plain.details
    reps = np.array(shared.details["effect_replicates"], dtype=float)
    assert reps.shape == (200,)
    assert shared.effect == plain.effect and shared.p_value == plain.p_value
    focus = next(h for h in shared.details["per_head"]
                 if [h["layer"], h["head"]] == shared.details["focus_head"])
    assert np.nanstd(reps, ddof=1) == pytest.approx(focus["se"])


# ------------------------------------------------------------------ the trend test

@pytest.mark.parametrize("size, direction", [(1.0, "increasing"), (-1.0, "decreasing")])
def test_planted_monotone_trend_is_found(size, direction):
    for seed in range(10):
        effects, reps = synthetic_checkpoints(PYTHIA_LIKE, size, seed=seed)
        t = trend(PYTHIA_LIKE, effects, reps)
        assert t.direction == direction, (seed, str(t))
        assert (t.ci_low > 0) if size > 0 else (t.ci_high < 0)
        assert t.p_value < 0.05 and t.n_checkpoints == 10 and t.n_boot_used == 200


def test_flat_null_false_positive_rate():
    """No trend planted: the paired-bootstrap CI excludes 0 in at most 10% of 200 seeds
    (measured: 5%)."""
    hits = 0
    for seed in range(200):
        effects, reps = synthetic_checkpoints(PYTHIA_LIKE, 0.0, seed=1000 + seed)
        t = trend(PYTHIA_LIKE, effects, reps)
        hits += t.ci_low > 0 or t.ci_high < 0
    assert hits / 200 <= 0.10


def test_rho_is_rank_based_and_step_zero_counts():
    steps = [0, 10, 100, 1000]
    effects = [0.1, 0.2, 0.15, 0.4]
    reps = [np.full(50, e) + np.linspace(-0.01, 0.01, 50) for e in effects]
    t = trend(steps, effects, reps)
    assert t.rho == pytest.approx(0.8) and t.steps == (0, 10, 100, 1000)
    # order of the input does not matter; the exact order p of 4 checkpoints is >= 2/24
    perm = [2, 0, 3, 1]
    t2 = trend([steps[i] for i in perm], [effects[i] for i in perm], [reps[i] for i in perm])
    assert t2.rho == t.rho and t2.order_p == t.order_p >= 2 / 24


def test_untestable_checkpoints_are_skipped_and_named():
    effects, reps = synthetic_checkpoints(PYTHIA_LIKE[:5], 1.0, seed=0)
    eff = list(effects)
    rep = [list(r) for r in reps]
    eff[1] = float("nan")             # e.g. an inconclusive claim: no effect
    rep[3] = None                     # a result without replicates
    rep[4][0] = None                  # one replicate not finite at one checkpoint
    t = trend(PYTHIA_LIKE[:5], eff, rep)
    assert t.n_checkpoints == 3 and t.steps == (0, 4, 64)
    assert [s for s, _ in t.skipped] == [1, 16] and "no effect" in t.skipped[0][1]
    assert t.n_boot_used == 199  # replicate 0 is missing at the kept step 64
    assert "skipped step 1" in str(t)
    few = trend([0, 1, 2], [0.1, float("nan"), 0.3], [[0.1] * 30, None, [0.3] * 30])
    assert isinstance(few, TrendResult) and few.direction == "untestable"
    assert "needs at least 3" in str(few) and np.isnan(few.rho)


def test_unpaired_replicates_and_bad_input_raise():
    with pytest.raises(BadInputError, match="not paired"):
        trend([0, 1, 2], [0.1, 0.2, 0.3], [[0.1] * 30, [0.2] * 30, [0.3] * 31])
    with pytest.raises(BadInputError, match="distinct"):
        trend([0, 1, 1], [0.1, 0.2, 0.3], [[0.1] * 30] * 3)
    with pytest.raises(BadInputError, match="one step, effect"):
        trend([0, 1, 2], [0.1, 0.2], [[0.1] * 30] * 3)


def test_trend_result_prints_and_serialises():
    effects, reps = synthetic_checkpoints(PYTHIA_LIKE, 1.0, seed=2)
    t = trend(PYTHIA_LIKE, effects, reps)
    text = str(t)
    assert text.startswith("trend vs log step: Spearman rho=+") and "-> increasing" in text
    d = t.to_dict()
    assert d["steps"] == PYTHIA_LIKE and "replicates" not in d
    assert len(t.to_dict(replicates=True)["replicates"]) == 200
    json.dumps(d)


# ------------------------------------------------------------------ runner input checks

@pytest.mark.parametrize("argv, needle", [
    (["--model", "no-such-model"], "unknown model"),
    (["--model", "gpt2"], "no training checkpoints"),
    (["--model", "tiny-pythia", "--steps", "40,50,320"], "no checkpoint step 50"),
    (["--model", "tiny-pythia", "--steps", "40,120"], "at least 3"),
    (["--model", "tiny-pythia@step40"], "without @step"),
    (["--model", "pythia-70m-deduped"], "choose its hub checkpoints with --steps"),
    (["--model", "tiny-pythia", "--rarity", "rare"], "--rarity"),
    (["--model", "tiny-pythia", "--claims", "no-such-claim"], "unknown no-such-claim"),
])
def test_bad_input_is_one_line_exit_2(argv, needle, capsys, monkeypatch):
    from harness.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["emergence", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rarebench: error:") and needle in err and "\n" not in err


def test_resolve_steps_defaults_to_every_listed_checkpoint():
    from harness.emergence import listed_steps, parse_rarity, resolve_steps

    listed, source = listed_steps("tiny-pythia")
    assert listed == (0, 40, 120, 320) and source.endswith("CHECKPOINTS.json")
    assert resolve_steps("tiny-pythia") == [0, 40, 120, 320]
    assert resolve_steps("tiny-pythia", "320, 40,step120") == [40, 120, 320]
    assert parse_rarity("target-q50") == ("target", 50.0)
    assert parse_rarity("current q15") == ("current", 15.0)


# ------------------------------------------------------------------ end to end

@pytest.mark.tiny
def test_rarebench_emergence_on_three_tiny_pythia_checkpoints(tmp_path):
    """Claim 1 at steps 40, 120, 320 of the unlearned tiny-pythia fixture (every verdict
    'untestable'; the effects are still computed), small evaluation set: paired replicates of
    one length per checkpoint, a finite rho, the figure and the HTML report."""
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "HF_HUB_OFFLINE": "1"}
    env.pop(SHARED_BOOTSTRAP_ENV, None)
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "emergence", "--model", "tiny-pythia",
         "--steps", "40,120,320", "--claims", "dual-regimes", "--quick", "--power-reps", "1",
         "--eval-rows", "8", "--common-budget", "40", "--out", str(tmp_path / "out"),
         "--run-id", "e1", "--cache-dir", str(tmp_path / "store"), "--device", "cpu"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "out" / "e1"
    em = json.loads((run_dir / "emergence" / "emergence.json").read_text())
    [series] = em["series"]
    assert series["claim"] == "dual-regimes" and em["steps"] == [40, 120, 320]
    cps = series["checkpoints"]
    assert [c["step"] for c in cps] == [40, 120, 320]
    assert {c["verdict"] for c in cps} == {"untestable"}
    lengths = {len(c["replicates"]) for c in cps}
    assert lengths == {200}  # --quick: 200 bootstrap draws, the same rows at every step
    assert all(c["precondition"]["margin_uniform"] for c in cps)
    t = series["trend"]
    assert np.isfinite(t["rho"]) and t["n_checkpoints"] == 3 and t["n_boot_used"] > 0
    for name in ("emergence.png", "EMERGENCE.md", "REPORT.html"):
        assert (run_dir / "emergence" / name).stat().st_size > 0
    assert "Spearman rho" in proc.stdout
    # the switch did not leak into the claims' own records beyond the replicates
    claims = json.loads((run_dir / "results.json").read_text())["claims"]
    assert all("effect_replicates" in r["result"]["details"] for r in claims)
