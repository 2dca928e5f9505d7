"""Cases for tests/test_lse_triton.py, run in a child process started with TRITON_INTERPRET=1
(Triton reads it when it is first imported, so the parent test process cannot switch it on).
Prints one JSON object: case name -> max abs error (or an error message).

`python lse_triton_cases.py --deltas IN OUT` instead runs the Triton closed form on the problems
torch.save'd in IN (a list of neuron_ablation_delta argument tuples) and saves the Deltas to OUT
(tests/test_kernel_exactness.py). Also shared by the tests: `problem` (a random closed-form
problem) and `brute_force_delta` (the float64 definition of Delta)."""

from __future__ import annotations

import json
import os
import sys

import torch

from harness.ablation import lse_triton
from harness.ablation.neuron import neuron_ablation_delta
from harness.models.facade import NormSpec

TILES = ["1,16,32,4", "4,32,64,4", "8,16,16,8", "4,16,32,4,nobound", "2,16,32,4,acc3d",
         "4,16,32,4,nobound,acc3d,flush3"]


def problem(kind: str, seed: int, n=7, d=24, m=45, v=301):
    """Ragged sizes on purpose (n, m, V not multiples of any tile): masking is exercised."""
    gen = torch.Generator().manual_seed(seed)
    resid = 3 * torch.randn(n, d, generator=gen)
    acts = torch.randn(n, m, generator=gen)
    W_out, W_U = 0.5 * torch.randn(m, d, generator=gen), 2 * torch.randn(d, v, generator=gen)
    b_U, values = torch.randn(v, generator=gen), torch.randn(m, generator=gen)
    norm = NormSpec(kind, 0.5 + torch.rand(d, generator=gen),
                    torch.randn(d, generator=gen) if kind == "layernorm" else None, 1e-5)
    targets = torch.randint(0, v, (n,), generator=gen)
    return resid, acts, targets, W_out, W_U, b_U, norm, values


