"""Exact single-query head ablation at the cost of one partial forward per (head, row).

Why it is exact: under causal attention, ablating head h of layer L at query t alone changes
nothing at positions s < t, so in every later layer position t sees the *clean* keys and
values of s < t plus its own new key and value at s = t. All queries of a row are therefore
computed at once: layer L runs with the head ablated at every query (its keys and values come
from the unchanged clean residual, so query t's output is exactly the single-query one), and
each later layer takes its attention scores' off-diagonal from (new query x clean keys) and
the diagonal from (new query x own new key), values mixed the same way. One forward of T
positions replaces T prefix forwards (~T^2/2 token-layers); the prefix method in
`harness.ablation.heads` stays as the reference the tests compare against.

The layers are computed here from the HF modules' weights (projections, norms, rotary and MLP
modules are called as they are), for GPT-2, GPT-NeoX (partial rotary, parallel residual) and
Llama (rotary, grouped-query attention) and Gemma-3 text (q/k norms, per-layer-type rotary,
sliding windows, post-norms). Other families use the prefix method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

FAMILIES = ("gpt2", "neox", "llama", "gemma")


def supports(facade: Any) -> bool:
    """True where the joint construction is implemented (and tested) for the family: Gemma's
    attention-logit soft-capping is not modelled, so such a config uses the prefix method."""
    if getattr(facade, "family", None) not in FAMILIES:
        return False
    return getattr(facade.hf_model.config, "attn_logit_softcapping", None) is None


def _orig(module: Any) -> Any:
    """The HF module behind a bridge wrapper (TransformerBridge wraps HF submodules)."""
    return getattr(module, "original_component", module)


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _softmax(x: Tensor) -> Tensor:
    """Softmax in at least float32 (HF's attention does the same for half precisions)."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return torch.softmax(x.float(), -1).to(x.dtype)
    return torch.softmax(x, -1)


def _rope(x: Tensor, cos: Tensor, sin: Tensor, dims: int) -> Tensor:
    """Rotary embedding on the first `dims` of the head dimension ([N, H, T, dh] with cos/sin
    [N, T, dims]), the rest passed through (NeoX's partial rotary)."""
    cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)
    rot, rest = x[..., :dims], x[..., dims:]
    out = rot * cos + _rotate_half(rot) * sin
    return out if dims == x.shape[-1] else torch.cat((out, rest), dim=-1)


@dataclass
class Edit:
    """Head `heads[e]` of batch element e gets output `fill[e]` ([N, dh]; None: v at position 0,
    i.e. the one-hot-on-BOS attention row) at every query."""

    heads: Tensor
    fill: Tensor | None


