"""`rarebench bench`: speed and accuracy of the closed-form neuron ablation vs hooked forwards.

Why in one process: the comparison is only fair when both methods see the same model, the
same positions and the same device. The hooked baseline runs one forward per neuron; it is
timed on a sample of neurons and extrapolated to all d_mlp (the JSON says so).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from harness.ablation.hooked import hooked_neuron_delta
from harness.ablation.neuron import closed_form_delta, closed_form_for, resolve_method


@dataclass(frozen=True)
class ModelShape:
    family: str = "gpt2"   # 'gpt2' | 'neox' | 'llama' | 'gemma'
    n_layers: int = 4
    d_model: int = 48
    n_heads: int = 4
    d_mlp: int = 512
    d_vocab: int = 50257
    n_ctx: int = 256
    n_kv_heads: int | None = None  # llama/gemma grouped-query heads; None: n_heads // 2 / 1


TINY = ModelShape()
GPT2_XL = ModelShape("gpt2", n_layers=48, d_model=1600, n_heads=25, d_mlp=6400, n_ctx=1024)
PYTHIA_1B = ModelShape("neox", n_layers=16, d_model=2048, n_heads=8, d_mlp=8192,
                       d_vocab=50304, n_ctx=2048)
SMOLLM2 = ModelShape("llama", n_layers=30, d_model=576, n_heads=9, d_mlp=1536, d_vocab=49152,
                     n_ctx=8192, n_kv_heads=3)  # SmolLM2-135M
# `bench --suite --shape NAME`: the real models' dimensions (random weights), and a tiny one
# that runs the whole claim suite on a CPU in seconds. Untied/tied embeddings are not part of
# the shape (random_model ties them; Pythia's are untied: ~103M parameters more there).
SHAPES = {
    "tiny": ModelShape("gpt2", n_layers=2, d_model=64, n_heads=4, d_mlp=256, d_vocab=2000,
                       n_ctx=128),
    "gpt2-xl": GPT2_XL,
    "pythia-1b": PYTHIA_1B,
    "smollm2": SMOLLM2,
}


def _hf_config(shape: ModelShape, tied: bool, init_std: float) -> Any:
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

    if shape.family == "gpt2":
        return GPT2Config(vocab_size=shape.d_vocab, n_positions=shape.n_ctx, n_embd=shape.d_model,
                          n_layer=shape.n_layers, n_head=shape.n_heads, n_inner=shape.d_mlp,
                          tie_word_embeddings=tied, initializer_range=init_std)
    if shape.family == "neox":
        return GPTNeoXConfig(vocab_size=shape.d_vocab, hidden_size=shape.d_model,
                             num_hidden_layers=shape.n_layers, num_attention_heads=shape.n_heads,
                             intermediate_size=shape.d_mlp, max_position_embeddings=shape.n_ctx,
                             tie_word_embeddings=tied, initializer_range=init_std)
    if shape.family == "llama":
        return LlamaConfig(vocab_size=shape.d_vocab, hidden_size=shape.d_model,
                           num_hidden_layers=shape.n_layers, num_attention_heads=shape.n_heads,
                           num_key_value_heads=shape.n_kv_heads or max(1, shape.n_heads // 2),
                           intermediate_size=shape.d_mlp, max_position_embeddings=shape.n_ctx,
                           tie_word_embeddings=tied, initializer_range=init_std)
    if shape.family == "gemma":  # Gemma-3 text block: post-norms, (1 + w) norms, GeGLU
        from transformers import Gemma3TextConfig

        head_dim = max(8, shape.d_model // shape.n_heads)
        return Gemma3TextConfig(architectures=["Gemma3ForCausalLM"], vocab_size=shape.d_vocab, hidden_size=shape.d_model,
                                num_hidden_layers=shape.n_layers,
                                num_attention_heads=shape.n_heads,
                                num_key_value_heads=shape.n_kv_heads or 1,
                                head_dim=head_dim, query_pre_attn_scalar=head_dim,
                                intermediate_size=shape.d_mlp,
                                max_position_embeddings=shape.n_ctx, sliding_window=16,
                                tie_word_embeddings=tied, initializer_range=init_std,
                                final_logit_softcapping=None, attn_logit_softcapping=None)
    raise ValueError(f"unknown family {shape.family!r}")


def random_model(shape: ModelShape = TINY, seed: int = 0, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, tied: bool = True,
                 init_std: float = 0.02) -> Any:
    """A randomly initialised HF model of `shape` wrapped as a ModelFacade (no download).

    Only the config is written to disk (the bridge reads it from a directory)."""
    from transformers import AutoModelForCausalLM

    from harness.data.tokenizer import gpt2_tokenizer
    from harness.models.facade import ModelFacade

    config = _hf_config(shape, tied, init_std)
    torch.manual_seed(seed)
    # initialise on the target device: a GPT-2-XL-sized init on the host takes a minute
    with torch.device(device if str(device).startswith("cuda") else "cpu"):
        hf_model = AutoModelForCausalLM.from_config(config).to(dtype=dtype).eval()
    with tempfile.TemporaryDirectory(prefix="rarebench-random-") as tmp:
        config.save_pretrained(tmp)
        return ModelFacade.from_hf(hf_model, gpt2_tokenizer(), name=f"random-{shape.family}",
                                   device=device, source=tmp)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Any, device: torch.device) -> tuple[Any, float]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def _n_params(facade: Any) -> int:
    return sum(p.numel() for p in facade.hf_model.parameters())


def _time_closed_form(op: Any, resid: Tensor, acts: Tensor, targets: Tensor, values: Tensor,
                      method: str, device: torch.device) -> tuple[Tensor, float]:
    """Closed-form Deltas timed after a warm-up on a few positions (JIT compilation of the
    Triton / torch.compile kernels is a one-off per process, not a per-position cost)."""
    warm = min(4, len(resid))
    closed_form_delta(op, resid[:warm], acts[:warm], targets[:warm], values, method=method)
    return _timed(lambda: closed_form_delta(op, resid, acts, targets, values, method=method),
                  device)


def run_bench(facade: Any, n_positions: int = 256, hooked_neurons: int = 8,
              err_positions: int = 16, seed: int = 0,
              baseline_positions: int = 64) -> dict[str, Any]:
    """Positions/s of (a) one hooked forward per neuron (sampled, extrapolated), (b) the closed
    form (forward_final + all-neuron Deltas; the kernel 'auto' picks: Triton on CUDA) and the
    closed form's slower kernels on `baseline_positions`, and the closed form's error."""
    device = torch.device(facade.device)
    gen = torch.Generator().manual_seed(seed)
    seq_len = min(64, facade.bridge.cfg.n_ctx)
    n_rows = max(1, math.ceil(n_positions / (seq_len - 1)))
    tokens = torch.randint(0, facade.d_vocab, (n_rows, seq_len), generator=gen)
    keep = torch.zeros(tokens.shape, dtype=torch.bool)
    keep[:, :-1] = True
    keep.view(-1)[torch.nonzero(keep.view(-1))[n_positions:, 0]] = False
    n_pos = int(keep.sum())
    r, t = torch.nonzero(keep, as_tuple=True)

    with torch.no_grad():
        op, setup_s = _timed(lambda: closed_form_for(facade), device)
        final, fwd_s = _timed(lambda: facade.forward_final(tokens), device)
        resid, acts = final.resid[r, t], final.post[r, t]
        targets = tokens[r, t + 1]
        values = acts.double().mean(0)
        kernel = resolve_method("auto", op.G.device, op.G.dtype)
        delta, delta_s = _time_closed_form(op, resid, acts, targets, values, "auto", device)

        n_base = min(n_pos, baseline_positions)
        kernels: dict[str, dict[str, Any]] = {}
        for name in ("compiled", "eager"):
            if name == kernel:
                continue
            sub, sub_s = _time_closed_form(op, resid[:n_base], acts[:n_base],
                                           targets[:n_base], values, name, device)
            kernels[name] = {"positions_per_s": n_base / sub_s, "positions": n_base,
                             "max_abs_diff_vs_closed_form_nats":
                                 (sub.double() - delta[:n_base].double()).abs().max().item()}

        sample = torch.randperm(facade.d_mlp, generator=gen)[:hooked_neurons].tolist()
        hooked, hooked_s = _timed(
            lambda: hooked_neuron_delta(facade, tokens, sample, values, keep=keep), device)
        _, clean_s = _timed(lambda: facade.run_with_hooks(tokens), device)
        per_neuron_s = max(hooked_s - clean_s, 1e-9) / len(sample)

        k = min(err_positions, n_pos)
        op64 = closed_form_for(facade, dtype=torch.float64)
        ref = closed_form_delta(op64, resid[:k], acts[:k], targets[:k], values).double()
        del op64
        err_fp64 = (delta[:k].double() - ref).abs().max().item()
        err_hooked = (delta[:, sample].cpu().double() - hooked.double()).abs().max().item()

    m, V, d = facade.d_mlp, facade.d_vocab, facade.d_model
    hooked_pps = n_pos / (clean_s + per_neuron_s * m)
    closed_pps = n_pos / (fwd_s + delta_s)
    forward_flops = 2 * _n_params(facade)
    methods: dict[str, Any] = {
        "hooked": {"positions_per_s": hooked_pps, "neurons_timed": len(sample),
                   "extrapolated_to_d_mlp": True, "seconds_per_neuron": per_neuron_s},
        "closed_form": {"positions_per_s": closed_pps, "kernel": kernel,
                        "deltas_positions_per_s": n_pos / delta_s,
                        "max_abs_err_nats": err_fp64,
                        "max_abs_err_vs_hooked_nats": err_hooked, "forward_s": fwd_s,
                        "delta_s": delta_s, "setup_s": setup_s, "error_positions": k},
    }
    for name, row in kernels.items():
        methods[f"closed_form_{name}"] = row
    speedup = {"closed_form": closed_pps / hooked_pps}
    for name, row in kernels.items():
        # kernel vs kernel: Deltas only (the forward is the same for both)
        speedup[f"closed_form_vs_{name}"] = (n_pos / delta_s) / row["positions_per_s"]
    return {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "model_shape": {"name": facade.name, "family": facade.family, "n_layers": facade.n_layers,
                        "d_model": d, "d_mlp": m, "d_vocab": V, "dtype": str(facade.dtype)},
        "positions": n_pos,
        "methods": methods,
        "speedup_vs_hooked": speedup,
        "flops_per_position": 7 * m * V + 2 * d * V + 4 * d * m + forward_flops,
        "exps_per_position": m * V + V,
        "hooked_flops_per_position": m * forward_flops,
        "hooked_exps_per_position": m * V,
    }


def _models(choice: str | None, device: str, dtype: torch.dtype = torch.float32) -> list[Any]:
    """The benchmark models: the committed tiny fixture (else a random model of its shape),
    plus a random GPT-2-XL-shaped model on CUDA."""
    names = [n.strip() for n in choice.split(",") if n.strip()] if choice else \
        ["tiny"] + (["gpt2-xl-shape"] if device.startswith("cuda") else [])
    out = []
    for name in names:
        if name == "gpt2-xl-shape":
            out.append(random_model(GPT2_XL, device=device, dtype=dtype))
            continue
        if name != "tiny":  # a registry model or a path: its real weights
            from harness.models.loading import load_model

            out.append(load_model(name, device=device, dtype=dtype))
            continue
        fixture = Path(__file__).resolve().parents[2] / "fixtures" / "models" / "tiny-gpt2"
        if fixture.is_dir():
            from harness.models.loading import load_model

            out.append(load_model(str(fixture), device=device, dtype=dtype))
        else:
            out.append(random_model(TINY, device=device, dtype=dtype))
    return out


def _format(res: dict[str, Any]) -> str:
    ms, meth = res["model_shape"], res["methods"]
    return "\n".join([
        f"{ms['name']} (L={ms['n_layers']}, d={ms['d_model']}, d_mlp={ms['d_mlp']}, "
        f"V={ms['d_vocab']}) on {res['device']}, {res['positions']} positions",
        f"  hooked (1 forward/neuron; {meth['hooked']['neurons_timed']} neurons timed, "
        f"extrapolated): {meth['hooked']['positions_per_s']:.3g} positions/s",
        f"  closed form (all neurons, {meth['closed_form']['kernel']} kernel): "
        f"{meth['closed_form']['positions_per_s']:.3g} positions/s "
        f"(speed-up x{res['speedup_vs_hooked']['closed_form']:.3g}); max |err| vs fp64 "
        f"{meth['closed_form']['max_abs_err_nats']:.2e} nats, vs hooked "
        f"{meth['closed_form']['max_abs_err_vs_hooked_nats']:.2e} nats",
        *[f"  closed form, {name[len('closed_form_'):]} kernel ({row['positions']} positions): "
          f"{row['positions_per_s']:.3g} positions/s (Deltas only; the default kernel is "
          f"x{res['speedup_vs_hooked']['closed_form_vs_' + name[len('closed_form_'):]]:.3g})"
          for name, row in meth.items() if name.startswith("closed_form_")],
        f"  per position: {res['flops_per_position']:.3g} FLOPs, "
        f"{res['exps_per_position']:.3g} exps "
        f"(hooked: {res['hooked_flops_per_position']:.3g} FLOPs)",
    ])


_SUITE_ONLY = ("shape", "rows", "seq_len", "routing_rows", "power_reps", "out", "quick")


def _main(args: Any) -> int:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    if getattr(args, "suite", False):
        from harness.ablation.suite_bench import main_suite

        return main_suite(args, device, dtype)
    if getattr(args, "heads", False):
        return _main_heads(args, device, dtype)
    given = [f"--{k.replace('_', '-')}" for k in _SUITE_ONLY if getattr(args, k, None) not in
             (None, False)]
    if given:
        from harness.errors import BadInputError

        raise BadInputError(f"{', '.join(given)} need --suite")
    # baselines and the float64 check never use more positions than the timed run
    results = [run_bench(f, n_positions=args.positions,
                         baseline_positions=min(64, args.positions),
                         err_positions=min(16, args.positions))
               for f in _models(args.model, device, dtype)]
    for res in results:
        print(_format(res))
    if len(results) > 1:
        base = results[0]
        for res in results[1:]:
            ratio = (base["methods"]["closed_form"]["deltas_positions_per_s"]
                     / res["methods"]["closed_form"]["deltas_positions_per_s"])
            print(f"  {res['model_shape']['name']} costs x{ratio:.3g} the closed-form time per "
                  f"position of {base['model_shape']['name']} (same process; exps per position "
                  f"x{res['exps_per_position'] / base['exps_per_position']:.3g})")
    if args.json:
        top = dict(results[-1])
        if len(results) > 1:
            top["runs"] = results
        print(json.dumps(top))
    return 0


def _main_heads(args: Any, device: str, dtype: torch.dtype) -> int:
    """`bench --heads`: single-query head ablation, joint vs prefix vs all-positions."""
    from harness.ablation.bench_heads import format_head_bench, run_head_bench
    from harness.errors import BadInputError

    for flag in ("shape", "routing_rows", "power_reps", "out"):
        if getattr(args, flag, None) is not None:
            raise BadInputError(f"--{flag.replace('_', '-')} belongs to --suite, not --heads")
    results = [run_head_bench(f, n_rows=args.rows or 16, seq_len=args.seq_len or 256,
                              last_k_layers=args.last_layers, mode=args.mode,
                              prefix_rows=args.prefix_rows, loss=not args.no_loss)
               for f in _models(args.model or "tiny", device, dtype)]
    for res in results:
        print(format_head_bench(res))
    if args.json:
        print(json.dumps(results[-1] if len(results) == 1 else {"runs": results}))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="time closed-form vs hooked neuron ablation")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if present)")
    p.add_argument("--positions", type=int, default=256, help="number of positions to time")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="model weights and forward (the closed form itself is float32 with "
                        "float64 per-position scalars either way)")
    p.add_argument("--model", default=None,
                   help="comma list of tiny, gpt2-xl-shape or any model name `rarebench run` "
                        "takes (e.g. smollm2-135m,gemma3-270m: timed in one process, so their "
                        "rates compare); default: tiny, plus gpt2-xl-shape when CUDA is "
                        "available")
    s = p.add_argument_group("claim suite (--suite): every claim on a random model of a shape")
    s.add_argument("--suite", action="store_true",
                   help="time the whole claim suite per stage (wall time, peak host and "
                        "device memory) instead of the neuron-ablation comparison")
    s.add_argument("--shape", default=None,
                   help=f"model shape (random weights): {', '.join(SHAPES)} (default: tiny)")
    s.add_argument("--rows", type=int, default=None, help="evaluation rows (default: per shape)")
    s.add_argument("--seq-len", type=int, default=None, help="tokens per row (default: per shape)")
    s.add_argument("--routing-rows", type=int, default=None,
                   help="rows claim 3 ablates every head on (default: per shape)")
    s.add_argument("--power-reps", type=int, default=None,
                   help="own-data power replicates per claim (default: 8)")
    s.add_argument("--quick", action="store_true", help="the claims' --quick analysis sizes")
    s.add_argument("--out", default=None, help="also write suite.json and suite.md there")
    s.add_argument("--clean-precision", choices=["fp32", "tf32", "bf16", "auto"],
                   default="fp32", help="the model's own forward under the neuron ablation "
                   "(auto: fastest within 1e-4 nats of fp32, measured on the first batch)")
    h = p.add_argument_group("head ablation (--heads): single-query, joint construction vs "
                             "prefix method vs all-positions, on --model (--rows, --seq-len)")
    h.add_argument("--heads", action="store_true",
                   help="time single-query head ablation methods (ratios in one process)")
    h.add_argument("--last-layers", type=int, default=6,
                   help="ablate every head of the last K layers (default 6)")
    h.add_argument("--mode", choices=["bos", "zero", "mean"], default="bos")
    h.add_argument("--no-loss", action="store_true",
                   help="activations only: skip delta loss (a full-vocabulary logsumexp per "
                        "head and position, common to both methods)")
    h.add_argument("--prefix-rows", type=int, default=1,
                   help="rows the (slow) prefix method is timed on; its cost is per row")
    p.set_defaults(func=_main)
