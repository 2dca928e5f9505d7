"""Exact joint mean-ablation of a GROUP of final-layer neurons (and its complement), in closed
form: the rank-1 update of harness.ablation.neuron becomes a rank-k update.

Replacing the activations of the k neurons of a group G by values v at a position moves the
final residual by c W_G (c = v_G - a_G, [k]; W_G = the group's W_out rows). With the centred
x~, W~ (LayerNorm; uncentred for RMSNorm), U = diag(gamma) W_U, s^2 = |x~|^2/d + eps and
y = (x~/s) U (so the logits are z = y + bias):

    s'^2    = s^2 + (2 c . (W~_G x~) + c (W~_G W~_G^T) c) / d
    z' - z  = (s/s' - 1) y + (c G_G) / s',        G = W~_out U   [d_mlp, V], once
    Delta   = lse_v(log p_v + (z' - z)_v) - lse_v(log p_v) - (z' - z)_target

so a (group, position) costs a [k] x [k, V] product and one logsumexp over V, never a d x V
matmul. Two interventions (issue 15.3):
- necessity  (ablate_groups): G mean-ablated, every other neuron untouched;
- sufficiency (restore_groups): every neuron mean-ablated except G, i.e. the same rank-k update
  applied to the all-ablated residual x~ + (v - a) W~ with c = a_G - v_G (G restored).

The model-side tensors (W~, U, bias, G) come from neuron.prepare_closed_form, the facade's
final norm and unembedding, so a change there (a new norm or architecture) reaches this module.
Copied from neuron.py (private there): the per-position base quantities (_base: centring,
scale s, y, log p; neuron._clean's maths). Both logsumexps of a Delta run through the same
torch.logsumexp on the same block dtype, so the row's rounding cancels in the difference
(neuron.py's lesson); per-position scalars and the target term are float64. In float64 it
equals a hooked forward pass to ~4e-15 nats on GPT-2 / NeoX and ~5e-7 on Llama (HF's RMSNorm
normalises in float32 even for a float64 model) - tests/test_group_ablation.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from harness.ablation.neuron import ClosedForm
from harness.errors import BadInputError

BLOCK_ELEMENTS = 1 << 20  # block-dtype elements of one [groups, positions, V] block (4 MB)


@dataclass(frozen=True, eq=False)
class Base:
    """Per-position float64 state of the pass a group intervention starts from."""

    x: Tensor       # [P, d] centred (LayerNorm) residual
    s: Tensor       # [P] norm scale
    y: Tensor       # [P, V] (x~/s) U
    logp: Tensor    # [P, V] log softmax of the logits
    loss: Tensor    # [P] CE of the target
    y_t: Tensor     # [P] y at the target
    targets: Tensor  # [P]


def _base(op: ClosedForm, x: Tensor, targets: Tensor) -> Base:
    """x: the (already centred, for LayerNorm) float64 residual."""
    s = torch.sqrt((x * x).mean(-1) + op.eps)
    y = (x / s[:, None]) @ op.U
    logp = torch.log_softmax(y + op.bias, -1)
    t = targets[:, None]
    return Base(x, s, y, logp, -logp.gather(1, t)[:, 0], y.gather(1, t)[:, 0], targets)


def _centred(op: ClosedForm, resid: Tensor) -> Tensor:
    x = resid.to(device=op.U.device, dtype=torch.float64)
    return x - x.mean(-1, keepdim=True) if op.centre else x


def _check(op: ClosedForm, acts: Tensor, values: Tensor, groups: Tensor) -> None:
    m = acts.shape[-1]
    ids = op.neurons.cpu()
    if len(ids) != m or not bool((ids == torch.arange(m)).all()):
        raise BadInputError(f"group ablation needs a ClosedForm over all {m} neurons in order "
                            "(prepare_closed_form(..., neurons=None))")
    if values.shape != (m,):
        raise BadInputError(f"values [{m}] expected, got {tuple(values.shape)}")
    if groups.ndim != 2 or (groups.numel() and (groups.min() < 0 or groups.max() >= m)):
        raise BadInputError(f"groups must be [n_groups, k] neuron ids in [0, {m})")


def group_delta(op: ClosedForm, base: Base, groups: Tensor, coef: Tensor,
                block_elements: int = BLOCK_ELEMENTS) -> Tensor:
    """Delta CE [n_groups, P] (float64) of adding sum_i coef[g, p, i] W_out[groups[g, i]] to
    the residual of `base` at position p (rank-k update; coef [n_groups, P, k])."""
    n_g, k = groups.shape
    P, V = base.logp.shape
    dev, dt = op.U.device, op.G.dtype
    groups, coef = groups.to(dev), coef.to(dev, torch.float64)
    out = torch.empty(n_g, P, dtype=torch.float64, device=dev)
    if n_g == 0 or P == 0:
        return out
    Wt = op.W @ op.U[:, base.targets]                          # [m, P] G[j, target_p], float64
    logp, y = base.logp.to(dt), base.y.to(dt)
    lse0 = torch.logsumexp(logp, -1).to(torch.float64)         # same routine as the ablated rows
    Wg_all = op.W[groups]                                      # [n_g, k, d]
    xw = torch.einsum("pd,bkd->bpk", base.x, Wg_all)
    gram = Wg_all @ Wg_all.transpose(1, 2)                     # [n_g, k, k]
    q = (2.0 * (coef * xw).sum(-1) + torch.einsum("bpk,bkl,bpl->bp", coef, gram, coef)
         ) / op.d_model
    s_new = torch.sqrt(base.s[None] ** 2 + q)
    rho_m1 = -q / (s_new * (base.s[None] + s_new))             # s/s' - 1 without cancellation
    kappa = 1.0 / s_new
    cg_t = torch.einsum("bpk,bkp->bp", coef, Wt[groups])       # (c G_G) at the target
    shift_t = rho_m1 * base.y_t[None] + kappa * cg_t
    ck, rho = (coef * kappa[..., None]).to(dt), rho_m1.to(dt)
    # cache-sized [groups, positions, V] blocks: ~3x faster on CPU than 64 MB ones (measured)
    pc = min(P, max(1, block_elements // V))
    gc = max(1, block_elements // (pc * V))
    for a in range(0, n_g, gc):
        Gg = op.G[groups[a:a + gc]]                            # [B, k, V]
        for p0 in range(0, P, pc):
            ps, gs = slice(p0, p0 + pc), slice(a, a + gc)
            # log p + (z' - z) = log p + rho y + (c kappa) G_G: one block, two passes
            dz = torch.addcmul(logp[None, ps], rho[gs, ps, None], y[None, ps])
            dz.baddbmm_(ck[gs, ps], Gg)
            out[gs, ps] = torch.logsumexp(dz, -1).to(torch.float64)
    return out - lse0[None] - shift_t


def ablate_groups(op: ClosedForm, resid: Tensor, acts: Tensor, targets: Tensor,
                  values: Tensor, groups: Tensor, block_elements: int = BLOCK_ELEMENTS
                  ) -> tuple[Tensor, Tensor]:
    """Necessity: (clean CE [P], Delta CE [n_groups, P]) of replacing each group's
    activations by `values` (mean ablation: mu) with every other neuron untouched.
    resid [P, d] final hook_resid_post, acts [P, d_mlp] final hook_post, values [d_mlp]."""
    groups = torch.as_tensor(groups, dtype=torch.long)
    acts, values = acts.to(op.U.device, torch.float64), values.to(op.U.device, torch.float64)
    _check(op, acts, values, groups)
    base = _base(op, _centred(op, resid), targets.to(op.U.device, torch.long))
    coef = (values[None, :] - acts)[:, groups.to(op.U.device)].permute(1, 0, 2)  # [B, P, k]
    return base.loss, group_delta(op, base, groups, coef, block_elements)


def restore_groups(op: ClosedForm, resid: Tensor, acts: Tensor, targets: Tensor,
                   values: Tensor, groups: Tensor, block_elements: int = BLOCK_ELEMENTS
                   ) -> tuple[Tensor, Tensor]:
    """Sufficiency: (CE [P] with EVERY neuron replaced by `values`, Delta CE [n_groups, P] of
    then restoring each group's own activations); the restored CE is the sum of the two."""
    groups = torch.as_tensor(groups, dtype=torch.long)
    acts, values = acts.to(op.U.device, torch.float64), values.to(op.U.device, torch.float64)
    _check(op, acts, values, groups)
    x_all = _centred(op, resid) + (values[None, :] - acts) @ op.W   # op.W is centred already
    base = _base(op, x_all, targets.to(op.U.device, torch.long))
    coef = (acts - values[None, :])[:, groups.to(op.U.device)].permute(1, 0, 2)
    return base.loss, group_delta(op, base, groups, coef, block_elements)
