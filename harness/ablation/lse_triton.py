"""Fused Triton kernel for the closed form's one hot loop: lse[p, j] over the vocabulary.

    lse[p, j] = log sum_v exp(logp[p, v] + rho[p, j] y[p, v] + kappa[p, j] G[j, v])

Why a hand-written kernel: per position this is d_mlp x V exponentials (3.2e8 at GPT-2-XL
shape), and the limit on an H100 is its exp units (~13k positions/s). Eager PyTorch
materialises the [P, m, V] block (memory-bound, ~100 positions/s); a generic compiled
reduction re-reads G [m, V] for every position. Here each program holds a tile of BLOCK_P
positions x BLOCK_M neurons and streams V once, so every G element loaded is used BLOCK_P
times, every logp/y element BLOCK_M times, and nothing but [P, m] is written.

The sum needs no running max: one pass, exp2 of a pre-scaled argument. By default it sums
exp(z) directly (log-probabilities plus a logit shift cannot overflow float32 unless the shift
exceeds ~88 nats); the `bound` variant first subtracts `bound[p, j]`, an analytic upper bound
of the exponent from neuron.py, and adds it back in float64. Either way a pair whose sum over-
or underflows comes back non-finite, and the caller recomputes it with the exact two-pass
logsumexp (the same contract as the compiled CPU kernel).

Exponentials are float32, their sum is not: each lane adds at most `flush` chunks in float32
and is then reduced and added into a float64 [P, m] accumulator (a float32 running sum over
all of V drops the small terms that come after a large one, a downward bias of up to ~1e-5
nats at V = 50257). The result is float64. neuron.py takes the clean logsumexp from this same
kernel (rho = kappa = 0), so what remains of its rounding cancels in Delta.

Tested on CPU under TRITON_INTERPRET=1 (tests/test_lse_triton.py); timed on GPU by
`rarebench bench`.
"""

from __future__ import annotations

import math
import os
from typing import Any, NamedTuple

import torch
from torch import Tensor

LOG2E = 1.0 / math.log(2.0)
LN2 = math.log(2.0)

try:  # Triton is optional: present with CUDA builds of PyTorch, absent on CPU-only installs
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where Triton is missing
    triton = None
    tl = None


FLUSH = 16  # chunks each float32 lane sums before they go into the float64 sum


class KernelConfig(NamedTuple):
    """Tile (positions x neurons x vocabulary chunk), warps, and code variants:
    `bound` subtracts the analytic per-pair bound inside the exponent (else the raw sum is taken,
    which only overflows for a logit shift > 88 nats and is then recomputed exactly), `ftz`
    uses the flush-to-zero hardware exp2 (inline PTX; CUDA only), `acc3d` keeps a per-lane
    float32 accumulator and reduces it over the lanes into the float64 sum every `flush`
    chunks (instead of every chunk)."""

    block_p: int = 8
    block_m: int = 32
    block_v: int = 32
    warps: int = 4
    bound: bool = False
    ftz: bool = True
    acc3d: bool = True
    flush: int = FLUSH

    @classmethod
    def parse(cls, text: str) -> "KernelConfig":
        """'16,16,32,4' or '16,16,32,4,nobound,ftz,acc3d,flush8' (RAREBENCH_LSE_TILE)."""
        parts = [x.strip() for x in text.split(",") if x.strip()]
        nums = [int(x) for x in parts[:4]]
        flags = set(parts[4:])
        flush = [f for f in flags if f.startswith("flush") and f[5:].isdigit() and int(f[5:])]
        unknown = flags - {"bound", "nobound", "ftz", "acc3d"} - set(flush)
        if len(nums) != 4 or unknown or len(flush) > 1:
            raise ValueError(f"bad kernel config {text!r}: want P,M,V,warps[,nobound][,ftz]"
                             f"[,acc3d][,flushN]")
        return cls(*nums, bound="nobound" not in flags, ftz="ftz" in flags,
                   acc3d="acc3d" in flags,
                   **({"flush": int(flush[0][5:])} if flush else {}))

    def label(self) -> str:
        flags = [f for f, on in (("nobound", not self.bound), ("ftz", self.ftz),
                                 ("acc3d", self.acc3d),
                                 (f"flush{self.flush}", self.acc3d and self.flush != FLUSH))
                 if on]
        return "x".join(map(str, self[:4])) + "".join("+" + f for f in flags)


# Chosen by measurement on an H100 at GPT-2-XL shape (reports/BENCHMARKS.md);
# `RAREBENCH_LSE_TILE` overrides it for experiments.
DEFAULT_CONFIG = KernelConfig()


def available(device: torch.device | str) -> bool:
    """True where the kernel can run: CUDA with Triton, or anywhere under TRITON_INTERPRET=1."""
    if triton is None or os.environ.get("RAREBENCH_TRITON", "1") == "0":
        return False
    if torch.device(device).type == "cuda":
        return True
    return interpreted()


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def config() -> KernelConfig:
    raw = os.environ.get("RAREBENCH_LSE_TILE")
    return KernelConfig.parse(raw) if raw else DEFAULT_CONFIG


