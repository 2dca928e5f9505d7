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
    mlp: Tensor | None = None  # [P, d] Gemma: the last MLP's output before its post-norm


def _base(op: ClosedForm, x: Tensor, targets: Tensor, mlp: Tensor | None = None) -> Base:
    """x: the (already centred, for LayerNorm) float64 residual; mlp: the MLP output before
    a post-MLP norm (op.post, Gemma), else None."""
    s = torch.sqrt((x * x).mean(-1) + op.eps)
    y = (x / s[:, None]) @ op.U
    logp = torch.log_softmax(y + op.bias, -1)
    t = targets[:, None]
    return Base(x, s, y, logp, -logp.gather(1, t)[:, 0], y.gather(1, t)[:, 0], targets, mlp)


def _post_out(op: ClosedForm, mlp: Tensor) -> Tensor:
    """g2 m / sigma(m): what the last MLP adds to the residual through Gemma's post-norm."""
    sig = torch.sqrt((mlp * mlp).mean(-1, keepdim=True) + op.post.eps)
    return op.post.gamma * mlp / sig


def _post_terms(op: ClosedForm, base: Base, groups: Tensor, coef: Tensor):
    """Gemma (module docstring of neuron.py): the group's raw change c W_G passes the post-MLP
    RMSNorm, so the residual moves by alpha u + sum_i beta_i w^_i with u the clean post-norm
    output, alpha = sigma/sigma' - 1, beta = c/sigma'. Returns (q, beta, alpha) [B, P(, k)]."""
    m, d = base.mlp, op.d_model
    sig2 = (m * m).mean(-1) + op.post.eps                       # [P]
    sig = torch.sqrt(sig2)
    u = op.post.gamma * m / sig[:, None]
    Wr = op.post.W_full[groups]                                 # [B, k, d] raw rows
    q2 = (2.0 * (coef * torch.einsum("pd,bkd->bpk", m, Wr)).sum(-1)
          + torch.einsum("bpk,bkl,bpl->bp", coef, Wr @ Wr.transpose(1, 2), coef)) / d
    sig_new = torch.sqrt(sig2[None] + q2)
    alpha = -q2 / (sig_new * (sig[None] + sig_new))
    beta = coef / sig_new[..., None]
    Wg = op.W[groups]                                           # [B, k, d] g2-scaled rows
    ru, uu = (base.x * u).sum(-1), (u * u).sum(-1)
    q = (2.0 * alpha * ru[None] + 2.0 * (beta * torch.einsum("pd,bkd->bpk", base.x, Wg)).sum(-1)
         + alpha * alpha * uu[None]
         + 2.0 * alpha * (beta * torch.einsum("pd,bkd->bpk", u, Wg)).sum(-1)
         + torch.einsum("bpk,bkl,bpl->bp", beta, Wg @ Wg.transpose(1, 2), beta)) / d
    return q, beta, alpha, u


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
    h = eta = None
    if op.post is None:
        Wg_all = op.W[groups]                                  # [n_g, k, d]
        xw = torch.einsum("pd,bkd->bpk", base.x, Wg_all)
        gram = Wg_all @ Wg_all.transpose(1, 2)                 # [n_g, k, k]
        q = (2.0 * (coef * xw).sum(-1) + torch.einsum("bpk,bkl,bpl->bp", coef, gram, coef)
             ) / op.d_model
    else:
        q, coef, alpha, u = _post_terms(op, base, groups, coef)
    s_new = torch.sqrt(base.s[None] ** 2 + q)
    rho_m1 = -q / (s_new * (base.s[None] + s_new))             # s/s' - 1 without cancellation
    kappa = 1.0 / s_new
    cg_t = torch.einsum("bpk,bkp->bp", coef, Wt[groups])       # (c G_G) at the target
    shift_t = rho_m1 * base.y_t[None] + kappa * cg_t
    if op.post is not None:  # the extra direction h = u U, coefficient alpha / s'
        h64 = u @ op.U
        eta = alpha * kappa
        shift_t = shift_t + eta * h64.gather(1, base.targets[:, None])[:, 0][None]
        h, eta = h64.to(dt), eta.to(dt)
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
            if h is not None:
                dz.addcmul_(eta[gs, ps, None], h[None, ps])
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
    mlp = None if op.post is None else op.post.mlp_out(acts)
    base = _base(op, _centred(op, resid), targets.to(op.U.device, torch.long), mlp)
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
    if op.post is None:
        x_all = _centred(op, resid) + (values[None, :] - acts) @ op.W  # op.W is centred already
        mlp_all = None
    else:  # Gemma: swap the post-norm output of the real MLP for that of the all-mu one
        mlp_all = op.post.mlp_out(values[None, :].expand_as(acts))
        x_all = (_centred(op, resid) - _post_out(op, op.post.mlp_out(acts))
                 + _post_out(op, mlp_all))
    base = _base(op, x_all, targets.to(op.U.device, torch.long), mlp_all)
    coef = (acts - values[None, :])[:, groups.to(op.U.device)].permute(1, 0, 2)
    return base.loss, group_delta(op, base, groups, coef, block_elements)
