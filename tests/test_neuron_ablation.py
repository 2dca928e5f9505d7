"""Closed-form all-neuron ablation == its definition (a hooked forward per neuron).

The property tests draw random tiny GPT-2 / NeoX / Llama models (tied and untied unembedding,
random final-norm gain/bias), random token rows and random neurons, and require agreement to
1e-4 nats in float32. The pure maths is also checked against a float64 brute force.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.ablation import neuron
from harness.ablation.bench import ModelShape, random_model
from harness.ablation.hooked import hooked_neuron_delta
from harness.ablation.neuron import (clean_loss, closed_form_delta, neuron_ablation_delta,
                                     neuron_influence, prepare_closed_form)
from harness.errors import BadInputError
from harness.models.facade import NormSpec
from lse_triton_cases import problem  # tests/: the same random closed-form problem

pytestmark = pytest.mark.tiny
VOCAB = 1000


def _model(family: str, d_model: int, d_mlp: int, n_layers: int, tied: bool, init_std: float,
           seed: int):
    shape = ModelShape(family, n_layers=n_layers, d_model=d_model, n_heads=4, d_mlp=d_mlp,
                       d_vocab=VOCAB, n_ctx=32)
    facade = random_model(shape, seed=seed, tied=tied, init_std=init_std)
    norm = facade.hf_model.get_submodule(facade._norm_path)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a non-trivial final norm, so gamma and beta are exercised
        norm.weight.copy_(0.5 + torch.rand(norm.weight.shape, generator=gen))
        if getattr(norm, "bias", None) is not None:
            norm.bias.copy_(0.3 * torch.randn(norm.bias.shape, generator=gen))
    return facade


def _brute_force(resid, acts, targets, W_out, W_U, b_U, norm, values):
    """Delta by materialising every ablated residual, all in float64."""
    f64 = NormSpec(norm.kind, norm.gamma.double(),
                   None if norm.beta is None else norm.beta.double(), norm.eps)
    def ce(x):
        logp = torch.log_softmax(f64.apply(x) @ W_U.double() + b_U.double(), -1)
        idx = targets.view(-1, *([1] * (x.dim() - 1))).expand(*x.shape[:-1], 1)
        return -logp.gather(-1, idx)[..., 0]
    x = resid.double()
    c = values.double()[None, :] - acts.double()
    ablated = x[:, None, :] + c[:, :, None] * W_out.double()[None]
    return ce(ablated) - ce(x)[:, None], ce(x)


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
def test_pure_closed_form_matches_float64_brute_force(kind):
    n, m = 9, 50
    resid, acts, targets, W_out, W_U, b_U, norm, values = problem(kind, seed=1, n=n, d=24, m=m,
                                                                  v=400)
    ref, ref_loss = _brute_force(resid, acts, targets, W_out, W_U, b_U, norm, values)
    got = neuron_ablation_delta(resid, acts, targets, W_out, W_U, b_U, norm, values, chunk=17)
    assert got.dtype == torch.float32 and got.shape == (n, m)
    assert ref.abs().max() > 1.0  # large effects: the test is not trivially satisfied
    # the fused single-pass kernel sums exp() in float32: ~1e-6 here, far inside the 1e-4 spec
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=0)
    sub = neuron_ablation_delta(resid, acts, targets, W_out, W_U, b_U, norm, values,
                                neurons=[4, 0, 31])
    torch.testing.assert_close(sub, got[:, [4, 0, 31]], atol=1e-6, rtol=0)
    torch.testing.assert_close(clean_loss(resid, targets, W_U, b_U, norm).double(), ref_loss,
                               atol=1e-5, rtol=1e-6)
    at_own_value = neuron_ablation_delta(resid, acts, targets, W_out, W_U, b_U, norm, acts[0])
    assert at_own_value[0].abs().max() == 0  # c = 0 -> exactly no change


def test_oom_halves_the_block_and_retries(monkeypatch):
    gen = torch.Generator().manual_seed(2)
    n, d, m, v = 6, 8, 20, 50
    args = (torch.randn(n, d, generator=gen), torch.randn(n, m, generator=gen),
            torch.randint(0, v, (n,), generator=gen))
    op = prepare_closed_form(torch.randn(m, d, generator=gen), torch.randn(d, v, generator=gen),
                             None, NormSpec("layernorm", torch.ones(d), None, 1e-5))
    values = torch.zeros(m)
    expected = closed_form_delta(op, *args, values, chunk=10**6, method="compiled")
    real, seen = neuron._delta_positions, []

    def flaky(op, resid, acts, targets, values, neuron_block, method):
        rows = len(resid) * neuron_block
        seen.append(rows)
        if rows > 25:
            raise (MemoryError() if len(seen) == 1 else
                   RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
        return real(op, resid, acts, targets, values, neuron_block, method)

    monkeypatch.setattr(neuron, "_delta_positions", flaky)
    got = closed_form_delta(op, *args, values, chunk=200, method="compiled")
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert seen[0] == 120 and max(seen[seen.index(min(seen)):]) <= 25  # shrank, then stayed small

    def broken(*a, **k):
        raise RuntimeError("shape mismatch")  # not an OOM: must not be swallowed

    monkeypatch.setattr(neuron, "_delta_positions", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        closed_form_delta(op, *args, values, chunk=200)


@pytest.mark.parametrize("family", ["gpt2", "neox", "llama"])
@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck))
@given(d_model=st.sampled_from([16, 32]),
       d_mlp=st.integers(8, 48), n_layers=st.integers(1, 2), tied=st.booleans(),
       init_std=st.sampled_from([0.02, 0.3]), seed=st.integers(0, 2**16))
def test_closed_form_equals_hooked_forward(family, d_model, d_mlp, n_layers, tied, init_std,
                                           seed):
    facade = _model(family, d_model, d_mlp, n_layers, tied, init_std, seed)
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (2, 12), generator=gen)
    keep = torch.rand(tokens.shape, generator=gen) < 0.7
    keep[:, -1] = False
    neurons = torch.randperm(d_mlp, generator=gen)[:5].tolist()
    with torch.no_grad():
        final = facade.forward_final(tokens)
    r, t = torch.nonzero(keep, as_tuple=True)
    acts = final.post[r, t]
    values = acts.double().mean(0) if seed % 2 else torch.zeros(d_mlp)
    got = neuron_ablation_delta(final.resid[r, t], acts, tokens[r, t + 1], facade.W_out,
                                facade.W_U, facade.b_U, facade.final_norm, values)
    ref = hooked_neuron_delta(facade, tokens, neurons, values, keep=keep)
    assert ref.shape == (len(r), len(neurons))
    assert (got[:, neurons] - ref).abs().max().item() < 1e-4


def test_neuron_influence_on_rows():
    facade = _model("gpt2", 32, 16, 2, tied=True, init_std=0.3, seed=5)
    gen = np.random.default_rng(5)
    rows = gen.integers(0, VOCAB, size=(4, 10))
    keep = gen.random(rows.shape) < 0.6
    keep[:, -1] = False
    res = neuron_influence(facade, rows, keep, values="mean", batch_size=2)
    r, t = np.nonzero(keep)
    assert res.delta.shape == (len(r), 16) and res.delta.dtype == np.float32
    np.testing.assert_array_equal(res.row, r)
    np.testing.assert_array_equal(res.pos, t)
    np.testing.assert_array_equal(res.token, rows[r, t])
    np.testing.assert_array_equal(res.target, rows[r, t + 1])
    with torch.no_grad():
        final = facade.forward_final(torch.from_numpy(rows))
    mu = final.post[torch.from_numpy(r), torch.from_numpy(t)].double().mean(0).numpy()
    np.testing.assert_allclose(res.mean_act, mu, atol=1e-6, rtol=0)
    ref = hooked_neuron_delta(facade, torch.from_numpy(rows), range(16),
                              torch.from_numpy(mu), keep=torch.from_numpy(keep))
    np.testing.assert_allclose(res.delta, ref.numpy(), atol=1e-4, rtol=0)
    logp = torch.log_softmax(final.logits.double(), -1)[r, t]
    np.testing.assert_allclose(res.loss, -logp[np.arange(len(r)), rows[r, t + 1]].numpy(),
                               atol=1e-4, rtol=0)
    zero = neuron_influence(facade, rows, keep, values="zero", batch_size=3)
    assert np.abs(zero.delta - res.delta).max() > 1e-3  # a different intervention
    with pytest.raises(BadInputError, match="last position"):
        neuron_influence(facade, rows, np.ones_like(keep), batch_size=2)
