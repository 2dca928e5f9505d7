"""The closed-form joint group ablation (harness.ablation.group) equals its definition: a hooked
forward pass of the model with the group's (necessity) or every other neuron's (sufficiency)
final-layer activations replaced by their means - in float64, to 1e-5 nats, on random-weight
GPT-2 / NeoX / Llama models with a non-trivial final norm (tied and untied unembedding)."""

from __future__ import annotations

import pytest
import torch

from harness.ablation.bench import ModelShape, random_model
from harness.ablation.group import ablate_groups, restore_groups
from harness.ablation.hooked import token_losses
from harness.ablation.neuron import closed_form_delta, closed_form_for, prepare_closed_form
from harness.errors import BadInputError

pytestmark = pytest.mark.tiny
VOCAB, D_MLP, TOL = 700, 40, 1e-5


def _model(family: str, tied: bool, seed: int):
    shape = ModelShape(family, n_layers=2, d_model=32, n_heads=4, d_mlp=D_MLP, d_vocab=VOCAB,
                       n_ctx=32)
    facade = random_model(shape, seed=seed, tied=tied, init_std=0.3, dtype=torch.float64)
    norm = facade.hf_model.get_submodule(facade._norm_path)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a non-trivial final norm: gamma and beta exercised
        norm.weight.copy_(0.5 + torch.rand(norm.weight.shape, generator=gen))
        if getattr(norm, "bias", None) is not None:
            norm.bias.copy_(0.3 * torch.randn(norm.bias.shape, generator=gen))
        if family == "gemma":  # its post-MLP norm, scale 1 + w
            post = facade.hf_model.get_submodule(
                f"model.layers.{facade.n_layers - 1}.post_feedforward_layernorm")
            post.weight.copy_(0.5 * torch.randn(post.weight.shape, generator=gen))
    return facade


def _hooked_loss(facade, tokens: torch.Tensor, neurons: torch.Tensor, values: torch.Tensor
                 ) -> torch.Tensor:
    """CE [B, T-1] (float64) of the full forward with `neurons`' hook_post set to values."""
    def replace(act, hook):
        act[..., neurons] = values[neurons].to(act.dtype)
        return act

    with torch.no_grad():
        return token_losses(facade.run_with_hooks(tokens, [(facade.hook_post, replace)]),
                            tokens)


@pytest.mark.parametrize("family,tied", [("gpt2", True), ("neox", False), ("llama", False),
                                         ("llama", True), ("gemma", True)])
def test_group_closed_form_equals_hooked_forward(family, tied):
    seed = {"gpt2": 1, "neox": 2, "llama": 3, "gemma": 5}[family] + 10 * tied
    facade = _model(family, tied, seed)
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (2, 10), generator=gen)
    with torch.no_grad():
        final = facade.forward_final(tokens)
    r, t = torch.meshgrid(torch.arange(2), torch.arange(9), indexing="ij")
    r, t = r.reshape(-1), t.reshape(-1)
    resid, acts, targets = final.resid[r, t], final.post[r, t], tokens[r, t + 1]
    mu = final.post.reshape(-1, D_MLP).mean(0).double()
    groups = torch.stack([torch.randperm(D_MLP, generator=gen)[:6] for _ in range(3)])
    op = closed_form_for(facade, dtype=torch.float64)  # Gemma: with its post-MLP norm
    clean, nec = ablate_groups(op, resid, acts, targets, mu, groups, block_elements=2 * 18 *
                               VOCAB)  # two groups per block: the blocking is exercised
    all_abl, suf = restore_groups(op, resid, acts, targets, mu, groups,
                                  block_elements=5 * VOCAB)  # 5 positions per block
    ref_clean = _hooked_loss(facade, tokens, torch.tensor([], dtype=torch.long), mu)[r, t]
    assert (clean - ref_clean).abs().max() <= TOL
    for g, group in enumerate(groups):
        ref = _hooked_loss(facade, tokens, group, mu)[r, t]
        err = (clean + nec[g] - ref).abs().max().item()
        assert err <= TOL, f"necessity, group {g}: {err:.3g} nats"
        others = torch.tensor(sorted(set(range(D_MLP)) - set(group.tolist())))
        ref_suf = _hooked_loss(facade, tokens, others, mu)[r, t]
        err = (all_abl + suf[g] - ref_suf).abs().max().item()
        assert err <= TOL, f"sufficiency, group {g}: {err:.3g} nats"
    ref_all = _hooked_loss(facade, tokens, torch.arange(D_MLP), mu)[r, t]
    assert (all_abl - ref_all).abs().max() <= TOL
    # the interventions are not trivially small, and a group of one is the single-neuron form
    assert nec.abs().max() > 0.05 and (all_abl - clean).abs().max() > 0.05
    one = ablate_groups(op, resid, acts, targets, mu, groups[:, :1])[1]
    single = closed_form_delta(op, resid, acts, targets, mu)
    torch.testing.assert_close(one.T, single[:, groups[:, 0]].double(), atol=1e-5, rtol=0)


def test_float32_blocks_stay_within_float64_and_inputs_are_checked():
    facade = _model("gpt2", True, 4)
    tokens = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        final = facade.forward_final(tokens)
    resid, acts, targets = final.resid[0, :-1], final.post[0, :-1], tokens[0, 1:]
    mu = acts.mean(0)
    groups = torch.arange(40).reshape(5, 8)
    ops = [prepare_closed_form(facade.W_out, facade.W_U, facade.b_U, facade.final_norm,
                               dtype=dt) for dt in (torch.float64, torch.float32)]
    for fn in (ablate_groups, restore_groups):
        ref, got = (fn(op, resid, acts, targets, mu, groups)[1] for op in ops)
        assert (got - ref).abs().max() < 2e-5
    with pytest.raises(BadInputError, match="over all 40 neurons"):
        sub = prepare_closed_form(facade.W_out, facade.W_U, facade.b_U, facade.final_norm,
                                  neurons=[0, 1, 2])
        ablate_groups(sub, resid, acts, targets, mu, groups)
    with pytest.raises(BadInputError, match="groups"):
        ablate_groups(ops[0], resid, acts, targets, mu, groups + 1)
