"""A tiny GPT-2 with a hand-wired plateau: the positive control for claims 1 and 2 on a real
forward pass and real neuron ablations (issue 19.7), as planted_head is for claim 3.

Why hand-wired: a random model has no plateau we could know about, and a trained one has no
ground truth. Here every rare-token embedding carries a flag direction `r` with a per-token
strength; `n_plateau` final-layer MLP neurons read `r` (similar gains, a negative bias: they
fire at rare positions only, and their activations co-vary with the strength) and write a
direction `u` that raises the logits of every common token - a back-off to the frequent
vocabulary where the current token is rare. In the data every target is drawn from one
unigram distribution (common tokens 95% of the mass, while the model spreads ~80% over its 383
rare types), so the back-off lowers the loss at rare positions, and mean-ablating any one plateau
neuron raises it there by a similar amount: a flat plateau of similar influences, absent at
common positions (claim 1 'supported'), made of neurons that co-activate as one module
(claim 2 'refuted').

Everything else that reads or writes the residual stream (the unembedding included) has `r`,
its padding twin `pad` and `u` projected out, so rare tokens differ from common ones only
through the plateau. With `planted=False` nobody reads `r`: the same weights and data, and
every forward pass at a rare position is the one a common token with the same random
embedding would get - rare and common positions are exchangeable up to which random 383 of
the 511 token types are rare (a near-exact null).

torch lives here because this module *builds* a model (a fixture builder, like train/).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from harness.models.planted_head import (_embeddings_without, _orthonormal_zero_mean,
                                         _project_out, _token_mask)

BOS = 0  # token 0 opens every row and is neither rare nor common


@dataclass(frozen=True)
class PlantedPlateau:
    model: GPT2LMHeadModel      # eval mode
    rare_tokens: np.ndarray     # token ids carrying the flag r
    common_tokens: np.ndarray   # every other id but BOS: the tokens u raises
    plateau: np.ndarray         # final-layer MLP neuron ids wired to read r and write u
    planted: bool               # False: the control, nobody reads r
    rare_rate: float            # share of positions that draw a rare token

    def rows(self, n_rows: int, seq_len: int, seed: int) -> np.ndarray:
        """int64 [n_rows, seq_len]: BOS, then i.i.d. tokens - rare (uniform over the rare
        types) with probability `rare_rate`, else common (uniform).

        Why i.i.d.: the target of every position comes from the same distribution, so rare
        and common positions differ only in what the model does with the current token - what
        the plateau wiring changes - and for the control they are exchangeable."""
        rng = np.random.default_rng(seed)
        rare = rng.random((n_rows, seq_len)) < self.rare_rate
        out = np.where(rare, rng.choice(self.rare_tokens, (n_rows, seq_len)),
                       rng.choice(self.common_tokens, (n_rows, seq_len)))
        out[:, 0] = BOS
        return out.astype(np.int64)


@torch.no_grad()
def planted_plateau_model(vocab: int = 512, d_model: int = 32, n_layers: int = 2,
                          n_heads: int = 4, n_ctx: int = 64, d_mlp: int = 512,
                          planted: bool = True, n_plateau: int = 12, n_rare: int = 383,
                          rare_rate: float = 0.05, flag: float = 8.0,
                          share: tuple[float, float] = (0.25, 0.75), read: float = 1.5,
                          bias: float = -1.5, own: float = 1.0, write: float = 0.35,
                          gain: tuple[float, float] = (0.3, 3.0), others_write: float = 0.25,
                          unembed: float = 0.35, init_std: float = 0.2,
                          seed: int = 0) -> PlantedPlateau:
    """Build the model (`planted=False`: the control, the plateau neurons do not read r).

    `n_rare` of the `vocab` - 1 non-BOS types are rare, drawn together at `rare_rate` of the
    positions: many types, each seldom seen, as in real text, and most of the model's own
    mass on them, so the back-off gains a lot and the plateau's influence stands well above
    the other neurons' noise at ~120 rare positions.

    Every token's embedding carries a flag block of norm `flag` in span(r, pad): a rare token
    has a share s ~ U(`share`) of it along r (its strength; it varies so that the plateau
    neurons' activations co-vary across rare positions), a common token none. The norm is the
    same for every token, so no LayerNorm scale depends on s or rarity (a flag whose norm grew
    with s made the plateau anti-correlated with every other neuron, and claim 2's matched
    null then found no neuron like its members).

    Plateau neurons: weight `read` on r (x a gain in 0.9-1.1: similar, not equal), bias
    `bias` (silent at common positions), a random read of the rest scaled by `own` (so they
    also share the layer's ordinary co-activation), output `write` along u alone. The other
    final-layer neurons read with random gains in `gain` and biases in [-3, 3] - dense, sparse
    and between, so the layer holds neurons as active and as variable as the plateau ones
    (claim 2's matched null) - and write `others_write` x their random init (small, so their
    influences at ~120 rare positions stay below the plateau's even as noise: claim 1's
    loss-matched control compares two such small sets). `unembed` is the s.d. of the untied
    unembedding: large enough that the common positions' losses spread over the rare ones' (the
    loss-matched control needs partners).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = GPT2Config(vocab_size=vocab, n_embd=d_model, n_layer=n_layers, n_head=n_heads,
                     n_positions=n_ctx, n_inner=d_mlp, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, initializer_range=init_std, tie_word_embeddings=False)
    model = GPT2LMHeadModel(cfg).eval()
    tr = model.transformer
    r, pad, u = _orthonormal_zero_mean(rng, d_model, 3)
    special = (r, pad, u)
    others = np.arange(1, vocab)
    rare = np.sort(rng.choice(others, n_rare, replace=False))
    common = np.setdiff1d(others, rare)
    is_rare = _token_mask(vocab, rare)
    f32 = lambda v: torch.as_tensor(v, dtype=torch.float32)  # noqa: E731

    # embeddings: a random part without the special directions, plus the flag block
    wte, wpe = _embeddings_without(rng, vocab, n_ctx, d_model, special)
    s = f32(rng.uniform(*share, size=vocab)) * is_rare
    wte += flag * (s[:, None] * f32(r)[None, :] + torch.sqrt(1 - s * s)[:, None] * f32(pad))
    tr.wte.weight.copy_(wte)
    tr.wpe.weight.copy_(wpe)

    # nobody reads or writes the special directions ...
    for block in tr.h:
        for v in special:
            _project_out(block.attn.c_attn.weight, v, 0)
            _project_out(block.mlp.c_fc.weight, v, 0)
            _project_out(block.attn.c_proj.weight, v, 1)
            _project_out(block.mlp.c_proj.weight, v, 1)

    # ... except the plateau neurons: they read r (planted only) and write u alone, so their
    # influences are alike; the other neurons get varied read gains, biases (see above)
    mlp = tr.h[-1].mlp
    plateau = np.sort(rng.choice(d_mlp, n_plateau, replace=False))
    idx = torch.as_tensor(plateau)
    scale = rng.uniform(*gain, size=d_mlp)
    scale[plateau] = own
    offset = rng.uniform(-3.0, 3.0, size=d_mlp)
    offset[plateau] = bias
    gains = f32(rng.uniform(0.9, 1.1, size=n_plateau))   # drawn either way: one model
    mlp.c_fc.weight.mul_(f32(scale)[None, :])
    mlp.c_fc.bias.copy_(f32(offset))
    if planted:
        mlp.c_fc.weight[:, idx] += read * f32(r)[:, None] * gains[None, :]
    mlp.c_proj.weight.mul_(others_write)
    mlp.c_proj.weight[idx] = write * f32(u)[None, :]

    # untied unembedding: random rows blind to the special directions, every common token
    # raised along u (which only the plateau writes)
    w_u = f32(unembed * rng.normal(size=(vocab, d_model)))
    for v in special:
        _project_out(w_u, v, 1)
    w_u += _token_mask(vocab, common)[:, None].float() * f32(u)[None, :]
    model.lm_head.weight.copy_(w_u)
    return PlantedPlateau(model=model, rare_tokens=rare, common_tokens=common,
                          plateau=plateau, planted=planted, rare_rate=rare_rate)
