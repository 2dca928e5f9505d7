"""A tiny GPT-2 with one hand-wired routing head: the positive control for claim 3 on a real
forward pass (not just synthetic arrays).

Why hand-wired: a random model has no routing head we could know about, and a trained one has
no ground truth. Here one head (default layer 0, head 1) reads a "rare" flag direction `r` that
only rare-token embeddings carry, attends from rare queries to rare keys (itself included), and
writes a direction `w` that only the plateau neurons of the final MLP read. Ablating that head
therefore moves the plateau neurons much more at rare positions than at common ones, and more
than random neurons. Every other weight has `r`, its common-token twin and `w` projected out of
its input, so rare tokens differ from common ones only through that head. With `planted=None`
nothing reads the flags: rare and common contexts are exchangeable, an exact null.

torch lives here because this module *builds* a model (a fixture builder, like train/); the
routing analysis itself stays numpy-only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel


@dataclass(frozen=True)
class PlantedModel:
    model: GPT2LMHeadModel          # eval mode
    rare_tokens: np.ndarray         # token ids carrying the rare flag
    plateau: np.ndarray             # final-layer MLP neuron ids that read the routed direction
    planted: tuple[int, int] | None  # (layer, head) wired to route; None for the control


def _orthonormal_zero_mean(rng: np.random.Generator, d: int, k: int) -> list[np.ndarray]:
    """k random orthonormal directions, all orthogonal to the all-ones vector (LayerNorm's mean
    removal leaves them alone)."""
    basis = [np.ones(d) / np.sqrt(d)]
    for _ in range(k):
        v = rng.normal(size=d)
        for u in basis:
            v -= (v @ u) * u
        basis.append(v / np.linalg.norm(v))
    return basis[1:]


def _project_out(weight: torch.Tensor, direction: np.ndarray, dim: int) -> None:
    """Remove `direction` from the input (dim=0) or output (dim=1) space of a Conv1D weight."""
    u = torch.as_tensor(direction, dtype=weight.dtype)
    if dim == 0:
        weight -= torch.outer(u, u @ weight)
    else:
        weight -= torch.outer(weight @ u, u)


def _token_mask(vocab: int, ids: np.ndarray) -> torch.Tensor:
    """bool [vocab]: True at the given token ids."""
    mask = torch.zeros(vocab, dtype=torch.bool)
    mask[torch.as_tensor(ids)] = True
    return mask


def _embeddings_without(rng: np.random.Generator, vocab: int, n_ctx: int, d_model: int,
                        directions) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token and position embeddings (float32) with `directions` projected out, so only
    what a builder adds along them afterwards is carried there."""
    wte = torch.as_tensor(rng.normal(size=(vocab, d_model)), dtype=torch.float32)
    wpe = torch.as_tensor(0.5 * rng.normal(size=(n_ctx, d_model)), dtype=torch.float32)
    for emb in (wte, wpe):
        for u in directions:
            _project_out(emb, u, 1)
    return wte, wpe


