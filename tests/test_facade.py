"""ModelFacade on tiny random GPT-2 / GPT-NeoX (parallel residual, rotary) / Llama (tied) models.

The closed-form ablation trusts three identities checked here: the facade's logits are the HF
model's, `final_norm(resid_post) @ W_U + b_U` reproduces them, and `hook_post @ W_out + b_out`
is the last MLP's output.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import (GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM,
                          LlamaConfig, LlamaForCausalLM)

from harness.data.tokenizer import gpt2_tokenizer
from harness.errors import BadInputError
from harness.models.facade import FinalLayer, ModelFacade, NormSpec

V = 50257
ATOL = 1e-4


def _tiny(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64,
                                           vocab_size=V))
    elif family == "neox":
        model = GPTNeoXForCausalLM(GPTNeoXConfig(
            num_hidden_layers=2, num_attention_heads=2, hidden_size=32, intermediate_size=128,
            max_position_embeddings=64, vocab_size=V, rotary_pct=0.25,
            use_parallel_residual=True, tie_word_embeddings=False, bos_token_id=0,
            eos_token_id=0))
    else:
        model = LlamaForCausalLM(LlamaConfig(
            num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, hidden_size=32,
            intermediate_size=96, max_position_embeddings=64, vocab_size=V,
            tie_word_embeddings=True))
    with torch.no_grad():  # non-trivial norm affines, so a forgotten gamma/beta shows up
        for name, p in model.named_parameters():
            if "norm" in name or "ln" in name:
                p.add_(0.2 * torch.randn_like(p))
    return model.eval()


CASES = [("gpt2", "raw"), ("neox", "raw"), ("llama", "raw"),
         ("gpt2", "tl-default"), ("neox", "tl-default"), ("llama", "tl-default")]


@pytest.fixture(scope="module", params=CASES, ids=[f"{f}-{p}" for f, p in CASES])
def case(request):
    family, processing = request.param
    model = _tiny(family)
    tokens = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(tokens).logits.clone()  # before any in-place TL processing
    facade = ModelFacade.from_hf(model, gpt2_tokenizer(), name=f"tiny-{family}",
                                 processing=processing, step=7)
    return facade, tokens, reference, facade.forward_final(tokens)


def test_shapes_and_metadata(case):
    facade, tokens, _, final = case
    assert isinstance(final, FinalLayer)
    assert facade.n_layers == 2 and facade.d_model == 32 and facade.d_vocab == V
    assert facade.d_mlp == (96 if facade.family == "llama" else 128)
    assert final.post.shape == (2, 12, facade.d_mlp)
    assert final.resid.shape == (2, 12, 32)
    assert final.logits.shape == (2, 12, V)
    assert facade.W_out.shape == (facade.d_mlp, 32)
    assert facade.W_U.shape == (32, V) and facade.b_U.shape == (V,)
    assert final.logits.dtype == torch.float32 and not final.logits.requires_grad
    assert facade.hook_post == "blocks.1.mlp.hook_post"
    assert facade.hook_resid_post == "blocks.1.hook_resid_post"
    for kind in ("z", "pattern"):
        assert facade.attn_hook(0, kind) in facade.bridge.hook_dict
    info = facade.info()
    assert info["processing"] == facade.processing and info["step"] == 7
    assert info["dtype"] == "float32" and len(info["weights_sha"]) == 64


def test_logits_match_hf(case):
    facade, tokens, reference, final = case
    if facade.processing == "raw":
        torch.testing.assert_close(final.logits, reference, atol=ATOL, rtol=0)
    else:  # centring the unembedding shifts each position's logits by a constant
        shift = final.logits - reference
        torch.testing.assert_close(shift, shift.mean(-1, keepdim=True).expand_as(shift),
                                   atol=ATOL, rtol=0)
    ce = lambda z: F.cross_entropy(z[:, :-1].reshape(-1, V), tokens[:, 1:].reshape(-1))
    assert abs(ce(final.logits).item() - ce(reference).item()) < ATOL


def test_logits_recomputed_from_resid_post(case):
    facade, _, _, final = case
    recomputed = facade.final_norm.apply(final.resid) @ facade.W_U + facade.b_U
    torch.testing.assert_close(recomputed, final.logits, atol=ATOL, rtol=0)


def test_post_times_W_out_is_mlp_output(case):
    facade, tokens, _, final = case
    seen = {}
    facade.run_with_hooks(tokens, [("blocks.1.hook_mlp_out",
                                    lambda act, hook: seen.setdefault("mlp", act.detach()))])
    torch.testing.assert_close(final.post @ facade.W_out + facade.b_out, seen["mlp"],
                               atol=ATOL, rtol=0)


def test_family_specifics(case):
    facade, *_ = case
    norm = facade.final_norm
    raw = facade.processing == "raw"
    if facade.family == "gpt2":
        assert norm.kind == "layernorm" and norm.eps == 1e-5
        assert facade.newline_token_id == 198 and facade.bos_token_id == 50256
        assert facade.tied_unembedding is raw  # centring the unembedding unties it
    elif facade.family == "neox":
        assert norm.kind == "layernorm" and not facade.tied_unembedding
        assert facade.newline_token_id is None
    else:
        assert norm.kind == "rmsnorm" and norm.beta is None and norm.eps == 1e-6
        assert facade.tied_unembedding is raw
        assert not facade.b_U.any()
    if not raw:  # TL folding moves gamma into W_U
        torch.testing.assert_close(norm.gamma, torch.ones_like(norm.gamma))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normspec_matches_torch(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 16, generator=g, dtype=dtype) * 3 + 1
    gamma, beta = torch.randn(16, generator=g), torch.randn(16, generator=g)
    ln = NormSpec("layernorm", gamma, beta, 1e-5).apply(x)
    assert ln.dtype == dtype
    torch.testing.assert_close(ln, F.layer_norm(x, (16,), gamma.to(dtype), beta.to(dtype), 1e-5))
    rms = NormSpec("rmsnorm", gamma, None, 1e-6).apply(x)
    torch.testing.assert_close(rms, F.rms_norm(x, (16,), gamma.to(dtype), 1e-6))
    with pytest.raises(BadInputError):
        NormSpec("batchnorm", gamma, None, 1e-5).apply(x)


def test_bad_inputs(case):
    facade, *_ = case
    with pytest.raises(BadInputError):
        facade.attn_hook(0, "q")
    with pytest.raises(BadInputError):
        facade.attn_hook(2, "z")


def test_unsupported_architecture_and_processing():
    from transformers import OPTConfig, OPTForCausalLM

    opt = OPTForCausalLM(OPTConfig(num_hidden_layers=1, hidden_size=16, ffn_dim=32,
                                   num_attention_heads=2, vocab_size=V, word_embed_proj_dim=16))
    with pytest.raises(BadInputError, match="not supported"):
        ModelFacade.from_hf(opt, gpt2_tokenizer(), name="opt")
    with pytest.raises(BadInputError, match="processing"):
        ModelFacade.from_hf(_tiny("gpt2"), gpt2_tokenizer(), name="x", processing="folded")
