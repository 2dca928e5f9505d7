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
# tests/: the same random closed-form problem and float64 brute force
from lse_triton_cases import brute_force_delta, problem

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


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
def test_pure_closed_form_matches_float64_brute_force(kind):
    n, m = 9, 50
    resid, acts, targets, W_out, W_U, b_U, norm, values = problem(kind, seed=1, n=n, d=24, m=m,
                                                                  v=400)
    ref, ref_loss = brute_force_delta(resid, acts, targets, W_out, W_U, b_U, norm, values)
    got = neuron_ablation_delta(resid, acts, targets, W_out, W_U, b_U, norm, values, chunk=17)
    assert got.dtype == torch.float32 and got.shape == (n, m)
    assert ref.abs().max() > 1.0  # large effects: the test is not trivially satisfied
    # the fused single-pass kernel sums exp() in float32: ~1e-6 here, far inside the 1e-4 spec
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=0)
    sub = neuron_ablation_delta(resid, acts, targets, W_out, W_U, b_U, norm, values,
                                neurons=[4, 0, 31])
    # same kernel on a subset: only the float32 summation order differs (vector width is
    # CPU-dependent; CI's CPU measured 1.2e-6 at |Delta| 0.57, i.e. 2e-6 relative)
    torch.testing.assert_close(sub, got[:, [4, 0, 31]], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(clean_loss(resid, targets, W_U, b_U, norm).double(), ref_loss,
                               atol=1e-5, rtol=1e-6)
    at_own_value = neuron_ablation_delta(resid, acts, targets, W_out, W_U, b_U, norm, acts[0])
    assert at_own_value[0].abs().max() == 0  # c = 0 -> exactly no change


@pytest.mark.parametrize("method", ["compiled", "eager"])
def test_underflowing_bound_is_recomputed_exactly(monkeypatch, method):
    """A bound so loose that every exp underflows (clean row 0 and three ablated pairs): the
    kernel returns -inf there, and those pairs alone are recomputed in float64."""
    args = problem("layernorm", seed=4, n=5, m=12, v=300)
    ref, _ = brute_force_delta(*args)
    real, seen = neuron._run_lse, []

    def loose(kernel, kargs):
        logp, y, G, rho, kappa, bound = kargs
        bound = bound.clone()
        bound[0, :3] += 500.0  # exp(z - bound) == 0 in float32
        used, lse = real(kernel, (logp, y, G, rho, kappa, bound))
        seen.append(int((~torch.isfinite(lse)).sum()))
        return used, lse

    monkeypatch.setattr(neuron, "_run_lse", loose)
    got = neuron_ablation_delta(*args, method=method)
    assert seen == [1, 3]  # the clean row, then the block of all 12 neurons
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=0)


def test_compiled_kernel_failing_midway_switches_both_terms_to_eager(monkeypatch):
    """A backend failure after the clean term was computed: the clean term is recomputed by
    the eager kernel too, so both terms still come from one kernel."""
    args = problem("rmsnorm", seed=5, n=4, m=10, v=200)
    calls = []

    def flaky(*kargs):  # the compiled kernel's contract: None = failed, use eager
        calls.append(kargs[2].shape[1])  # a kernel with an offset, that fails after one call
        return neuron._lse_with_bound(*kargs) + 1e-3 if len(calls) == 1 else None

    monkeypatch.setattr(neuron, "_fused_lse", lambda: flaky)
    got = neuron_ablation_delta(*args, method="compiled", chunk=5)  # 1 position, 2 blocks
    assert calls == [1, 5, 1, 1, 1]  # clean row compiled, its first block failed; then eager
    eager = neuron_ablation_delta(*args, method="eager", chunk=5)
    torch.testing.assert_close(got, eager, atol=0, rtol=0)


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

    def flaky(op, resid, acts, targets, values, neuron_block, method, mlp=None):
        rows = len(resid) * neuron_block
        seen.append(rows)
        if rows > 25:
            raise (MemoryError() if len(seen) == 1 else
                   RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
        return real(op, resid, acts, targets, values, neuron_block, method, mlp)

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