class Stack:
    """The layers of one model as functions of the residual stream, per family."""

    def __init__(self, facade: Any) -> None:
        if not supports(facade):
            raise ValueError(f"joint single-query ablation supports {FAMILIES}, "
                             f"not {facade.family!r}")
        self.facade = facade
        self.family = facade.family
        hf = facade.hf_model
        cfg = hf.config
        self.n_heads = facade.n_heads
        if self.family == "gpt2":
            self.layers = [_orig(b) for b in hf.transformer.h]
            self.d_head = facade.d_model // self.n_heads
            self.n_kv = self.n_heads
            self.rotary = None
            self.parallel = False
        elif self.family == "neox":
            self.layers = [_orig(b) for b in hf.gpt_neox.layers]
            self.d_head = facade.d_model // self.n_heads
            self.n_kv = self.n_heads
            self.rotary = _orig(hf.gpt_neox.rotary_emb)
            self.parallel = bool(cfg.use_parallel_residual)
        else:  # llama, gemma
            self.layers = [_orig(b) for b in hf.model.layers]
            self.d_head = int(getattr(cfg, "head_dim", None) or facade.d_model // self.n_heads)
            self.n_kv = int(getattr(cfg, "num_key_value_heads", None) or self.n_heads)
            self.rotary = _orig(hf.model.rotary_emb)
            self.parallel = False
        self.cfg = cfg
        types = getattr(cfg, "layer_types", None) if self.family == "gemma" else None
        self.layer_types = list(types) if types else [None] * len(self.layers)

    # ---- attention pieces ---------------------------------------------------------------
    def _scale(self, layer: int) -> float:
        if self.family == "gpt2":
            s = self.d_head ** -0.5 if getattr(self.cfg, "scale_attn_weights", True) else 1.0
            if getattr(self.cfg, "scale_attn_by_inverse_layer_idx", False):
                s /= float(layer + 1)
            return s
        if self.family == "gemma":
            return float(self.cfg.query_pre_attn_scalar) ** -0.5
        return self.d_head ** -0.5

    def _window(self, layer: int) -> int | None:
        """Sliding-window width of a Gemma local layer (key s visible to query t iff
        t - s < window), None for global attention."""
        if self.layer_types[layer] == "sliding_attention":
            return int(self.cfg.sliding_window)
        return None

    def _mask(self, layer: int, t: int, device: Any, diagonal: int) -> Tensor:
        """True where query row may NOT see key column: s > t - 1 + diagonal, or outside the
        sliding window."""
        mask = torch.ones(t, t, dtype=torch.bool, device=device).triu(diagonal)
        window = self._window(layer)
        if window is not None:
            mask |= torch.ones(t, t, dtype=torch.bool, device=device).tril(-window)
        return mask

    def _qkv(self, layer: int, x: Tensor, rope: tuple[Tensor, Tensor] | None):
        """(q [N, H, T, dh], k [N, Hkv, T, dh], v [N, Hkv, T, dh]) of the block's attention input
        (rotary applied), from the residual x [N, T, d]."""
        blk = self.layers[layer]
        n, t, _ = x.shape
        if self.family == "gpt2":
            h = _orig(blk.ln_1)(x)
            q, k, v = _orig(blk.attn.c_attn)(h).split(self.facade.d_model, dim=-1)
            split = lambda a: a.view(n, t, self.n_heads, self.d_head).transpose(1, 2)
            return split(q), split(k), split(v)
        if self.family == "neox":
            h = _orig(blk.input_layernorm)(x)
            qkv = _orig(blk.attention.query_key_value)(h)
            qkv = qkv.view(n, t, self.n_heads, 3 * self.d_head).transpose(1, 2)
            q, k, v = qkv.chunk(3, dim=-1)
            dims = rope[0].shape[-1]
            return _rope(q, *rope, dims), _rope(k, *rope, dims), v
        h = _orig(blk.input_layernorm)(x)
        attn = blk.self_attn
        q = _orig(attn.q_proj)(h).view(n, t, self.n_heads, self.d_head).transpose(1, 2)
        k = _orig(attn.k_proj)(h).view(n, t, self.n_kv, self.d_head).transpose(1, 2)
        v = _orig(attn.v_proj)(h).view(n, t, self.n_kv, self.d_head).transpose(1, 2)
        if self.family == "gemma":
            q, k = _orig(attn.q_norm)(q), _orig(attn.k_norm)(k)
            rope = rope[self.layer_types[layer]]
        dims = rope[0].shape[-1]
        return _rope(q, *rope, dims), _rope(k, *rope, dims), v

    def _out(self, layer: int, z: Tensor) -> Tensor:
        """Attention output [N, T, d] from z [N, H, T, dh]."""
        blk = self.layers[layer]
        n, _, t, _ = z.shape
        z = z.transpose(1, 2).reshape(n, t, self.n_heads * self.d_head)
        if self.family == "gpt2":
            return _orig(blk.attn.c_proj)(z)
        if self.family == "neox":
            return _orig(blk.attention.dense)(z)
        return _orig(blk.self_attn.o_proj)(z)

    def _mlp(self, layer: int, x_attn_in: Tensor, x_mid: Tensor) -> tuple[Tensor, Tensor]:
        """(MLP output, hook_post) of a block: the MLP reads x_mid (sequential) or the block
        input (NeoX parallel residual)."""
        blk = self.layers[layer]
        if self.family == "gpt2":
            mlp = _orig(blk.mlp)
            post = _orig(mlp.act)(_orig(mlp.c_fc)(_orig(blk.ln_2)(x_mid)))
            return _orig(mlp.c_proj)(post), post
        if self.family == "neox":
            mlp = _orig(blk.mlp)
            src = x_attn_in if self.parallel else x_mid
            h = _orig(blk.post_attention_layernorm)(src)
            post = _orig(mlp.act)(_orig(mlp.dense_h_to_4h)(h))
            return _orig(mlp.dense_4h_to_h)(post), post
        mlp = _orig(blk.mlp)
        norm = blk.pre_feedforward_layernorm if self.family == "gemma" \
            else blk.post_attention_layernorm
        h = _orig(norm)(x_mid)
        post = _orig(mlp.act_fn)(_orig(mlp.gate_proj)(h)) * _orig(mlp.up_proj)(h)
        out = _orig(mlp.down_proj)(post)
        if self.family == "gemma":
            out = _orig(blk.post_feedforward_layernorm)(out)
        return out, post

    def _block(self, layer: int, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """(block output, hook_post) given its input x and attention z [N, H, T, dh]."""
        attn = self._out(layer, z)
        if self.family == "gemma":
            attn = _orig(self.layers[layer].post_attention_layernorm)(attn)
        if self.parallel:
            mlp, post = self._mlp(layer, x, x)
            return x + attn + mlp, post
        mid = x + attn
        mlp, post = self._mlp(layer, x, mid)
        return mid + mlp, post

    def rope(self, x: Tensor) -> tuple[Tensor, Tensor] | None:
        """(cos, sin) [N, T, rotary dims] for positions 0..T-1, from the model's own module."""
        if self.rotary is None:
            return None
        pos = torch.arange(x.shape[1], device=x.device)[None].expand(x.shape[0], -1)
        if self.family == "gemma":  # local and global layers rotate with their own bases
            return {kind: self.rotary(x, pos, kind) for kind in set(self.layer_types)}
        cos, sin = self.rotary(x, pos)
        return cos, sin

    def _expand(self, kv: Tensor) -> Tensor:
        """Grouped-query attention: [N, Hkv, T, dh] -> [N, H, T, dh]."""
        rep = self.n_heads // self.n_kv
        return kv if rep == 1 else kv.repeat_interleave(rep, dim=1)

    # ---- the two kinds of layer ---------------------------------------------------------
    def causal_layer(self, layer: int, x: Tensor, rope, edit: Edit | None = None,
                     keep_kv: bool = False):
        """Ordinary causal layer, optionally with heads replaced at every query (the ablated
        layer). Returns (output, hook_post, (k, v) or None)."""
        q, k, v = self._qkv(layer, x, rope)
        kf, vf = self._expand(k), self._expand(v)
        t = x.shape[1]
        scores = torch.matmul(q, kf.transpose(-1, -2)) * self._scale(layer)
        scores = scores.masked_fill(self._mask(layer, t, x.device, 1), float("-inf"))
        z = torch.matmul(_softmax(scores), vf)
        if edit is not None:
            e = torch.arange(len(edit.heads), device=x.device)
            h = edit.heads.to(x.device)
            if edit.fill is None:  # one-hot on position 0: z = v_0 of that head
                z[e, h] = vf[e, h, 0][:, None, :].expand(-1, t, -1)
            else:
                z[e, h] = edit.fill.to(x.device, z.dtype)[:, None, :].expand(-1, t, -1)
        out, post = self._block(layer, x, z)
        return out, post, ((k, v) if keep_kv else None)

    def own_key_layer(self, layer: int, x: Tensor, rope, k_clean: Tensor,
                      v_clean: Tensor) -> tuple[Tensor, Tensor]:
        """Layer after the ablated one: query t attends to the clean keys/values of s < t and
        to its own new key/value at s = t (what a single-query ablation at t leaves)."""
        q, k, v = self._qkv(layer, x, rope)
        kc, vc = self._expand(k_clean), self._expand(v_clean)
        kf, vf = self._expand(k), self._expand(v)
        t = x.shape[1]
        scale = self._scale(layer)
        off = torch.matmul(q, kc.transpose(-1, -2)) * scale
        off = off.masked_fill(self._mask(layer, t, x.device, 0), float("-inf"))
        diag = (q * kf).sum(-1, keepdim=True) * scale
        p = _softmax(torch.cat((off, diag), -1))
        z = torch.matmul(p[..., :t], vc) + p[..., t:] * vf
        return self._block(layer, x, z)


    # ---- a whole partial forward --------------------------------------------------------
    def clean_from(self, layer: int, x: Tensor) -> tuple[Tensor, Tensor, list]:
        """Clean run from `layer` on its residual input x: (last hook_post, last residual,
        [(k, v) of every later layer]) - the baseline the deltas are taken against, computed
        with the same arithmetic as the ablated runs."""
        rope = self.rope(x)
        kv = []
        post = None
        for l in range(layer, len(self.layers)):
            x, post, pair = self.causal_layer(l, x, rope, keep_kv=l > layer)
            if l > layer:
                kv.append(pair)
        return post, x, kv

    def single_query_from(self, layer: int, x: Tensor, edit: Edit,
                          kv: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        """(last hook_post, last residual) [N, T, .] where position t holds the result of
        ablating edit.heads at query t alone. kv: the clean (k, v) of layers > `layer` for
        these N rows (from `clean_from`)."""
        rope = self.rope(x)
        x, post, _ = self.causal_layer(layer, x, rope, edit=edit)
        for (k, v), l in zip(kv, range(layer + 1, len(self.layers))):
            x, post = self.own_key_layer(l, x, rope, k, v)
        return post, x