@torch.no_grad()
def planted_routing_model(vocab: int = 512, d_model: int = 32, n_layers: int = 2,
                          n_heads: int = 4, n_ctx: int = 64,
                          planted: tuple[int, int] | None = (0, 1), n_plateau: int = 8,
                          n_rare: int = 256, flag: float = 16.0, qk_scale: float = 2.0,
                          write: float = 0.3, read: float = 5.0, bias: float = 4.0,
                          massive: float = 30.0, init_std: float = 0.2,
                          seed: int = 0) -> PlantedModel:
    """Build the model. `planted=None` gives the control: the same embeddings and plateau
    wiring, but no head reads the rare flag (no head routes).

    `n_rare` rare token types (many types, each seldom drawn, as in real text: a small fixed
    set would give token-identity effects that no row resampling sees). `flag` is the size of
    the rare flag in the embeddings, `qk_scale` how sharply rare queries pick rare keys,
    `write` the head's output along w, `read` the plateau neurons' weight on w, `bias` the
    plateau neurons' pre-activation bias, `massive` a constant residual component (like
    GPT-2's massive activations) that keeps every LayerNorm scale nearly fixed under ablation,
    `init_std` the random weights' scale (large enough that every head does work).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = GPT2Config(vocab_size=vocab, n_embd=d_model, n_layer=n_layers, n_head=n_heads,
                     n_positions=n_ctx, n_inner=4 * d_model, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, initializer_range=init_std)
    model = GPT2LMHeadModel(cfg).eval()
    tr = model.transformer
    r, r_common, w, c = _orthonormal_zero_mean(rng, d_model, 4)
    rare = np.sort(rng.choice(vocab, n_rare, replace=False))
    is_rare = _token_mask(vocab, rare)
    f32 = lambda v: torch.as_tensor(v, dtype=torch.float32)  # noqa: E731

    # embeddings: rare tokens carry flag * r, common ones flag * r_common (same norm, so
    # LayerNorm scales do not tell them apart); a constant massive component c on every position
    wte, wpe = _embeddings_without(rng, vocab, n_ctx, d_model, (r, r_common, w, c))
    wte += flag * torch.where(is_rare[:, None], f32(r), f32(r_common))
    wpe += massive * f32(c)
    tr.wte.weight.copy_(wte)   # tied to lm_head
    tr.wpe.weight.copy_(wpe)

    # nobody reads the flags or w; nobody writes them or the massive component (a write along
    # a flag would make the residual norm, hence every LayerNorm scale, differ by rarity) ...
    for block in tr.h:
        for u in (r, r_common, w):
            _project_out(block.attn.c_attn.weight, u, 0)
            _project_out(block.mlp.c_fc.weight, u, 0)
        for u in (r, r_common, w, c):
            _project_out(block.attn.c_proj.weight, u, 1)
            _project_out(block.mlp.c_proj.weight, u, 1)

    # ... except the planted head (dim 0 routes: rare queries pick rare keys, their value is
    # the flag, written along w; dims 1.. keep random weights, so the head also does ordinary
    # work, a first-order effect on every neuron at rare and common positions alike)
    d_head = d_model // n_heads
    if planted is not None:
        attn = tr.h[planted[0]].attn
        first = planted[1] * d_head
        for part, scale in ((0, qk_scale), (1, qk_scale), (2, 1.0)):  # query, key, value
            attn.c_attn.weight[:, part * d_model + first] = scale * f32(r)
            attn.c_attn.bias[part * d_model + first] = 0.0
        attn.c_proj.weight[first] = write * f32(w)

    # ... and the plateau neurons of the final MLP, which read w; they sit in GELU's linear
    # range so the routed write does not change their slope for other heads' effects
    mlp = tr.h[-1].mlp
    plateau = np.sort(rng.choice(mlp.c_fc.weight.shape[1], n_plateau, replace=False))
    idx = torch.as_tensor(plateau)
    mlp.c_fc.weight[:, idx] += read * f32(w)[:, None]
    mlp.c_fc.bias[idx] = bias
    return PlantedModel(model=model, rare_tokens=rare, plateau=plateau, planted=planted)


# ------------------------------------------------------------------ a router in a trained model

@dataclass(frozen=True, eq=False)
class WiredHead:
    """A router planned for one head of a trained GPT-2 (`plan_routing_head`); `apply()` writes
    it into the model's own parameter tensors in place, so a ModelFacade already built on the
    model sees the change (one bridge serves the unmodified and the rewired model)."""

    head: tuple[int, int]
    group: np.ndarray          # final-layer MLP neurons the routed direction is aimed at
    write_norm: float          # norm of the routed write (residual units)
    resid_norm: float          # mean residual norm at the head's layer input
    probe_rare: float          # mean rarity score at rare / common kept positions (~1 / ~0)
    probe_common: float
    probe_common_sd: float
    edits: tuple = ()          # (parameter, index, new value)

    @torch.no_grad()
    def apply(self) -> None:
        for param, index, value in self.edits:
            param[index] = value


def load_fixture_hf(name: str = "tiny-gpt2") -> GPT2LMHeadModel:
    """A fresh copy of a committed fixture's HF model (eval mode, float32), built at test time
    from the committed weights."""
    from harness.models.loading import _load_hf
    from harness.models.registry import resolve

    return _load_hf(resolve(name), torch.float32)[0].eval()


def _ln_input_capture(model: GPT2LMHeadModel, layer: int, rows: np.ndarray,
                      batch: int = 16) -> tuple[np.ndarray, float]:
    """(ln_1 output of block `layer` [n_rows, T, d], mean residual norm at its input)."""
    out, norms = [], []
    ln = model.transformer.h[layer].ln_1

    def grab(module, inputs, output) -> None:
        out.append(output.detach().double())
        norms.append(inputs[0].norm(dim=-1).mean())

    hook = ln.register_forward_hook(grab)
    try:
        with torch.no_grad():
            for s in range(0, len(rows), batch):
                model(torch.as_tensor(rows[s:s + batch]))
    finally:
        hook.remove()
    return torch.cat(out).numpy(), float(torch.stack(norms).mean())


@torch.no_grad()
def plan_routing_head(model: GPT2LMHeadModel, rows: np.ndarray, keep: np.ndarray,
                      rare: np.ndarray, group: np.ndarray, head: tuple[int, int] | None = None,
                      write: float = 0.5, qk_scale: float = 6.0, ridge: float = 1e-3
                      ) -> WiredHead:
    """Plan turning one head of a *trained* GPT-2 into a router for rare tokens (call
    `.apply()` on the result to write it into the model).

    Why: the synthetic `planted_routing_model` is built so that rare and common tokens differ
    only through the wired head, which a trained model never is; here every other weight stays
    as trained, so the difficulty of rare positions, LayerNorm and the small residual stream
    act on the test as they would on a real router (issue 20.2). Default head: the last
    layer's head 0.

    The head's first dimension is rewired: query, key and value read a linear rarity score of
    its input (a ridge probe fitted on `rows` at the kept positions: ~1 where the current token
    is rare, ~0 elsewhere), so rare queries attend to rare keys (themselves included) and carry
    the score; its output row writes `write` x (mean residual norm) along w, the direction the
    `group` neurons read through the final LayerNorm (their centred read vectors, summed with
    unit weight). The head's other dimensions keep their trained weights, so it also does its
    ordinary work. In a 48-dimensional residual stream w cannot be orthogonal to the other
    neurons' read vectors, and a write this large changes the LayerNorm scale, so random
    neurons move too, and the probe's noise makes the head write a little at common positions
    as well: per position, random groups' influence rises almost as much as the group's.
    """
    tr = model.transformer
    n_layers, n_heads = len(tr.h), model.config.n_head
    layer, h = head if head is not None else (n_layers - 1, 0)
    d = model.config.n_embd
    dh = d // n_heads
    x, resid_norm = _ln_input_capture(model, layer, np.asarray(rows))
    keep, rare = np.asarray(keep, bool), np.asarray(rare, bool)
    xk, yk = x[keep], rare[keep].astype(np.float64)
    a = np.c_[xk, np.ones(len(xk))]
    coef = np.linalg.solve(a.T @ a + ridge * len(xk) * np.eye(a.shape[1]), a.T @ yk)
    score = a @ coef
    m_r, m_c = score[yk == 1].mean(), score[yk == 0].mean()
    span = m_r - m_c
    u = torch.as_tensor(coef[:-1] / span, dtype=torch.float32)
    b = float((coef[-1] - m_c) / span)
    attn = tr.h[layer].attn
    col = h * dh
    edits = []
    for part, scale in ((0, qk_scale), (1, qk_scale), (2, 1.0)):   # query, key, value
        edits.append((attn.c_attn.weight, (slice(None), part * d + col), scale * u))
        edits.append((attn.c_attn.bias, part * d + col, torch.tensor(scale * b)))
    block = tr.h[-1]
    idx = torch.as_tensor(np.asarray(group))
    reads = (block.ln_2.weight[:, None] * block.mlp.c_fc.weight[:, idx]).double()
    reads = reads - reads.mean(0, keepdim=True)
    w = (reads / reads.norm(dim=0, keepdim=True)).sum(1)
    w = w - w.mean()
    w = (w / w.norm()).float()
    norm = write * resid_norm
    edits.append((attn.c_proj.weight, col, norm * w))
    z = (score - m_c) / span
    return WiredHead(head=(int(layer), int(h)), group=np.asarray(group), write_norm=float(norm),
                     resid_norm=resid_norm, probe_rare=float(z[yk == 1].mean()),
                     probe_common=float(z[yk == 0].mean()),
                     probe_common_sd=float(z[yk == 0].std()), edits=tuple(edits))
