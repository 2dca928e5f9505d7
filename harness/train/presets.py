"""Model presets for the self-trained fixture models.

The fixtures must fit a 40 MB git budget with >= 4 checkpoints each, so they are tiny:
d_model 48, 4 layers, d_mlp 512 (the final MLP keeps >= 512 neurons for the neuron analyses),
the full GPT-2 vocabulary (rare tokens are the point) and *tied* input/output embeddings.
Pythia unties them; tying `tiny-pythia` is a documented deviation: an untied 50257 x 48
unembedding would double every checkpoint. `micro-*` presets exist only for CI smoke tests.

`tiny-pythia-learned` is the fixture on which the claims are testable (issue 14): the same
block design with a 4,096-type byte-level BPE trained on the corpus (fixtures/tokenizer/
corpus-bpe4096, harness.data.bpe), so rare types occur often enough to be learned, and
Pythia's *untied* unembedding (4,096 x 64 is cheap).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.errors import BadInputError

GPT2_VOCAB = 50257
GPT2_EOS = 50256  # <|endoftext|> is BOS, EOS and pad for GPT-2 BPE


@dataclass(frozen=True)
class Preset:
    name: str
    family: str  # 'gpt2' | 'neox'
    d_model: int
    n_layers: int
    n_heads: int
    d_mlp: int
    n_ctx: int
    vocab_size: int = GPT2_VOCAB
    tokenizer: str = "gpt2"  # 'gpt2' (committed GPT-2 BPE) or a fixtures/tokenizer/<name> BPE
    tied: bool = True

    @property
    def eos_id(self) -> int:
        """<|endoftext|>: BOS = EOS = pad; id 50256 in GPT-2's BPE, 0 in a corpus BPE."""
        return GPT2_EOS if self.tokenizer == "gpt2" else 0

    @property
    def tokenizer_label(self) -> str:
        return "GPT-2 BPE" if self.tokenizer == "gpt2" else f"byte-level BPE `{self.tokenizer}`"

    def hf_config(self):
        """A transformers config; dropout is off so training is a pure function of the seed."""
        special = dict(bos_token_id=self.eos_id, eos_token_id=self.eos_id,
                       tie_word_embeddings=self.tied)
        if self.family == "gpt2":
            from transformers import GPT2Config

            return GPT2Config(vocab_size=self.vocab_size, n_embd=self.d_model,
                              n_layer=self.n_layers, n_head=self.n_heads, n_inner=self.d_mlp,
                              n_positions=self.n_ctx, resid_pdrop=0.0, embd_pdrop=0.0,
                              attn_pdrop=0.0, **special)
        from transformers import GPTNeoXConfig

        # Pythia: parallel attention + MLP, rotary on 25% of each head's dims.
        return GPTNeoXConfig(vocab_size=self.vocab_size, hidden_size=self.d_model,
                             num_hidden_layers=self.n_layers, num_attention_heads=self.n_heads,
                             intermediate_size=self.d_mlp, max_position_embeddings=self.n_ctx,
                             rotary_pct=0.25, use_parallel_residual=True, hidden_dropout=0.0,
                             attention_dropout=0.0, **special)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("tiny-gpt2", "gpt2", d_model=48, n_layers=4, n_heads=6, d_mlp=512, n_ctx=256),
        Preset("tiny-pythia", "neox", d_model=48, n_layers=4, n_heads=6, d_mlp=512, n_ctx=256),
        Preset("tiny-pythia-learned", "neox", d_model=64, n_layers=4, n_heads=4, d_mlp=512,
               n_ctx=256, vocab_size=4096, tokenizer="corpus-bpe4096", tied=False),
        Preset("micro-pythia-bpe", "neox", d_model=16, n_layers=2, n_heads=2, d_mlp=32,
               n_ctx=32, vocab_size=4096, tokenizer="corpus-bpe4096", tied=False),
        Preset("micro-gpt2", "gpt2", d_model=16, n_layers=2, n_heads=2, d_mlp=32, n_ctx=32),
        Preset("micro-pythia", "neox", d_model=16, n_layers=2, n_heads=2, d_mlp=32, n_ctx=32),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise BadInputError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def build_model(preset: Preset, seed: int) -> torch.nn.Module:
    """Freshly initialised fp32 model; the same (preset, seed) gives bit-identical weights.

    The init draws from a forked RNG so building a model never disturbs the caller's RNG.
    """
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(preset.hf_config(), dtype=torch.float32)
    return model