def brute_force_delta(resid, acts, targets, W_out, W_U, b_U, norm, values,
                      max_elements: int = 1 << 23):
    """(Delta [N, m], clean CE [N]) by materialising every ablated residual x + c_j w_j and
    running final norm -> logits -> cross-entropy, all in float64 (chunked over positions)."""
    f64 = NormSpec(norm.kind, norm.gamma.double(),
                   None if norm.beta is None else norm.beta.double(), norm.eps)
    W_U = W_U.double()
    bias = torch.zeros(W_U.shape[1], dtype=torch.float64) if b_U is None else b_U.double()

    def ce(x, t):
        logp = torch.log_softmax(f64.apply(x) @ W_U + bias, -1)
        idx = t.view(-1, *([1] * (x.dim() - 1))).expand(*x.shape[:-1], 1)
        return -logp.gather(-1, idx)[..., 0]

    x, W = resid.double(), W_out.double()
    c = values.double()[None, :] - acts.double()
    step = max(1, max_elements // (W.shape[0] * W_U.shape[1]))
    delta, loss = [], []
    for i in range(0, len(x), step):
        xs, cs, ts = x[i:i + step], c[i:i + step], targets[i:i + step]
        clean = ce(xs, ts)
        delta.append(ce(xs[:, None, :] + cs[:, :, None] * W[None], ts) - clean[:, None])
        loss.append(clean)
    return torch.cat(delta), torch.cat(loss)


def closed_form_cases(out: dict) -> None:
    for kind in ("layernorm", "rmsnorm"):
        for tile in TILES:
            os.environ["RAREBENCH_LSE_TILE"] = tile
            cfg = lse_triton.KernelConfig.parse(tile)
            args = problem(kind, seed=sum(cfg[:4]))
            ref = neuron_ablation_delta(*args, dtype=torch.float64, method="eager").double()
            got = neuron_ablation_delta(*args, method="triton", chunk=3).double()
            out[f"closed_form-{kind}-{cfg.label()}"] = {
                "err": (got - ref).abs().max().item(), "ref_absmax": ref.abs().max().item()}
    os.environ.pop("RAREBENCH_LSE_TILE")


def raw_kernel_case(out: dict) -> None:
    gen = torch.Generator().manual_seed(3)
    P, M, V = 5, 19, 133
    logp = torch.log_softmax(4 * torch.randn(P, V, generator=gen), -1)
    y, G = torch.randn(P, V, generator=gen), torch.randn(M, V, generator=gen)
    rho, kappa = 0.3 * torch.randn(P, M, generator=gen), torch.randn(P, M, generator=gen)
    z = logp[:, None] + rho[..., None] * y[:, None] + kappa[..., None] * G[None]
    bound = z.amax(-1) + torch.rand(P, M, generator=gen)  # an upper bound, not the max
    got = lse_triton.lse_bounded(logp, y, G, rho, kappa, bound, tile_spec=(2, 8, 32, 4))
    out["raw"] = {"err": (got - torch.logsumexp(z, -1)).abs().max().item()}


def _through_perturbed_kernel(kind: str, seed: int, perturb, tile: str | None = None):
    """(max abs error vs float64, non-finite pairs the kernel returned) when `perturb` edits the
    kernel's inputs (rho, kappa, bound) for a few pairs inside the call only: those pairs must
    come back non-finite and be recomputed exactly by the caller."""
    args = problem(kind, seed=seed)
    ref = neuron_ablation_delta(*args, dtype=torch.float64, method="eager").double()
    real, seen = lse_triton.lse_bounded, {}

    def edited(logp, y, G, rho, kappa, bound, tile_spec=None):
        rho, kappa, bound = perturb(rho.clone(), kappa.clone(), bound.clone())
        raw = real(logp, y, G, rho, kappa, bound, tile_spec)
        seen["non_finite"] = int((~torch.isfinite(raw)).sum())
        return raw

    lse_triton.lse_bounded = edited
    if tile:
        os.environ["RAREBENCH_LSE_TILE"] = tile
    try:
        got = neuron_ablation_delta(*args, method="triton").double()
    finally:
        lse_triton.lse_bounded = real
        os.environ.pop("RAREBENCH_LSE_TILE", None)
    return {"err": (got - ref).abs().max().item(), **seen}


def underflow_case(out: dict) -> None:
    """A bound so loose that every exp underflows (a variant that subtracts the bound)."""
    def loose(rho, kappa, bound):
        bound[0, :3] += 500.0  # exp(z - bound) == 0 in float32 for these pairs
        return rho, kappa, bound
    out["underflow"] = _through_perturbed_kernel("layernorm", 5, loose, tile="4,16,32,4")


def overflow_case(out: dict) -> None:
    """The default variant sums exp(z) with no bound: a logit shift that overflows float32."""
    def huge(rho, kappa, bound):
        kappa[1, :2] *= 1e6  # exp(kappa G) = inf in float32 for these pairs
        return rho, kappa, bound
    out["overflow"] = {**_through_perturbed_kernel("rmsnorm", 6, huge),
                       "default_bound": lse_triton.DEFAULT_CONFIG.bound}


def oom_case(out: dict) -> None:
    """On the Triton path the block is counted in positions: an out-of-memory error halves it
    and the same positions are retried, with the same numbers."""
    from harness.ablation import neuron

    args = problem("layernorm", seed=7)
    ref = neuron_ablation_delta(*args, dtype=torch.float64, method="eager").double()
    real, sizes = neuron._delta_positions, []

    def flaky(op, resid, *rest, **kw):
        sizes.append(len(resid))
        if len(resid) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real(op, resid, *rest, **kw)

    neuron._delta_positions = flaky
    try:
        got = neuron_ablation_delta(*args, method="triton", chunk=8).double()
    finally:
        neuron._delta_positions = real
    out["oom"] = {"err": (got - ref).abs().max().item(), "sizes": sizes}


def deltas(src: str, dst: str) -> None:
    """Triton closed-form Deltas (float64 copies of the float32 result) for each saved problem,
    with the default kernel configuration except for the position block: the interpreter's
    cost is per operation, so all positions go in one program. Each (position, neuron) pair's
    arithmetic does not depend on the position block (the V chunk and the float64 flush
    window, which do, are the default's)."""
    problems = torch.load(src, weights_only=False)
    n = max(len(args[0]) for args in problems)
    lse_triton.DEFAULT_CONFIG = lse_triton.DEFAULT_CONFIG._replace(
        block_p=triton_next_power_of_2(n))
    torch.save([neuron_ablation_delta(*args, method="triton").double() for args in problems],
               dst)


def triton_next_power_of_2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def main() -> None:
    assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
    if sys.argv[1:2] == ["--deltas"]:
        return deltas(*sys.argv[2:4])
    out: dict = {}
    for case in (closed_form_cases, raw_kernel_case, underflow_case, overflow_case, oom_case):
        try:
            case(out)
        except Exception as exc:  # reported, and failed, by the parent test
            out[case.__name__] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