if triton is not None:
    @triton.jit
    def _exp2(z, FTZ: tl.constexpr):
        if FTZ:
            return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=f,f", [z],
                                             dtype=tl.float32, is_pure=True, pack=1)
        else:
            return tl.exp2(z)

    # P varies from call to call: never specialise on it (a recompile inside a timed loop)
    @triton.jit(do_not_specialize=["P"])
    def _lse_kernel(L, Y, G, R, K, B, OUT, P, M, V: tl.constexpr,
                    stride_l, stride_y, stride_g, stride_r, stride_k, stride_b, stride_o,
                    BLOCK_P: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr,
                    BOUND: tl.constexpr, FTZ: tl.constexpr, ACC3D: tl.constexpr,
                    FLUSH: tl.constexpr):
        # program_id(0) walks positions fastest, so the programs in flight share one G tile
        # and re-read it from L2 rather than from device memory.
        pid_p = tl.program_id(0)
        pid_m = tl.program_id(1)
        offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        mask_p = offs_p < P
        mask_m = offs_m < M
        mask_pm = mask_p[:, None] & mask_m[None, :]
        # per (position, neuron) scalars, already in log2 units
        r = tl.load(R + offs_p[:, None] * stride_r + offs_m[None, :], mask=mask_pm, other=0.0)
        k = tl.load(K + offs_p[:, None] * stride_k + offs_m[None, :], mask=mask_pm, other=0.0)
        b = tl.load(B + offs_p[:, None] * stride_b + offs_m[None, :], mask=mask_pm, other=0.0)
        acc = tl.zeros((BLOCK_P, BLOCK_M), dtype=tl.float64)
        # V in windows of FLUSH chunks (the last window may run past V: masked, exp2 = 0)
        for w0 in range(0, V, BLOCK_V * FLUSH):
            if ACC3D:
                acc3 = tl.zeros((BLOCK_P, BLOCK_M, BLOCK_V), dtype=tl.float32)
            for i in range(FLUSH):
                offs_v = w0 + i * BLOCK_V + tl.arange(0, BLOCK_V)
                mask_v = offs_v < V
                mask_pv = mask_p[:, None] & mask_v[None, :]
                l = tl.load(L + offs_p[:, None] * stride_l + offs_v[None, :], mask=mask_pv,
                            other=float("-inf"))
                y = tl.load(Y + offs_p[:, None] * stride_y + offs_v[None, :], mask=mask_pv,
                            other=0.0)
                g = tl.load(G + offs_m[:, None] * stride_g + offs_v[None, :],
                            mask=mask_m[:, None] & mask_v[None, :], other=0.0).to(tl.float32)
                if BOUND:
                    z = (l[:, None, :] - b[:, :, None]) + r[:, :, None] * y[:, None, :] \
                        + k[:, :, None] * g[None, :, :]
                else:
                    z = l[:, None, :] + r[:, :, None] * y[:, None, :] \
                        + k[:, :, None] * g[None, :, :]
                e = _exp2(z, FTZ)
                if ACC3D:
                    acc3 += e
                else:
                    acc += tl.sum(e, axis=2).to(tl.float64)
            if ACC3D:
                acc += tl.sum(acc3, axis=2).to(tl.float64)
        # the sum itself (float64); the caller takes log2 and adds the bound back in float64
        tl.store(OUT + offs_p[:, None] * stride_o + offs_m[None, :], acc, mask=mask_pm)


def lse_bounded(logp: Tensor, y: Tensor, G: Tensor, rho: Tensor, kappa: Tensor,
                bound: Tensor, tile_spec: KernelConfig | tuple | None = None) -> Tensor:
    """lse [P, m] float64; logp, y [P, V]; G [m, V]; rho, kappa, bound [P, m] (natural log
    units; rescaled to log2 here). All on one device; float32 (G may be bf16/fp16).
    Non-finite entries mean 'recompute exactly' (see the module docstring)."""
    if triton is None:
        raise RuntimeError("Triton is not installed")
    cfg = config() if tile_spec is None else KernelConfig(*tile_spec)
    if cfg.ftz and (interpreted() or logp.device.type != "cuda"):
        cfg = cfg._replace(ftz=False)  # inline PTX exists only on CUDA
    P, V = logp.shape
    M = G.shape[0]
    f32 = torch.float32
    L2 = (logp.to(f32) * LOG2E).contiguous()
    Yc = y.to(f32).contiguous()
    Gc = G.contiguous()
    R2 = (rho.to(f32) * LOG2E).contiguous()
    K2 = (kappa.to(f32) * LOG2E).contiguous()
    B2 = (bound.to(f32) * LOG2E).contiguous()
    acc = torch.empty(P, M, dtype=torch.float64, device=logp.device)
    if M < cfg.block_m:  # e.g. the clean row (M = 1): fewer idle neuron lanes
        cfg = cfg._replace(block_m=min(cfg.block_m, max(16, triton.next_power_of_2(M))))
    grid = (triton.cdiv(P, cfg.block_p), triton.cdiv(M, cfg.block_m))
    kwargs: dict[str, Any] = {"BLOCK_P": cfg.block_p, "BLOCK_M": cfg.block_m,
                              "BLOCK_V": cfg.block_v, "BOUND": cfg.bound, "FTZ": cfg.ftz,
                              "ACC3D": cfg.acc3d, "FLUSH": cfg.flush if cfg.acc3d else 1}
    if logp.device.type == "cuda":
        kwargs["num_warps"] = cfg.warps
    compiled = _lse_kernel[grid](L2, Yc, Gc, R2, K2, B2, acc, P, M, V,
                                 L2.stride(0), Yc.stride(0), Gc.stride(0), R2.stride(0),
                                 K2.stride(0), B2.stride(0), acc.stride(0), **kwargs)
    _LAST["compiled"] = compiled
    out = torch.log2(acc)
    if cfg.bound:
        out += B2  # exactly the float32 value the kernel subtracted
    return out.mul_(LN2)


_LAST: dict[str, Any] = {}  # the last launch's compiled kernel (registers, spills, PTX)
