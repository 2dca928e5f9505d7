"""Tile sweep of the Triton closed-form kernel at a given model shape (GPU only).

    python3 -m harness.ablation.bench_kernel --positions 1024 [--json]

Why separate from `rarebench bench`: that command times the whole pipeline on a model; this
one isolates the d_mlp x V exp-and-sum kernel on synthetic inputs of the same shape, so tile
shapes can be compared against the exp-unit limit (exps/s) without a forward pass in the way.
Each tile is checked against a float64 closed form on a few positions before it is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from typing import Any

import torch

from harness.ablation import lse_triton
from harness.ablation.bench import GPT2_XL, ModelShape, _time_closed_form
from harness.ablation.neuron import closed_form_delta, prepare_closed_form
from harness.models.facade import NormSpec

CONFIGS = ["16,16,32,4", "16,16,32,4,nobound", "16,16,32,4,ftz", "16,16,32,4,nobound,ftz",
           "16,16,32,4,nobound,ftz,acc3d", "16,32,32,8,nobound,ftz", "32,16,32,8,nobound,ftz",
           "32,16,16,4,nobound,ftz", "16,8,64,4,nobound,ftz", "32,32,32,8,nobound,ftz",
           "16,16,64,8,nobound,ftz", "32,8,32,4,nobound,ftz", "64,16,16,8,nobound,ftz",
           "32,32,16,8,nobound,ftz"]


def synthetic(shape: ModelShape, positions: int, device: str, seed: int = 0) -> dict[str, Any]:
    """Random weights at GPT-2 init scale and residuals with GPT-2-like norms."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    d, m, V = shape.d_model, shape.d_mlp, shape.d_vocab
    W_out = (0.02 * torch.randn(m, d, generator=gen)).to(device)
    W_U = (0.02 * torch.randn(d, V, generator=gen)).to(device)
    norm = NormSpec("layernorm", (1 + 0.1 * torch.randn(d, generator=gen)).to(device),
                    (0.05 * torch.randn(d, generator=gen)).to(device), 1e-5)
    resid = (3 * torch.randn(positions, d, generator=gen)).to(device)
    acts = torch.randn(positions, m, generator=gen).clamp_min(-0.17).to(device)
    targets = torch.randint(0, V, (positions,), generator=gen).to(device)
    return {"W_out": W_out, "W_U": W_U, "norm": norm, "resid": resid, "acts": acts,
            "targets": targets, "values": acts.double().mean(0)}


def _time(fn, repeats: int = 3) -> float:
    if not torch.cuda.is_available():  # CPU (interpreter) smoke runs: wall clock
        import time

        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def sweep(shape: ModelShape = GPT2_XL, positions: int = 1024, tiles=CONFIGS,
          err_positions: int = 8, device: str = "cuda", asm_dir: str | None = None,
          baselines: bool = True) -> dict[str, Any]:
    data = synthetic(shape, positions, device)
    op = prepare_closed_form(data["W_out"], data["W_U"], None, data["norm"])
    op64 = prepare_closed_form(data["W_out"], data["W_U"], None, data["norm"],
                               dtype=torch.float64)
    k = err_positions
    ref = closed_form_delta(op64, data["resid"][:k], data["acts"][:k], data["targets"][:k],
                            data["values"]).double()
    del op64
    torch.cuda.empty_cache()
    args = (op, data["resid"], data["acts"], data["targets"], data["values"])
    exps = positions * shape.d_mlp * shape.d_vocab
    gen = torch.Generator(device=device).manual_seed(1)
    P, m, V = positions, shape.d_mlp, shape.d_vocab
    logp = torch.log_softmax(3 * torch.randn(P, V, generator=gen, device=device), -1)
    y = torch.randn(P, V, generator=gen, device=device)
    rho = 1e-3 * torch.randn(P, m, generator=gen, device=device)
    kappa = 0.1 * torch.randn(P, m, generator=gen, device=device)
    bound = (logp.amax(-1, keepdim=True) + rho.abs() * y.abs().amax(-1, keepdim=True)
             + kappa.abs() * op.G_absmax[None, :])
    rows = []
    for text in tiles:
        os.environ["RAREBENCH_LSE_TILE"] = text
        tile = lse_triton.KernelConfig.parse(text)
        try:
            got = closed_form_delta(op, *[a[:k] for a in args[1:4]], data["values"],
                                    method="triton").double()
            err = (got - ref).abs().max().item()
            secs = _time(lambda: closed_form_delta(*args, method="triton"))
            ksecs = _time(lambda: lse_triton.lse_bounded(logp, y, op.G, rho, kappa, bound,
                                                         tile_spec=tile))
            compiled = lse_triton._LAST.get("compiled")
            rows.append({"tile": tile.label(), "max_abs_err_nats": err, "seconds": secs,
                         "positions_per_s": positions / secs, "exps_per_s": exps / secs,
                         "kernel_seconds": ksecs, "kernel_exps_per_s": exps / ksecs,
                         "n_regs": getattr(compiled, "n_regs", None),
                         "n_spills": getattr(compiled, "n_spills", None)})
            if asm_dir and compiled is not None and hasattr(compiled, "asm"):
                os.makedirs(asm_dir, exist_ok=True)
                for kind in ("ptx", "sass"):
                    try:
                        text_asm = compiled.asm[kind]
                    except Exception:  # sass needs cuobjdump
                        continue
                    with open(os.path.join(asm_dir, f"{tile.label()}.{kind}"), "w") as fh:
                        fh.write(text_asm if isinstance(text_asm, str) else str(text_asm))
        except Exception as exc:  # a tile that does not compile (registers, shared memory)
            rows.append({"tile": tile.label(), "error": f"{type(exc).__name__}: {exc}"[:300]})
        print(_row(rows[-1]), flush=True)
    os.environ.pop("RAREBENCH_LSE_TILE", None)
    base = {}
    for name in ("compiled", "eager") if baselines else ():
        n = min(positions, 64)
        _, secs = _time_closed_form(op, *[a[:n] for a in args[1:4]], data["values"], name,
                                    torch.device(device))
        base[name] = {"positions": n, "positions_per_s": n / secs}
        print(f"{name:>10}: {n / secs:10.1f} positions/s", flush=True)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else device
    return {"device": name, "shape": shape.__dict__,
            "positions": positions, "tiles": rows, "baselines": base,
            "triton": getattr(lse_triton.triton, "__version__", None)}


def _row(r: dict[str, Any]) -> str:
    tile = r["tile"]
    if "error" in r:
        return f"{tile:>30}: {r['error']}"
    return (f"{tile:>30}: {r['positions_per_s']:10.1f} positions/s  "
            f"{r['exps_per_s']:.3g} exp/s (kernel alone {r['kernel_exps_per_s']:.3g})  "
            f"err {r['max_abs_err_nats']:.2e} nats  regs {r['n_regs']} spills {r['n_spills']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--positions", type=int, default=1024)
    p.add_argument("--json", action="store_true")
    p.add_argument("--configs", default=None,
                   help="';'-separated kernel configs (P,M,V,warps[,nobound][,ftz][,acc3d])")
    p.add_argument("--asm-dir", default=None, help="write each config's PTX/SASS here")
    p.add_argument("--no-baselines", action="store_true")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_kernel needs a CUDA device")
        return 2
    configs = args.configs.split(";") if args.configs else CONFIGS
    res = sweep(positions=args.positions, tiles=configs, asm_dir=args.asm_dir,
                baselines=not args.no_baselines)
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
