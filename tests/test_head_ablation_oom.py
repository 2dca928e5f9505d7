"""Out-of-memory during head ablation: the fold is halved and the failed chunk redone (same
numbers, logged); an OOM that even one job cannot survive stops the run with the finished row
batches in the result store, and the rerun resumes from them."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from harness.ablation import heads as heads_mod
from harness.ablation.bench import ModelShape, random_model
from harness.ablation.heads import head_ablation

pytestmark = pytest.mark.tiny
VOCAB = 200


@pytest.fixture(scope="module")
def setup():
    model = random_model(ModelShape("gpt2", n_layers=2, d_model=16, n_heads=4, d_mlp=16,
                                    d_vocab=VOCAB, n_ctx=10), seed=2, init_std=0.3)
    rng = np.random.default_rng(2)
    rows = rng.integers(0, VOCAB, size=(4, 10))
    keep = rng.random(rows.shape) < 0.6
    keep[:, -1] = False
    keep[:, 3] = True
    return model, rows, keep


def _cap_jobs(monkeypatch, name: str, cap: int, seen: list):
    """Make heads_mod.<name> raise a CUDA-style OOM whenever a chunk holds more than `cap`
    jobs (a forced small memory cap)."""
    real = getattr(heads_mod, name)

    def capped(*args, **kwargs):
        chunk = args[4]  # (.., layer, chunk, ..) in both chunk functions
        seen.append(len(chunk))
        if len(chunk) > cap:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(heads_mod, name, capped)


@pytest.mark.parametrize("scope,method,fn", [("single-query", "joint", "_joint_chunk"),
                                             ("single-query", "prefix", "_hooked_chunk"),
                                             ("all-positions", "auto", "_hooked_chunk")])
def test_oom_halves_the_fold_and_gives_the_same_numbers(setup, monkeypatch, caplog, scope,
                                                         method, fn):
    model, rows, keep = setup
    kw = dict(heads=[(0, 1), (1, 0), (1, 2)], mode="zero", scope=scope, method=method,
              neurons=[0, 3, 5], batch_size=2, fold=8)
    free = head_ablation(model, rows, keep, **kw)
    seen: list[int] = []
    _cap_jobs(monkeypatch, fn, cap=2, seen=seen)
    with caplog.at_level(logging.WARNING):
        capped = head_ablation(model, rows, keep, **kw)
    # smaller chunks change the float32 kernels' blocking (and, for prefix jobs, the padded
    # prefix length), hence rounding only
    np.testing.assert_allclose(capped.delta_act, free.delta_act, atol=1e-5, rtol=0)
    np.testing.assert_allclose(capped.delta_loss, free.delta_loss, atol=1e-5, rtol=0)
    assert np.abs(free.delta_act).max() > 1e-2
    assert max(seen) > 2 and any(n <= 2 for n in seen)  # it failed, then ran smaller
    assert "out of memory" in caplog.text and "fold size 2" in caplog.text


def test_unrecoverable_oom_keeps_finished_row_batches(setup, monkeypatch, tmp_path, caplog):
    from harness.store import ResultStore

    model, rows, keep = setup
    kw = dict(heads=[(0, 1), (1, 3)], mode="bos", scope="single-query", neurons=[1, 2],
              batch_size=2, fold=4)
    fresh = head_ablation(model, rows, keep, **kw)
    store = ResultStore(tmp_path)
    real, calls = heads_mod._joint_chunk, []

    def oom_in_second_batch(*args, **kwargs):
        calls.append(args[4])
        if len(calls) > 2:  # the first row batch made 2 calls (one chunk per layer)
            raise RuntimeError("CUDA out of memory (simulated, at any size)")
        return real(*args, **kwargs)

    monkeypatch.setattr(heads_mod, "_joint_chunk", oom_in_second_batch)
    with caplog.at_level(logging.WARNING), pytest.raises(RuntimeError, match="out of memory"):
        head_ablation(model, rows, keep, store=store, **kw)
    assert "fold size 1" in caplog.text  # backed off all the way before giving up
    assert len(list(tmp_path.glob("*-batch*.json"))) == 1  # the first row batch is kept
    monkeypatch.setattr(heads_mod, "_joint_chunk", real)
    resumed = head_ablation(model, rows, keep, store=store, **kw)
    np.testing.assert_array_equal(resumed.delta_act, fresh.delta_act)
    np.testing.assert_array_equal(resumed.delta_loss, fresh.delta_loss)
