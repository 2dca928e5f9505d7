"""Attention-head ablation and its effect on chosen final-layer neurons (methods.md section 7).

Why this shape: claim 3 ("no routing") asks whether any head feeds the plateau neurons
selectively at rare positions, so for each head we record the change of those neurons'
activations and of the loss at every kept position. The paper's intervention is local to one
query position ('single-query'); 'all-positions' ablates the head everywhere in one pass.

Speed: every ablation starts at the ablated layer from the cached clean `resid_pre` (the
bridge's `start_at_layer`, exact for GPT-2, NeoX and Llama), many (head, row, query) jobs are
folded into the batch dimension of one forward, and a single-query job only runs the prefix
up to its query (later positions cannot affect it under causal attention).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from harness.ablation.batching import with_oom_backoff
from harness.errors import BadInputError

Mode = Literal["bos", "zero", "mean"]
Method = Literal["auto", "joint", "prefix"]
METHODS = ("auto", "joint", "prefix")
Scope = Literal["all-positions", "single-query"]
MODES = ("bos", "zero", "mean")
SCOPES = ("all-positions", "single-query")


@dataclass(frozen=True, eq=False)
class HeadAblation:
    """Change of chosen final-layer neuron activations and of the loss per head and position."""

    delta_act: np.ndarray   # float32 [n_heads, n_pos, n_neurons]
    delta_loss: np.ndarray  # float32 [n_heads, n_pos]
    heads: list[tuple[int, int]]
    row: np.ndarray         # int64 [n_pos]
    pos: np.ndarray         # int64 [n_pos]
    neurons: np.ndarray     # int64 [n_neurons]
    mode: str = "bos"
    scope: str = "single-query"

    def influence(self) -> np.ndarray:
        """H_h(t) = sum_j |delta a_j(t)|, [n_heads, n_pos] (the paper's head influence)."""
        return np.abs(self.delta_act).sum(-1)

    def __str__(self) -> str:
        h = self.influence().mean(1) if self.delta_act.size else np.zeros(len(self.heads))
        top = int(np.argmax(h)) if len(h) else None
        best = "" if top is None else \
            f"; largest mean influence {h[top]:.3g} at head {self.heads[top]}"
        return (f"HeadAblation({len(self.heads)} heads x {len(self.row)} positions x "
                f"{len(self.neurons)} neurons, {self.mode}, {self.scope}{best})")


def all_heads(facade: Any, last_k_layers: int | None = None) -> list[tuple[int, int]]:
    """Every (layer, head), or those of the last k layers."""
    first = 0 if last_k_layers is None else max(0, facade.n_layers - last_k_layers)
    return [(l, h) for l in range(first, facade.n_layers) for h in range(facade.n_heads)]


class _BlockSkipper:
    """Make a `start_at_layer` forward really start there.

    The bridge's start_at_layer still runs blocks 0..k-1 and discards their output (the HF
    model loop drives the whole stack), so an ablation at layer k cost a full forward. During
    a clean pass we record what each HF block returns (a tensor, or a tuple whose other items
    are None); while skipping, blocks before k return their input in that same form, unrun.
    Blocks whose output we could not classify are never skipped (correct, only slower)."""

    def __init__(self, bridge: Any) -> None:
        self.layers = [getattr(b, "original_component", None) for b in getattr(bridge, "blocks", [])]
        self.formats: dict[int, Any] = {}

    def record(self):
        return _patched(self.layers, range(len(self.layers)), self._recorder)

    def skip_before(self, k: int):
        ok = [i for i in range(k) if i in self.formats]
        return _patched(self.layers, ok if len(ok) == k else [], self._passthrough)

    def _recorder(self, i: int, forward):
        def call(*args, **kwargs):
            out = forward(*args, **kwargs)
            if isinstance(out, torch.Tensor):
                self.formats[i] = "tensor"
            elif isinstance(out, tuple) and out and all(o is None for o in out[1:]):
                self.formats[i] = len(out)
            return out
        return call

    def _passthrough(self, i: int, forward):
        fmt = self.formats[i]

        def call(hidden_states=None, *args, **kwargs):
            hs = hidden_states if hidden_states is not None else kwargs["hidden_states"]
            return hs if fmt == "tensor" else (hs,) + (None,) * (fmt - 1)
        return call


class _patched:
    """Context manager: layers[i].forward replaced by make(i, original forward) for i in idx."""

    def __init__(self, layers: list, idx, make) -> None:
        self.layers, self.idx, self.make = layers, [i for i in idx if layers[i] is not None], make

    def __enter__(self):
        for i in self.idx:
            layer = self.layers[i]
            layer.forward = self.make(i, type(layer).forward.__get__(layer))
        return self

    def __exit__(self, *exc):
        for i in self.idx:
            self.layers[i].__dict__.pop("forward", None)
        return False


class _StopForward(Exception):
    """Raised from the last hook_resid_post: skips the full-vocabulary unembedding of every
    position (the cost of an all-positions ablation) when only kept positions are measured."""


_LOSS_CHUNK = 512  # positions per float64 unembedding block: ~200 MB at V = 50k, not GBs


def _losses_from_resid(facade: Any, resid: Tensor, targets: Tensor) -> Tensor:
    """CE (float64) of final_norm(resid) W_U + b_U against targets, for [n, d] residuals.

    The clean and the ablated loss both come from here (same float64 arithmetic), so a delta
    loss carries no kernel offset; logsumexp minus the target logit in position blocks keeps
    the float64 logits at a bounded size (one [n, V] float64 array cost GBs of page faults)."""
    x = facade.final_norm.apply(resid.to(torch.float64))
    w_u, b_u = facade.W_U.to(x.device, torch.float64), facade.b_U.to(x.device, torch.float64)
    t = targets.to(x.device)
    out = torch.empty(len(x), dtype=torch.float64, device=x.device)
    for s in range(0, len(x), _LOSS_CHUNK):
        logits = torch.addmm(b_u, x[s:s + _LOSS_CHUNK], w_u)
        out[s:s + _LOSS_CHUNK] = (torch.logsumexp(logits, -1)
                                  - logits.gather(1, t[s:s + _LOSS_CHUNK, None])[:, 0])
    return out


def _z_means(facade: Any, rows: np.ndarray, keep: np.ndarray, layers: list[int],
             batch_size: int) -> dict[int, Tensor]:
    """Mean of attn.hook_z over all kept positions, per layer: [n_heads, d_head] (float64)."""
    sums: dict[int, Tensor] = {}
    count = int(keep.sum())
    for start in range(0, len(rows), batch_size):
        mask = torch.from_numpy(keep[start:start + batch_size])

        def grabber(layer: int, mask: Tensor = mask):
            def grab(z: Tensor, hook: Any) -> Tensor:
                part = z[mask.to(z.device)].to(torch.float64).sum(0).cpu()
                sums[layer] = sums.get(layer, 0) + part
                return z
            return grab

        with torch.no_grad():
            facade.run_with_hooks(torch.from_numpy(rows[start:start + batch_size]),
                                  [(facade.attn_hook(l, "z"), grabber(l)) for l in layers])
    return {l: s / count for l, s in sums.items()}


def _ablation_hook(mode: str, heads: Tensor, queries: Tensor, value: Tensor | None):
    """Hook editing, for batch element e, head heads[e] at query queries[e] (-1: every query)."""
    e = torch.arange(len(heads))
    single = queries >= 0

    def hook(x: Tensor, hook: Any) -> Tensor:
        dev = x.device
        es, hs, qs = e[single].to(dev), heads[single].to(dev), queries[single].to(dev)
        ea, ha = e[~single].to(dev), heads[~single].to(dev)
        if mode == "bos":  # pattern [B, H, Tq, Tk]: attend only to position 0
            onehot = torch.zeros(x.shape[-1], dtype=x.dtype, device=dev)
            onehot[0] = 1
            x[es, hs, qs] = onehot
            x[ea, ha] = onehot
        else:  # z [B, T, H, d_head]
            if value is None:
                fill = torch.zeros(len(heads), x.shape[-1], dtype=x.dtype, device=dev)
            else:
                fill = value.to(dev, x.dtype)[heads.to(dev)]
            x[es, qs, hs] = fill[single.to(dev)]
            x[ea, :, ha] = fill[(~single).to(dev)][:, None, :]
        return x

    return hook


def _resolve_method(facade: Any, scope: str, method: str) -> str:
    """'joint' or 'prefix' for single-query ('auto': joint where the family has it); all-positions
    runs the hooked forward ('prefix' stands for it)."""
    from harness.ablation.single_query import FAMILIES, supports

    if method not in METHODS:
        raise BadInputError(f"method={method!r}; use one of {METHODS}")
    if scope == "all-positions":
        return "prefix"
    if method == "joint" and not supports(facade):
        why = (f"family {facade.family!r} (it covers {', '.join(FAMILIES)})"
               if facade.family not in FAMILIES else "attention-logit soft-capping")
        raise BadInputError(f"method='joint' does not model {why}; use method='prefix'")
    if method == "auto":
        return "joint" if supports(facade) else "prefix"
    return method


def _hooked_chunk(facade: Any, skipper: _BlockSkipper, cache: dict, layer: int, chunk: list,
                  heads: list, mode: str, kind: str, means: dict, scope: str,
                  seq_len: int) -> tuple[Tensor, Tensor]:
    """(last hook_post, last residual) of the chunk's jobs by hooked bridge forwards from
    `layer`: the head edited at its query (prefix up to it) or at every query."""
    hi = torch.tensor([heads[i][1] for i, _, _ in chunk])
    ri = torch.tensor([r for _, r, _ in chunk])
    qi = torch.tensor([t for _, _, t in chunk])
    length = int(qi.max()) + 1 if scope == "single-query" else seq_len
    dev = cache["resid"].device
    resid = cache[f"blocks.{layer}.hook_resid_pre"][ri.to(dev), :length]
    post: dict[str, Tensor] = {}

    def grab(act: Tensor, hook: Any) -> Tensor:
        post["post"] = act.detach()
        return act

    def grab_resid(act: Tensor, hook: Any) -> Tensor:
        post["resid"] = act.detach()
        raise _StopForward  # the unembedding runs in _record, at measured positions only

    value = means[layer] if mode == "mean" else None
    hooks = [(facade.attn_hook(layer, kind), _ablation_hook(mode, hi, qi, value)),
             (facade.hook_post, grab), (facade.hook_resid_post, grab_resid)]
    with torch.no_grad(), skipper.skip_before(layer):
        try:
            facade.bridge.run_with_hooks(resid, fwd_hooks=hooks, start_at_layer=layer,
                                         return_type="logits")
        except _StopForward:
            pass
    return post["post"], post["resid"]


def _joint_chunk(stack: Any, facade: Any, cache: dict, layer: int, chunk: list, heads: list,
                 mode: str, means: dict, kv: list, length: int) -> tuple[Tensor, Tensor]:
    """(last hook_post, last residual) where position t holds the single-query ablation of the
    job's head at query t (harness.ablation.single_query: one forward for all queries)."""
    from harness.ablation.single_query import Edit

    dev = cache["resid"].device
    hi = torch.tensor([heads[i][1] for i, _, _ in chunk])
    ri = torch.tensor([r for _, r, _ in chunk]).to(dev)
    x = cache[f"blocks.{layer}.hook_resid_pre"][ri, :length]
    if mode == "bos":
        fill = None
    elif mode == "zero":
        fill = torch.zeros(len(chunk), stack.d_head, dtype=x.dtype, device=dev)
    else:
        fill = means[layer].to(dev, x.dtype)[hi.to(dev)]
    with torch.no_grad():
        return stack.single_query_from(layer, x, Edit(hi, fill),
                                       [(k[ri], v[ri]) for k, v in kv])


def _record(chunk: list, post_all: Tensor, out: Tensor, per_query: bool, bkeep: np.ndarray,
            neurons_t: Tensor, targets: Tensor, ref_act: Tensor, ref_loss: Tensor,
            clean_lookup: np.ndarray, pos_index: np.ndarray, start: int,
            delta_act: np.ndarray, delta_loss: np.ndarray, facade: Any) -> None:
    """Write the chunk's deltas at its measured positions: the job's query (`per_query`: prefix
    single-query jobs) or every kept position of the job's row."""
    ri = torch.tensor([r for _, r, _ in chunk])
    if per_query:
        me, mt = torch.arange(len(chunk)), torch.tensor([t for _, _, t in chunk])
    else:
        pairs = [(e, t) for e, (_, r, _) in enumerate(chunk) for t in np.nonzero(bkeep[r])[0]]
        if not pairs:
            return
        me = torch.tensor([p[0] for p in pairs])
        mt = torch.tensor([int(p[1]) for p in pairs])
    mr = ri[me]
    dev = out.device
    act = post_all[me.to(dev), mt.to(dev)][:, neurons_t.to(dev)]
    ci = torch.from_numpy(clean_lookup[mr.numpy(), mt.numpy()])
    hidx = np.array([chunk[e][0] for e in me.tolist()])
    gidx = pos_index[mr.numpy() + start, mt.numpy()]
    delta_act[hidx, gidx] = (act.double().cpu() - ref_act[ci]).numpy()
    if ref_loss is not None:  # a full-vocabulary logsumexp per (head, position)
        loss = _losses_from_resid(facade, out[me.to(dev), mt.to(dev)], targets[mr, mt]).cpu()
        delta_loss[hidx, gidx] = (loss - ref_loss[ci]).numpy()


CODE_VERSION = "head-ablation/2"  # /2: clean loss from the residual in float64, as the ablated


def head_ablation(facade: Any, rows: Any, keep: Any, heads: Sequence[tuple[int, int]] | None = None,
                  mode: Mode = "bos", scope: Scope = "single-query",
                  neurons: Sequence[int] = (), last_k_layers: int | None = None,
                  batch_size: int = 4, fold: int = 64, store: Any = None,
                  method: Method = "auto", loss: bool = True) -> HeadAblation:
    """Ablate each head (alone) and record delta hook_post[..., neurons] and delta loss at every
    kept position. `fold` = ablation jobs per forward pass (memory knob); on out-of-memory it
    is halved (logged) and the failed chunk redone, finished work kept.

    `method` (single-query only): 'joint' computes every query of a (head, row) in one forward
    (harness.ablation.single_query; GPT-2, NeoX, Llama, Gemma-3), 'prefix' runs one prefix forward per
    (head, row, query) - the reference; 'auto' is joint where supported. All-positions always
    uses the hooked forward.

    `loss=False` skips delta loss (NaN in the result): at a large vocabulary its
    full-vocabulary logsumexp per (head, position) costs more than the ablation forwards.

    With a ResultStore the whole result is cached under a key of model, data, mode, scope,
    heads, neurons and code version, and every row batch is stored as it finishes, so an
    interrupted run resumes where it stopped with the same numbers."""
    if mode not in MODES:
        raise BadInputError(f"mode={mode!r}; use one of {MODES}")
    if scope not in SCOPES:
        raise BadInputError(f"scope={scope!r}; use one of {SCOPES}")
    rows = np.asarray(rows.cpu() if isinstance(rows, Tensor) else rows, dtype=np.int64)
    keep = np.asarray(keep.cpu() if isinstance(keep, Tensor) else keep, dtype=bool)
    if keep.shape != rows.shape or keep[:, -1].any():
        raise BadInputError("keep must be [n_rows, T] like rows and never mark the last position; "
                            "build it with harness.data.packing.keep_mask")
    heads = [(int(l), int(h)) for l, h in (heads or all_heads(facade, last_k_layers))]
    for l, h in heads:
        if not (0 <= l < facade.n_layers and 0 <= h < facade.n_heads):
            raise BadInputError(f"head ({l}, {h}) is outside {facade.n_layers} layers x "
                                f"{facade.n_heads} heads")
    neurons_t = torch.as_tensor(list(neurons), dtype=torch.long)
    layers = sorted({l for l, _ in heads})
    method = _resolve_method(facade, scope, method)
    stack = None
    if method == "joint":
        from harness.ablation.single_query import Stack

        stack = Stack(facade)
    r_all, t_all = np.nonzero(keep)
    key = None
    if store is not None:
        from harness.ablation.neuron import data_digest

        key = store.key(kind="head_ablation", model=facade.info(), data=data_digest(rows, keep),
                        mode=mode, scope=scope, heads=heads,
                        neurons=[int(n) for n in neurons_t], batch_size=batch_size,
                        code=CODE_VERSION, **({"method": method} if method == "joint" else {}),
                        **({} if loss else {"loss": False}))
        a = store.load_or_none(key, ("delta_act", "delta_loss"))
        if a is not None:
            return HeadAblation(delta_act=a["delta_act"], delta_loss=a["delta_loss"],
                                heads=heads, row=r_all.astype(np.int64),
                                pos=t_all.astype(np.int64), neurons=neurons_t.numpy(),
                                mode=mode, scope=scope)
    means = _z_means(facade, rows, keep, layers, batch_size) if mode == "mean" else {}
    pos_index = np.full(rows.shape, -1, dtype=np.int64)
    pos_index[r_all, t_all] = np.arange(len(r_all))
    delta_act = np.zeros((len(heads), len(r_all), len(neurons_t)), np.float32)
    delta_loss = np.zeros((len(heads), len(r_all)), np.float32)
    if not loss:
        delta_loss[:] = np.nan
    kind = "pattern" if mode == "bos" else "z"
    bridge = facade.bridge
    skipper = _BlockSkipper(bridge)
    first_pos = np.concatenate([[0], np.cumsum(keep.sum(1))])  # row-major position offsets

    starts = range(0, len(rows), batch_size)
    for bi, start in enumerate(starts):
        p0, p1 = int(first_pos[start]), int(first_pos[min(len(rows), start + batch_size)])
        child = None if store is None else store.child(key, f"batch{bi:06d}")
        part = None if child is None else store.load_or_none(child, ("delta_act", "delta_loss"))
        if part is not None:  # finished before an interruption
            delta_act[:, p0:p1], delta_loss[:, p0:p1] = part["delta_act"], part["delta_loss"]
            continue
        batch = torch.from_numpy(rows[start:start + batch_size])
        bkeep = keep[start:start + batch_size]
        cache: dict[str, Tensor] = {}

        def keeper(name: str):  # hook.name may be an alias, so key by the name we asked for
            def keep_act(act: Tensor, hook: Any) -> Tensor:
                cache[name] = act.detach()
                return act
            return keep_act

        def stop_at_resid(act: Tensor, hook: Any) -> Tensor:
            cache["resid"] = act.detach()
            raise _StopForward  # losses below, at kept positions only, as for the ablations

        names = [facade.hook_post] + [f"blocks.{l}.hook_resid_pre" for l in layers]
        with torch.no_grad(), skipper.record():
            try:
                facade.run_with_hooks(batch, [(n, keeper(n)) for n in names]
                                      + [(facade.hook_resid_post, stop_at_resid)])
            except _StopForward:
                pass
        br, bt = np.nonzero(bkeep)
        dev = cache["resid"].device
        bri, bti = torch.from_numpy(br).to(dev), torch.from_numpy(bt).to(dev)
        clean_act = cache[facade.hook_post][bri, bti][:, neurons_t.to(dev)].double().cpu()
        targets = batch[:, 1:]
        clean_loss = None if not loss else _losses_from_resid(
            facade, cache["resid"][bri, bti], targets[br, bt]).cpu()
        clean_lookup = np.full(bkeep.shape, -1, dtype=np.int64)
        clean_lookup[br, bt] = np.arange(len(br))
        length_b = int(bt.max()) + 1 if len(bt) else 1  # later positions cannot matter

        for layer in layers:
            head_ids = [i for i, (l, _) in enumerate(heads) if l == layer]
            ref_act, ref_loss, kv = clean_act, clean_loss, None
            if method == "joint":  # baseline with the joint method's own arithmetic
                x_layer = cache[f"blocks.{layer}.hook_resid_pre"][:, :length_b]
                with torch.no_grad():
                    base_post, base_resid, kv = stack.clean_from(layer, x_layer)
                ref_act = base_post[bri, bti][:, neurons_t.to(dev)].double().cpu()
                ref_loss = None if not loss else _losses_from_resid(
                    facade, base_resid[bri, bti], targets[br, bt]).cpu()
            if scope == "single-query" and method == "prefix":
                jobs = [(i, r, t) for i in head_ids for r, t in zip(br, bt)]
                jobs.sort(key=lambda j: j[2])  # similar prefix lengths share a forward
            elif method == "prefix":  # all-positions: one job per (head, row), every row (the
                # chunks' composition sets float32 blocking, which the goldens pin bit for bit)
                jobs = [(i, r, -1) for i in head_ids for r in range(len(batch))]
            else:  # joint: one job per (head, row) holding a kept position
                jobs = [(i, r, -1) for i in head_ids for r in range(len(batch)) if bkeep[r].any()]
            j0 = 0
            while j0 < len(jobs):
                def step(size: int, j0: int = j0) -> int:
                    chunk = jobs[j0:j0 + size]
                    post, out = (_joint_chunk(stack, facade, cache, layer, chunk, heads, mode,
                                              means, kv, length_b)
                                 if method == "joint" else
                                 _hooked_chunk(facade, skipper, cache, layer, chunk, heads,
                                               mode, kind, means, scope, batch.shape[1]))
                    _record(chunk, post, out, method == "prefix" and scope == "single-query",
                            bkeep, neurons_t, targets, ref_act, ref_loss, clean_lookup,
                            pos_index, start, delta_act, delta_loss, facade)
                    return len(chunk)
                done, fold = with_oom_backoff(step, fold, what="head-ablation fold")
                j0 += done
        if child is not None:
            store.save(child, {"delta_act": delta_act[:, p0:p1], "delta_loss": delta_loss[:, p0:p1]})

    if store is not None:
        store.save(key, {"delta_act": delta_act, "delta_loss": delta_loss},
                   {"kind": "head_ablation", "mode": mode, "scope": scope,
                    "model": facade.info(), "n_heads": len(heads), "n_rows": int(len(rows))})
        for bi in range(len(starts)):  # the row batches are in the whole entry now
            store.delete(store.child(key, f"batch{bi:06d}"))
    return HeadAblation(delta_act=delta_act, delta_loss=delta_loss, heads=heads,
                        row=r_all.astype(np.int64), pos=t_all.astype(np.int64),
                        neurons=neurons_t.numpy(), mode=mode, scope=scope)
