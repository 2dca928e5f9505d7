"""Batched, partial-forward head ablation == a one-at-a-time hooked loop of full forwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.ablation.bench import ModelShape, random_model
from harness.ablation.heads import all_heads, head_ablation
from harness.errors import BadInputError

pytestmark = pytest.mark.tiny
VOCAB = 500
NEURONS = [0, 5, 9]


_MODELS: dict[str, object] = {}


def _model(family: str):
    if family not in _MODELS:
        shape = ModelShape(family, n_layers=2, d_model=16, n_heads=4, d_mlp=16,
                           d_vocab=VOCAB, n_ctx=16)
        _MODELS[family] = random_model(shape, seed=3, init_std=0.3)
    return _MODELS[family]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    rows = rng.integers(0, VOCAB, size=(2, 7))
    keep = rng.random(rows.shape) < 0.5
    keep[:, -1] = False
    keep[:, 1] = True
    return rows, keep


def _reference(facade, rows, keep, heads, mode, scope):
    """For every head and kept (row, t): one full forward of that row with the head ablated."""
    post_hook = facade.hook_post
    z_mean = {}
    if mode == "mean":
        for layer in {l for l, _ in heads}:
            zs = []
            facade.run_with_hooks(torch.from_numpy(rows), [(facade.attn_hook(layer, "z"),
                                  lambda z, hook: zs.append(z.detach().clone()) or z)])
            z_mean[layer] = zs[0][torch.from_numpy(keep)].double().mean(0)

    def run(row, hooks):
        cache = {}
        hooks = hooks + [(post_hook, lambda a, hook: cache.update(post=a.detach().clone()) or a)]
        logits = facade.run_with_hooks(torch.from_numpy(rows[row:row + 1]), hooks)
        logp = torch.log_softmax(logits[0].double(), -1)
        return cache["post"][0].double(), logp

    r_all, t_all = np.nonzero(keep)
    d_act = np.zeros((len(heads), len(r_all), len(NEURONS)))
    d_loss = np.zeros((len(heads), len(r_all)))
    with torch.no_grad():
        clean = {r: run(r, []) for r in set(r_all.tolist())}
        for hi, (layer, head) in enumerate(heads):
            for pi, (r, t) in enumerate(zip(r_all, t_all)):
                q = slice(None) if scope == "all-positions" else t

                def ablate(x, hook, q=q, head=head, layer=layer):
                    if mode == "bos":
                        x[0, head, q] = 0
                        x[0, head, q, 0] = 1
                    else:
                        x[0, q, head] = 0 if mode == "zero" else z_mean[layer][head].to(x.dtype)
                    return x

                kind = "pattern" if mode == "bos" else "z"
                post0, logp0 = clean[r]
                post1, logp1 = run(r, [(facade.attn_hook(layer, kind), ablate)])
                d_act[hi, pi] = (post1[t, NEURONS] - post0[t, NEURONS]).numpy()
                nxt = rows[r, t + 1]
                d_loss[hi, pi] = float(logp0[t, nxt] - logp1[t, nxt])
    return d_act, d_loss


@pytest.mark.parametrize("family,mode,scope", [
    ("gpt2", "bos", "single-query"), ("gpt2", "zero", "all-positions"),
    ("gpt2", "mean", "single-query"), ("gpt2", "bos", "all-positions"),
    ("neox", "bos", "single-query"), ("neox", "mean", "all-positions"),
    ("llama", "bos", "single-query"), ("llama", "zero", "all-positions"),
    ("gemma", "bos", "single-query"), ("gemma", "mean", "all-positions"),
])
def test_batched_equals_one_at_a_time(family, data, mode, scope):
    model = _model(family)
    rows, keep = data
    heads = [(0, 1), (1, 0), (1, 3)]
    got = head_ablation(model, rows, keep, heads=heads, mode=mode, scope=scope,
                        neurons=NEURONS, batch_size=1, fold=5)
    ref_act, ref_loss = _reference(model, rows, keep, heads, mode, scope)
    r, t = np.nonzero(keep)
    np.testing.assert_array_equal(got.row, r)
    np.testing.assert_array_equal(got.pos, t)
    assert got.delta_act.shape == (3, len(r), 3) and got.delta_act.dtype == np.float32
    assert np.abs(ref_act).max() > 1e-3  # the ablation does something
    np.testing.assert_allclose(got.delta_act, ref_act, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got.delta_loss, ref_loss, atol=1e-5, rtol=0)


def test_all_heads_and_errors(data):
    model = _model("gpt2")
    rows, keep = data
    assert all_heads(model) == [(l, h) for l in range(2) for h in range(4)]
    assert all_heads(model, last_k_layers=1) == [(1, h) for h in range(4)]
    res = head_ablation(model, rows, keep, mode="zero", scope="all-positions", neurons=[1],
                        last_k_layers=1, fold=3)
    assert res.heads == all_heads(model, 1) and res.influence().shape == (4, keep.sum())
    assert "4 heads" in str(res)
    with pytest.raises(BadInputError, match="mode"):
        head_ablation(model, rows, keep, mode="resample")
    with pytest.raises(BadInputError, match="outside"):
        head_ablation(model, rows, keep, heads=[(2, 0)])


def test_store_caches_and_resumes_identically(data, tmp_path, monkeypatch):
    """Head-ablation effects are cached in the ResultStore; a run killed after its first row
    batch resumes from the stored batch and gives the same numbers; a corrupt entry is redone."""
    from harness.ablation import heads as heads_mod
    from harness.store import ResultStore

    model = _model("gpt2")
    rows, keep = data
    kw = dict(heads=[(0, 1), (1, 2)], mode="zero", scope="all-positions", neurons=NEURONS,
              batch_size=1)
    fresh = head_ablation(model, rows, keep, **kw)
    store = ResultStore(tmp_path)

    real_run, calls = model.run_with_hooks, []

    def crash_on_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the clean pass of the second row batch
            raise KeyboardInterrupt("simulated crash")
        return real_run(*args, **kwargs)

    monkeypatch.setattr(model, "run_with_hooks", crash_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        head_ablation(model, rows, keep, store=store, **kw)
    assert len(list(tmp_path.glob("*-batch*.json"))) == 1  # the first batch survived
    calls.clear()
    resumed = head_ablation(model, rows, keep, store=store, **kw)
    assert len(calls) == len(rows) - 1  # only the missing batches ran their clean pass
    np.testing.assert_array_equal(resumed.delta_act, fresh.delta_act)
    np.testing.assert_array_equal(resumed.delta_loss, fresh.delta_loss)
    assert list(tmp_path.glob("*-batch*")) == []

    monkeypatch.setattr(heads_mod, "_ablation_hook",
                        lambda *a: pytest.fail("cached: no forward pass expected"))
    again = head_ablation(model, rows, keep, store=store, **kw)
    np.testing.assert_array_equal(again.delta_act, fresh.delta_act)

    data_file = next(p for p in tmp_path.iterdir() if p.suffix == ".npz")
    data_file.write_bytes(data_file.read_bytes()[:-10])  # truncated entry
    monkeypatch.undo()
    redone = head_ablation(model, rows, keep, store=store, **kw)
    np.testing.assert_array_equal(redone.delta_act, fresh.delta_act)


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama"])
def test_partial_forwards_skip_earlier_blocks(family, data):
    """An ablation at layer k runs blocks k.. only: each earlier block's MLP runs once per row
    batch (the clean pass), not once per ablation forward (the bridge alone would rerun them)."""
    model = _model(family)
    rows, keep = data
    mlps = [b.original_component.mlp for b in model.bridge.blocks]
    calls = [0] * len(mlps)
    handles = [m.register_forward_hook(lambda mod, i, o, k=k: calls.__setitem__(k, calls[k] + 1))
               for k, m in enumerate(mlps)]
    try:
        head_ablation(model, rows, keep, heads=[(1, 0), (1, 2)], mode="zero",
                      scope="all-positions", neurons=NEURONS, batch_size=len(rows), fold=1)
    finally:
        for h in handles:
            h.remove()
    assert calls[0] == 1  # clean pass only
    assert calls[1] == 1 + 2 * len(rows)  # clean pass + one forward per (head, row) job
