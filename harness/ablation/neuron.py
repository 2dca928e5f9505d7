"""Exact ablation of every final-layer MLP neuron at once (methods.md section 4).

Only the final norm and the unembedding follow the last MLP, so replacing neuron j's activation
a_j(t) by v_j moves the residual by the rank-1 term c_j w_j (c_j = v_j - a_j(t), w_j = W_out[j]).
With x~, w~ the centred vectors (LayerNorm; uncentred for RMSNorm), U = diag(gamma) W_U,
s^2 = |x~|^2/d + eps and y = (x~/s) U (so clean logits z = y + beta W_U + b_U):

    s'_j^2 = s^2 + (2 c_j x~.w~_j + c_j^2 |w~_j|^2) / d
    z'_j - z = (s/s'_j - 1) y + (c_j/s'_j) G_j,          G = W~_out U   [d_mlp, V], once
    Delta_j = logsumexp_v(log p_v + (z'_j - z)_v) - (z'_j - z)_target

This is the paper's closed form rearranged so that each position costs only elementwise work
and one logsumexp over [d_mlp, V] (no matmul per neuron), and so that float32 rounding acts on
the *change* of the logits rather than on the logits themselves. Per-position scalars (s, s',
x~.w~, the target terms) are computed in float64.

How the two logsumexps are computed, and why. Delta is a difference of two logsumexps over V,
so any error one routine makes on a whole row that the other does not becomes an offset of
every Delta. Hence (CODE_VERSION neuron-closed-form/2):
  - the clean term lse_v(log p_v) is computed by the SAME kernel as the ablated ones (compiled,
    eager or Triton), called with rho = kappa = 0 and the clean row's bound max_v log p_v, on
    the same float32 log p row; what that kernel's rounding does to a row cancels in Delta;
  - every kernel takes exp() of a float32 exponent but sums the exponentials in float64 (the
    Triton kernel: float32 per lane for 16 chunks, then into a float64 sum) and adds the
    bound back in float64. A float32 running sum over V drops the small terms added after a
    large one: the old compiled kernel (float32 sum, clean term from eager torch.logsumexp)
    biased every Delta by about -7e-6 nats at V = 50257 (max 1.4e-5);
  - pairs whose one-pass sum over- or underflows (a shift or bound slack beyond ~88 nats) are
    recomputed, alone, by a float64 two-pass logsumexp.
Gemma's block normalises the MLP output before it joins the residual (post_feedforward_
layernorm, RMSNorm with scale g2): r = r_mid + g2 m / sigma(m), m = a W_out. Ablating neuron j
gives m' = m + c_j w_j, sigma_j^2 = sigma^2 + (2 c_j m.w_j + c_j^2 |w_j|^2) / d, and
    r'_j = r + alpha_j u + beta_j w^_j,   u = g2 m / sigma,  w^_j = g2 w_j,
    alpha_j = sigma/sigma_j - 1,  beta_j = c_j / sigma_j,
so the final norm sees a rank-2 change and z'_j - z gains one per-position vector h = u U:
    z'_j - z = (s/s'_j - 1) y + (alpha_j/s'_j) h + (beta_j/s'_j) G_j,   G = W^_out U.
ClosedForm.post carries that norm; every kernel takes the extra (h, eta) term (the Triton one
does not: such models use the compiled kernel).

Measured against a float64 recomputation of every ablated forward (final norm -> logits -> CE;
tests/test_kernel_exactness.py, GPT-2 / NeoX / Llama, V = 4096, 1,024 positions): max abs error
<= 4.2e-7 nats per (position, neuron) and |mean error| <= 2.7e-9 nats for every kernel; what is
left is the float32 rounding of the exponent's inputs (log p, y, G) and of the float32 Delta.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterator, Literal

import numpy as np
import torch
from torch import Tensor

from harness.ablation import lse_triton
from harness.ablation.batching import free_bytes, with_oom_backoff
from harness.errors import BadInputError

CODE_VERSION = "neuron-closed-form/2"  # /2: same-kernel clean term, float64 exp-sums
# float32 temporaries alive per block element inside the fused add + logsumexp.
_TEMPS_PER_ELEMENT = 3
_G_ROWS_PER_MATMUL = 1024
_CPU_BLOCK_ROWS = 2048
_TRITON_MAX_POSITIONS = 1024

Values = Literal["mean", "zero"] | Tensor


@dataclass(frozen=True, eq=False)
class PostMLPNorm:
    """An RMSNorm between the last MLP and the residual (Gemma), as float64 data."""

    W_full: Tensor   # [d_mlp, d] raw W_out (all neurons: m = a W_out + b_out)
    b_out: Tensor    # [d]
    W_raw: Tensor    # [m, d] raw rows of op's neurons (sigma_j uses m . w_j, |w_j|^2)
    raw_ww: Tensor   # [m]
    gamma: Tensor    # [d] g2
    eps: float

    def mlp_out(self, acts_full: Tensor) -> Tensor:
        """m = a W_out + b_out in float64, [P, d] (before the norm)."""
        return acts_full.to(torch.float64) @ self.W_full + self.b_out


@dataclass(frozen=True, eq=False)
class ClosedForm:
    """The model-side tensors the closed form reuses for every position (built once)."""

    neurons: Tensor      # [m] neuron ids
    W: Tensor            # [m, d] float64 rows of W_out, centred for LayerNorm
    ww: Tensor           # [m] float64 |W[j]|^2
    U: Tensor            # [d, V] float64 diag(gamma) W_U
    bias: Tensor         # [V] float64 beta W_U + b_U
    G: Tensor            # [m, V] block dtype W @ U
    centre: bool
    eps: float
    post: PostMLPNorm | None = None  # Gemma: W rows are g2-scaled, see the module docstring

    @property
    def G_absmax(self) -> Tensor:
        """[m] max_v |G[j, v]| (for the fused kernel's overflow-free bound), cached."""
        cached = self.__dict__.get("_G_absmax")
        if cached is None:
            cached = self.G.abs().amax(-1)
            object.__setattr__(self, "_G_absmax", cached)
        return cached

    @property
    def d_model(self) -> int:
        return int(self.W.shape[1])

    @property
    def d_vocab(self) -> int:
        return int(self.U.shape[1])

    def __str__(self) -> str:
        post = ", post-MLP rmsnorm" if self.post is not None else ""
        return (f"ClosedForm({len(self.neurons)} neurons, d={self.d_model}, V={self.d_vocab}, "
                f"{'layernorm' if self.centre else 'rmsnorm'}{post}, block {self.G.dtype})")


def prepare_closed_form(W_out: Tensor, W_U: Tensor, b_U: Tensor | None, norm: Any,
                        neurons: Tensor | list[int] | None = None,
                        dtype: torch.dtype = torch.float32, post_norm: Any = None,
                        b_out: Tensor | None = None) -> ClosedForm:
    """Precompute G = W~_out U (the only d_mlp x V matmul) on W_out's device.

    `norm` is a NormSpec (kind 'layernorm' | 'rmsnorm', gamma, beta, eps); `dtype` is the dtype
    of the [positions, neurons, V] blocks (float32 normally, float64 for a reference).
    `post_norm` (a NormSpec, RMSNorm only) is a norm on the MLP output before the residual
    (Gemma's post_feedforward_layernorm); `b_out` the MLP output bias it sees."""
    if norm.kind not in ("layernorm", "rmsnorm"):
        raise BadInputError(f"unknown norm kind {norm.kind!r}; use 'layernorm' or 'rmsnorm'")
    if post_norm is not None and (post_norm.kind != "rmsnorm" or norm.kind != "rmsnorm"
                                  or post_norm.beta is not None):
        raise BadInputError("a post-MLP norm is supported as RMSNorm before an RMSNorm final "
                            f"norm (Gemma); got {post_norm.kind} before {norm.kind}")
    device = W_out.device
    f64 = dict(dtype=torch.float64, device=device)
    d_mlp, d_model = W_out.shape
    if W_U.shape[0] != d_model:
        raise BadInputError(f"W_U is {tuple(W_U.shape)}, expected [d_model={d_model}, V]")
    ids = torch.arange(d_mlp, device=device) if neurons is None else \
        torch.as_tensor(neurons, dtype=torch.long, device=device)
    centre = norm.kind == "layernorm"
    W = W_out.to(**f64)[ids]
    post = None
    if post_norm is not None:
        W_full = W_out.to(**f64)
        bias_out = torch.zeros(d_model, **f64) if b_out is None else b_out.to(**f64)
        post = PostMLPNorm(W_full, bias_out, W, (W * W).sum(-1), post_norm.gamma.to(**f64),
                           float(post_norm.eps))
        W = W * post.gamma  # what neuron j writes into the residual, per unit of c_j / sigma_j
    if centre:
        W = W - W.mean(-1, keepdim=True)
    U = norm.gamma.to(**f64)[:, None] * W_U.to(**f64)
    bias = torch.zeros(W_U.shape[1], **f64) if b_U is None else b_U.to(**f64).clone()
    if norm.beta is not None:
        bias += norm.beta.to(**f64) @ W_U.to(**f64)
    G = torch.empty(len(ids), W_U.shape[1], dtype=dtype, device=device)
    for i in range(0, len(ids), _G_ROWS_PER_MATMUL):
        G[i:i + _G_ROWS_PER_MATMUL] = (W[i:i + _G_ROWS_PER_MATMUL] @ U).to(dtype)
    return ClosedForm(ids, W, (W * W).sum(-1), U, bias, G, centre, float(norm.eps), post)


def closed_form_for(facade: Any, neurons: Tensor | list[int] | None = None,
                    dtype: torch.dtype = torch.float32) -> ClosedForm:
    """prepare_closed_form from a ModelFacade: final norm, unembedding and (Gemma) the
    post-MLP norm, so no caller can forget a piece of the architecture."""
    return prepare_closed_form(facade.W_out, facade.W_U, facade.b_U, facade.final_norm,
                               neurons, dtype=dtype, post_norm=facade.post_mlp_norm,
                               b_out=facade.b_out)


@dataclass(frozen=True, eq=False)
class _Clean:
    """Per-position float64 quantities of the unablated pass."""

    xw: Tensor      # [P, m] x~ . w~_j
    s: Tensor       # [P] norm scale
    y: Tensor       # [P, V] (x~/s) U
    logp: Tensor    # [P, V] log softmax of the clean logits
    loss: Tensor    # [P] clean CE
    y_t: Tensor     # [P] y at the target
    G_t: Tensor     # [P, m] G[j, target]


def _clean(op: ClosedForm, resid: Tensor, targets: Tensor) -> _Clean:
    x = resid.to(torch.float64)
    if op.centre:
        x = x - x.mean(-1, keepdim=True)
    s = torch.sqrt((x * x).mean(-1) + op.eps)
    y = (x / s[:, None]) @ op.U
    logp = torch.log_softmax(y + op.bias, -1)
    t = targets[:, None]
    return _Clean(xw=x @ op.W.T, s=s, y=y, logp=logp, loss=-logp.gather(1, t)[:, 0],
                  y_t=y.gather(1, t)[:, 0], G_t=(op.W @ op.U[:, targets]).T)


def _delta_positions(op: ClosedForm, resid: Tensor, acts: Tensor, targets: Tensor,
                     values: Tensor, neuron_block: int, method: str = "compiled",
                     mlp: Tensor | None = None) -> Tensor:
    """Delta for a few positions and all of op's neurons, `neuron_block` neurons at a time
    (`method` 'triton': all neurons in one kernel launch, no [P, m, V] block).

    The clean logsumexp is computed by the same kernel as the ablated ones (rho = kappa = 0,
    the clean row's bound), so whatever that kernel's rounding does to a row cancels in the
    difference instead of becoming an offset of every Delta."""
    cl = _clean(op, resid, targets)
    c = values.to(torch.float64)[None, :] - acts.to(torch.float64)
    h = eta = None
    if op.post is None:
        q = (2.0 * c * cl.xw + c * c * op.ww) / op.d_model
        s_new = torch.sqrt(cl.s[:, None] ** 2 + q)
        kappa = c / s_new
    else:
        h, eta, kappa, s_new, q = _post_norm_terms(op, resid, c, cl, mlp)
    rho_m1 = -q / (s_new * (cl.s[:, None] + s_new))    # s/s' - 1 without cancellation
    shift_t = rho_m1 * cl.y_t[:, None] + kappa * cl.G_t  # (z' - z) at the target
    dt = op.G.dtype
    logp, y = cl.logp.to(dt), cl.y.to(dt)
    # an upper bound of max_v z'_v per (position, neuron): exp(z' - bound) <= 1 never overflows
    # (the clean row's own bound is max_v log p_v)
    lp_max = logp.amax(-1, keepdim=True).to(torch.float64)
    bound = (lp_max + rho_m1.abs() * y.abs().amax(-1, keepdim=True).to(torch.float64)
             + kappa.abs() * op.G_absmax.to(torch.float64)[None, :])
    zero = torch.zeros_like(lp_max)
    G0 = op.G[:1]  # any row: kappa = 0 multiplies it away exactly
    out = torch.empty(c.shape, dtype=torch.float64, device=c.device)
    if h is not None:  # Gemma: the extra per-position direction h = u U, coefficient eta
        shift_t = shift_t + eta * h.gather(1, targets[:, None].to(h.device))
        bound = bound + eta.abs() * h.abs().amax(-1, keepdim=True)
        _lse_post(out, op, logp, y, rho_m1, kappa, bound, h.to(dt), eta, lp_max, zero, G0,
                  neuron_block, method)
        delta = out - shift_t
        return delta.masked_fill(c == 0, 0.0).to(torch.float32)
    if method == "triton":
        lse0 = lse_triton.lse_bounded(logp, y, G0, zero, zero, lp_max)
        out.copy_(lse_triton.lse_bounded(logp, y, op.G, rho_m1, kappa, bound))
        _rescue(lse0, logp, y, G0, zero, zero)
        _rescue(out, logp, y, op.G, rho_m1, kappa)
    else:
        kernel = _fused_lse() if method == "compiled" else None
        lp3, y3 = logp[:, None, :], y[:, None, :]
        clean_args = (lp3, y3, G0[None], zero[..., None].to(dt), zero[..., None].to(dt),
                      lp_max.to(dt))
        kernel, lse0 = _run_lse(kernel, clean_args)
        for j in range(0, c.shape[1], neuron_block):
            sl = slice(j, j + neuron_block)
            args = (lp3, y3, op.G[None, sl], rho_m1[:, sl, None].to(dt),
                    kappa[:, sl, None].to(dt), bound[:, sl].to(dt))
            used, lse = _run_lse(kernel, args)
            out[:, sl] = lse
            if used is not kernel:  # the compiled kernel failed: clean term by eager, too
                kernel, lse0 = _run_lse(None, clean_args)
        _rescue(lse0, logp, y, G0, zero, zero)
        _rescue(out, logp, y, op.G, rho_m1, kappa)
    delta = out - lse0 - shift_t
    return delta.masked_fill(c == 0, 0.0).to(torch.float32)  # v_j = a_j(t): exactly no change


def _post_norm_terms(op: ClosedForm, resid: Tensor, c: Tensor, cl: _Clean,
                     mlp: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(h [P, V], eta, kappa, s', q) [P, m] for a post-MLP RMSNorm (module docstring)."""
    p, d = op.post, op.d_model
    x = resid.to(torch.float64)
    m = mlp.to(torch.float64)
    sig2 = (m * m).mean(-1, keepdim=True) + p.eps
    sig = torch.sqrt(sig2)
    u = p.gamma * m / sig                                     # the clean post-norm MLP output
    q2 = (2.0 * c * (m @ p.W_raw.T) + c * c * p.raw_ww) / d
    sig_j = torch.sqrt(sig2 + q2)
    alpha = -q2 / (sig_j * (sig + sig_j))                     # sigma/sigma_j - 1
    beta = c / sig_j
    ru = (x * u).sum(-1, keepdim=True)
    uu = (u * u).sum(-1, keepdim=True)
    q = (2.0 * alpha * ru + 2.0 * beta * cl.xw + alpha * alpha * uu
         + 2.0 * alpha * beta * (u @ op.W.T) + beta * beta * op.ww) / d
    s_new = torch.sqrt(cl.s[:, None] ** 2 + q)
    return u @ op.U, alpha / s_new, beta / s_new, s_new, q


def _lse_post(out: Tensor, op: ClosedForm, logp: Tensor, y: Tensor, rho: Tensor,
              kappa: Tensor, bound: Tensor, h: Tensor, eta: Tensor, lp_max: Tensor,
              zero: Tensor, G0: Tensor, neuron_block: int, method: str) -> None:
    """out <- lse(ablated) - lse(clean) with the extra h term (compiled or eager kernel; the
    clean term by the same kernel, rho = kappa = eta = 0)."""
    dt = op.G.dtype
    kernel = _fused_lse() if method == "compiled" else None
    lp3, y3, h3 = logp[:, None, :], y[:, None, :], h[:, None, :]
    z0 = zero[..., None].to(dt)
    clean_args = (lp3, y3, G0[None], z0, z0, lp_max.to(dt), h3, z0)
    kernel, lse0 = _run_lse(kernel, clean_args)
    for j in range(0, out.shape[1], neuron_block):
        sl = slice(j, j + neuron_block)
        args = (lp3, y3, op.G[None, sl], rho[:, sl, None].to(dt), kappa[:, sl, None].to(dt),
                bound[:, sl].to(dt), h3, eta[:, sl, None].to(dt))
        used, lse = _run_lse(kernel, args)
        out[:, sl] = lse
        if used is not kernel:
            kernel, lse0 = _run_lse(None, clean_args)
    _rescue(lse0, logp, y, G0, zero, zero, h, zero)
    _rescue(out, logp, y, op.G, rho, kappa, h, eta)
    out -= lse0


def _exponent(logp: Tensor, y: Tensor, G: Tensor, rho: Tensor, kappa: Tensor,
              bound: Tensor, h: Tensor | None = None, eta: Tensor | None = None) -> Tensor:
    """logp + rho y + kappa G (+ eta h) - bound, one block-dtype tensor [P, m, V]."""
    z = logp - bound[..., None]
    z.addcmul_(rho, y)
    if h is not None:
        z.addcmul_(eta, h)
    return z.addcmul_(kappa, G)


def _lse_with_bound(logp: Tensor, y: Tensor, G: Tensor, rho: Tensor, kappa: Tensor,
                    bound: Tensor, h: Tensor | None = None,
                    eta: Tensor | None = None) -> Tensor:
    """log sum_v exp(logp + rho y + kappa G), float64 [P, m], in ONE pass (the compiled kernel).

    The known upper bound replaces the max pass of logsumexp (so a compiler fuses everything
    into a single exp-and-sum loop) and is added back in float64, exactly the value subtracted.
    The exponentials are taken in the block dtype and summed in float64: a float32 running sum
    drops the many small terms added after a large one (a downward bias that reached ~1e-5
    nats at V = 50257); the float64 sum costs ~3% on CPU."""
    e = _exponent(logp, y, G, rho, kappa, bound, h, eta).exp_()
    return torch.log(e.sum(-1, dtype=torch.float64)) + bound.to(torch.float64)


_SUM64_ELEMENTS = 1 << 18


def _lse_eager(logp: Tensor, y: Tensor, G: Tensor, rho: Tensor, kappa: Tensor,
               bound: Tensor, h: Tensor | None = None, eta: Tensor | None = None) -> Tensor:
    """_lse_with_bound without a compiler: the same exponent, exponentials and float64 sum."""
    e = _exponent(logp, y, G, rho, kappa, bound, h, eta).exp_()
    return torch.log(_sum64(e)) + bound.to(torch.float64)


def _sum64(e: Tensor) -> Tensor:
    """e.sum(-1) accumulated in float64. Eager torch casts the whole block to float64 first;
    on CPU that copy is ~10x cheaper in cache-sized row groups (then ~the float32 sum's cost)."""
    if e.device.type != "cpu":
        return e.sum(-1, dtype=torch.float64)
    rows = e.reshape(-1, e.shape[-1])
    out = torch.empty(rows.shape[0], dtype=torch.float64)
    step = max(1, _SUM64_ELEMENTS // rows.shape[1])
    for i in range(0, rows.shape[0], step):
        torch.sum(rows[i:i + step], -1, dtype=torch.float64, out=out[i:i + step])
    return out.view(e.shape[:-1])


def _run_lse(kernel, args: tuple) -> tuple[Any, Tensor]:
    """(the kernel that ran, its lse): the compiled `kernel`, or eager where it is None or
    fails (a backend failure switches the process to eager for good, see _guarded)."""
    lse = kernel(*args) if kernel is not None else None
    if lse is None:
        return None, _lse_eager(*args)
    return kernel, lse


_RESCUE_ELEMENTS = 1 << 22


def _rescue(lse: Tensor, logp: Tensor, y: Tensor, G: Tensor, rho: Tensor,
            kappa: Tensor, h: Tensor | None = None, eta: Tensor | None = None) -> None:
    """Pairs whose one-pass sum over- or underflowed (a logit shift or bound slack beyond ~88
    nats) come back non-finite: recompute those pairs only, in place, by the exact two-pass
    logsumexp in float64. logp, y [P, V]; G [m, V]; rho, kappa, lse [P, m]."""
    pi, ji = torch.nonzero(~torch.isfinite(lse), as_tuple=True)
    step = max(1, _RESCUE_ELEMENTS // logp.shape[-1])
    f64 = torch.float64
    for i in range(0, len(pi), step):
        p, j = pi[i:i + step], ji[i:i + step]
        z = torch.addcmul(logp[p].to(f64), rho[p, j, None].to(f64), y[p].to(f64))
        z.addcmul_(kappa[p, j, None].to(f64), G[j].to(f64))
        if h is not None:
            z.addcmul_(eta[p, j, None].to(f64), h[p].to(f64))
        lse[p, j] = torch.logsumexp(z, -1)


_KERNEL: dict[str, Any] = {}


def _fused_lse():
    """torch.compile'd _lse_with_bound (~3-6x the eager speed on CPU, where the d_mlp x V
    exponentials are the whole cost); None where compiling is off or fails (_lse_eager then
    computes both the clean and the ablated terms). Set RAREBENCH_COMPILE=0 to disable."""
    import os

    if "fn" not in _KERNEL:
        fn = None
        if os.environ.get("RAREBENCH_COMPILE", "1") != "0":
            try:
                fn = torch.compile(_lse_with_bound, dynamic=True)
            except Exception:  # no compiler toolchain: stay eager
                fn = None
        _KERNEL["fn"] = _guarded(fn) if fn else None
    return _KERNEL["fn"]


def _guarded(fn):
    def call(*args):
        try:
            return fn(*args)
        except Exception:  # a backend failure at first call: switch to eager for good
            _KERNEL["fn"] = None
            return None
    return call


def default_block_rows(op: ClosedForm) -> int:
    """How many [V] rows of a block fit the memory free on the device."""
    per_row = op.d_vocab * op.G.element_size() * _TEMPS_PER_ELEMENT
    rows = max(1, free_bytes(op.G.device) // per_row)
    # on CPU the fused kernel is fastest on cache-sized blocks (measured: 2048 rows of V=50257)
    return min(rows, _CPU_BLOCK_ROWS) if op.G.device.type == "cpu" else rows


METHODS = ("auto", "triton", "compiled", "eager")


def resolve_method(method: str, device: torch.device | str, dtype: torch.dtype) -> str:
    """'auto' -> the Triton kernel where it runs (CUDA), else the torch.compile'd kernel."""
    if method not in METHODS:
        raise BadInputError(f"method={method!r}; use one of {', '.join(METHODS)}")
    if method == "auto":
        return "triton" if (dtype != torch.float64 and lse_triton.available(device)) \
            else "compiled"
    if method == "triton" and not lse_triton.available(device):
        raise BadInputError("method='triton' needs Triton and a CUDA device "
                            "(or TRITON_INTERPRET=1 on CPU)")
    return method


def _positions_per_triton_call(op: ClosedForm) -> int:
    """The Triton path keeps only [P, V] float64 rows (y, log p and their casts) and [P, m]
    scalars alive, so it takes many positions per call: a full grid and few launches."""
    per_pos = op.d_vocab * 8 * 6 + len(op.neurons) * 8 * 12
    return int(max(1, min(_TRITON_MAX_POSITIONS, free_bytes(op.G.device) // per_pos)))


def closed_form_delta(op: ClosedForm, resid: Tensor, acts: Tensor, targets: Tensor,
                      values: Tensor, chunk: int | None = None, method: str = "auto") -> Tensor:
    """Delta CE (nats, float32) [N, m] for op's neurons; `acts`/`values` are over all d_mlp.

    `chunk` = block size in (position, neuron) rows of length V (for the 'triton' method: in
    positions); default from free memory. An out-of-memory error halves it and retries the
    same positions. `method`: 'auto' | 'triton' | 'compiled' | 'eager' (each within 1e-6 nats
    of float64, no systematic offset; they differ in speed)."""
    dev = op.G.device
    requested = method
    method = resolve_method(method, dev, op.G.dtype)
    if op.post is not None and method == "triton":
        if requested == "triton":
            raise BadInputError("method='triton' does not model a post-MLP norm (Gemma); use "
                                "'auto' or 'compiled'")
        method = "compiled"
    resid, targets = resid.to(dev), targets.to(dev, torch.long)
    mlp = None if op.post is None else op.post.mlp_out(acts.to(dev))
    acts, values = acts.to(dev)[:, op.neurons], values.to(dev)[op.neurons]
    n, m = acts.shape
    out = torch.empty(n, m, dtype=torch.float32, device=dev)
    if method == "triton":
        rows = chunk or _positions_per_triton_call(op)
    else:
        rows = chunk or default_block_rows(op)
    start = 0
    while start < n:
        def step(rows: int, start: int = start) -> tuple[int, Tensor]:
            p = max(1, min(n - start, rows if method == "triton" else rows // m))
            sl = slice(start, start + p)
            return p, _delta_positions(op, resid[sl], acts[sl], targets[sl], values,
                                       neuron_block=min(m, rows), method=method,
                                       mlp=None if mlp is None else mlp[sl])
        (p, block), rows = with_oom_backoff(step, rows, "closed-form block rows")
        out[start:start + p] = block
        start += p
    return out


def neuron_ablation_delta(resid: Tensor, acts: Tensor, targets: Tensor, W_out: Tensor,
                          W_U: Tensor, b_U: Tensor | None, norm: Any, values: Tensor,
                          neurons: Tensor | list[int] | None = None, chunk: int | None = None,
                          dtype: torch.dtype = torch.float32, method: str = "auto") -> Tensor:
    """Delta_j(t) = CE(z'_j(t), x_{t+1}) - CE(z(t), x_{t+1}) in nats, float32 [N, m].

    resid [N, d] = final hook_resid_post, acts [N, d_mlp] = final hook_post, targets [N] =
    x_{t+1}, values [d_mlp] = replacement (mu or 0); `neurons` selects columns (default all)."""
    op = prepare_closed_form(W_out, W_U, b_U, norm, neurons, dtype=dtype)
    return closed_form_delta(op, resid, acts, targets, values, chunk=chunk, method=method)


def clean_loss(resid: Tensor, targets: Tensor, W_U: Tensor, b_U: Tensor | None,
               norm: Any) -> Tensor:
    """CE [N] (float32) of the unablated logits Norm(resid) W_U + b_U, computed in float64."""
    empty = torch.zeros(0, W_U.shape[0], dtype=W_U.dtype, device=W_U.device)
    op = prepare_closed_form(empty, W_U, b_U, norm, neurons=[])
    return _clean(op, resid.to(W_U.device), targets.to(W_U.device, torch.long)).loss.float()


# ---- over a data set ---------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class NeuronInfluence:
    """Delta CE of mean/zero-ablating each final-layer neuron at every kept position."""

    delta: np.ndarray     # float32 [n_pos, d_mlp]
    row: np.ndarray       # int64 [n_pos]
    pos: np.ndarray       # int64 [n_pos]  (t)
    token: np.ndarray     # int64 [n_pos]  x_t
    target: np.ndarray    # int64 [n_pos]  x_{t+1}
    loss: np.ndarray      # float32 [n_pos] clean CE
    mean_act: np.ndarray  # float64 [d_mlp] mean activation over kept positions
    values: str = "mean"

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in
                ("delta", "row", "pos", "token", "target", "loss", "mean_act")}

    def __str__(self) -> str:
        mean = self.delta.mean(0) if len(self.delta) else np.zeros(self.delta.shape[1])
        return (f"NeuronInfluence({self.delta.shape[0]} positions x {self.delta.shape[1]} "
                f"neurons, {self.values}-ablation; mean clean loss {self.loss.mean():.4f} nats; "
                f"mean Delta in [{mean.min():.3g}, {mean.max():.3g}])")


def _as_numpy(rows: Any, keep: Any) -> tuple[np.ndarray, np.ndarray]:
    rows = np.asarray(rows.cpu() if isinstance(rows, Tensor) else rows, dtype=np.int64)
    keep = np.asarray(keep.cpu() if isinstance(keep, Tensor) else keep, dtype=bool)
    if rows.ndim != 2 or keep.shape != rows.shape:
        raise BadInputError(f"rows {rows.shape} and keep {keep.shape} must be the same [n_rows, T]")
    if keep[:, -1].any():
        raise BadInputError("keep marks the last position of a row, which has no next token; "
                            "build keep with harness.data.packing.keep_mask")
    return rows, keep


def _batches(n_rows: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n_rows, batch_size):
        yield slice(start, min(n_rows, start + batch_size))


def mean_activation(facade: Any, rows: np.ndarray, keep: np.ndarray, batch_size: int) -> np.ndarray:
    """mu_j over all kept positions (float64, streamed over row batches)."""
    total = torch.zeros(facade.d_mlp, dtype=torch.float64)
    count = 0
    for sl in _batches(len(rows), batch_size):
        mask = torch.from_numpy(keep[sl])
        with torch.no_grad():
            post = facade.forward_final(torch.from_numpy(rows[sl])).post
        total += post[mask.to(post.device)].to(torch.float64).sum(0).cpu()
        count += int(mask.sum())
    if count == 0:
        raise BadInputError("keep selects no positions; nothing to average")
    return (total / count).numpy()


def _values_vector(facade: Any, values: Values, rows: np.ndarray, keep: np.ndarray,
                   batch_size: int, store: Any, key: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(mu, replacement values) as float64 [d_mlp]."""
    def compute_mu() -> dict[str, np.ndarray]:
        return {"mean_act": mean_activation(facade, rows, keep, batch_size)}
    mu = (store.get_or_compute(store.child(key, "mean"), compute_mu, required=("mean_act",))
          if store is not None else compute_mu())["mean_act"]
    if isinstance(values, str):
        if values not in ("mean", "zero"):
            raise BadInputError(f"values={values!r}; use 'mean', 'zero' or a tensor [d_mlp]")
        return mu, (mu if values == "mean" else np.zeros_like(mu))
    vec = np.asarray(torch.as_tensor(values).detach().cpu(), dtype=np.float64)
    if vec.shape != (facade.d_mlp,):
        raise BadInputError(f"values has shape {vec.shape}; expected [d_mlp={facade.d_mlp}]")
    return mu, vec


def _values_spec(values: Values) -> str:
    if isinstance(values, str):
        return values
    data = np.asarray(torch.as_tensor(values).detach().cpu(), dtype=np.float64).tobytes()
    return "tensor:" + hashlib.sha256(data).hexdigest()


def data_digest(rows: np.ndarray, keep: np.ndarray) -> str:
    """sha256 of the evaluation rows and kept-position mask (part of every cache key)."""
    h = hashlib.sha256()
    for a in (rows.astype(np.int64), keep.astype(bool)):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _influence_batch(facade: Any, op: ClosedForm, rows: np.ndarray, keep: np.ndarray,
                     values: Tensor, row_offset: int, chunk: int | None,
                     method: str = "auto", precision: str = "fp32") -> dict[str, np.ndarray]:
    from harness.ablation.precision import clean_precision

    r, t = np.nonzero(keep)
    with torch.no_grad():
        with clean_precision(precision, facade.device):
            final = facade.forward_final(torch.from_numpy(rows))
        dev = final.resid.device
        ri, ti = torch.from_numpy(r).to(dev), torch.from_numpy(t).to(dev)
        resid = final.resid[ri, ti].to(op.G.device)
        acts = final.post[ri, ti].to(op.G.device)
        targets = torch.from_numpy(rows[r, t + 1]).to(op.G.device)
        delta = closed_form_delta(op, resid, acts, targets, values, chunk=chunk,
                                  method=method)
        loss = _clean(op, resid, targets).loss
    return {"delta": delta.cpu().numpy(), "row": (r + row_offset).astype(np.int64),
            "pos": t.astype(np.int64), "token": rows[r, t], "target": rows[r, t + 1],
            "loss": loss.float().cpu().numpy()}


def neuron_influence(facade: Any, rows: Any, keep: Any, values: Values = "mean",
                     batch_size: int = 8, store: Any = None, progress: bool = False,
                     chunk: int | None = None, method: str = "auto",
                     dtype: torch.dtype = torch.float32,
                     clean_precision: str = "fp32") -> NeuronInfluence:
    """Delta CE for every final-layer neuron at every kept position (row-major order).

    Two passes over the rows: mu_j over all kept positions, then the closed form per batch.
    With a ResultStore each batch is stored as it finishes, so an interrupted run resumes
    where it stopped and returns the same numbers. `clean_precision` (harness.ablation.
    precision): the model's own forward in fp32, tf32, bf16, or 'auto' - the fastest mode
    whose delta CE on the first row batch is within 1e-4 nats of fp32's (fp32 on CPU)."""
    from harness.ablation import precision as prec

    rows, keep = _as_numpy(rows, keep)
    prec.check(clean_precision, facade.device)
    mu, vec, op = None, None, None
    if clean_precision == "auto":
        mu, vec = _values_vector(facade, values, rows, keep, batch_size, None, None)
        op, sl0 = closed_form_for(facade, dtype=dtype), slice(0, batch_size)
        clean_precision, _errors = prec.choose(
            lambda p: torch.from_numpy(_influence_batch(
                facade, op, rows[sl0], keep[sl0], torch.from_numpy(vec), 0, chunk, method,
                p)["delta"]), facade.device)
    key = None
    if store is not None:
        extra = {} if clean_precision == "fp32" else {"clean_precision": clean_precision}
        key = store.key(kind="neuron_influence", model=facade.info(),
                        data=data_digest(rows, keep), values=_values_spec(values),
                        batch_size=batch_size, code=CODE_VERSION,
                        kernel=[resolve_method(method, facade.W_out.device, dtype), str(dtype)],
                        **extra)
        stored = store.load_or_none(key, _ARRAYS)  # corrupt: logged, removed, recomputed
        if stored is not None:
            return _from_arrays(stored, values)
    if vec is None:
        mu, vec = _values_vector(facade, values, rows, keep, batch_size, store, key)
    if op is None:
        op = closed_form_for(facade, dtype=dtype)
    values_t = torch.from_numpy(vec)
    parts = []
    batches = list(_batches(len(rows), batch_size))
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="neuron influence", unit="batch")
    for i, sl in enumerate(batches):
        def compute(sl: slice = sl) -> dict[str, np.ndarray]:
            return _influence_batch(facade, op, rows[sl], keep[sl], values_t, sl.start, chunk,
                                    method, clean_precision)
        parts.append(store.get_or_compute(store.child(key, f"batch{i:06d}"), compute,
                                          required=_ARRAYS[:-1])
                     if store is not None else compute())
    arrays = {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0)
              for k in ("delta", "row", "pos", "token", "target", "loss")}
    if not parts:
        arrays["delta"] = np.zeros((0, facade.d_mlp), np.float32)
    arrays["mean_act"] = mu
    if store is not None:
        store.save(key, arrays, {"kind": "neuron_influence", "values": _values_spec(values),
                                 "model": facade.info(), "n_rows": int(len(rows)),
                                 "batch_size": batch_size})
        for i in range(len(batches)):
            store.delete(store.child(key, f"batch{i:06d}"))
    return _from_arrays(arrays, values)


_ARRAYS = ("delta", "row", "pos", "token", "target", "loss", "mean_act")


def _from_arrays(a: dict[str, np.ndarray], values: Values) -> NeuronInfluence:
    return NeuronInfluence(delta=a["delta"].astype(np.float32), row=a["row"].astype(np.int64),
                           pos=a["pos"].astype(np.int64), token=a["token"].astype(np.int64),
                           target=a["target"].astype(np.int64), loss=a["loss"].astype(np.float32),
                           mean_act=a["mean_act"].astype(np.float64),
                           values=values if isinstance(values, str) else "tensor")
