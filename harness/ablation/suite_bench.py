"""`rarebench bench --suite --shape NAME`: the whole claim suite on a random model, per stage.

Why a random model: what a run costs (wall time, host and device memory) depends on the
model's shape and the data's size, not on its weights, so a GPT-2-XL-sized run can be
sized before any weights are downloaded. The rows are Zipf-distributed token ids and the
"training counts" a larger sample of the same law, so rare positions exist at the usual
rarity settings and every claim runs its full analysis (verdicts on random weights mean
nothing; the bench reports them only as each stage's status).

Memory: host peak is the peak RSS *within* each stage where Linux lets us reset it
(/proc/self/clear_refs, then VmHWM); elsewhere it is ru_maxrss, the process peak so far
(monotonic), and the JSON says which. Device peak is torch.cuda.max_memory_allocated after a
reset per stage (null on CPU).
"""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from harness.ablation.bench import SHAPES, ModelShape, random_model
from harness.errors import BadInputError

BOS = 0  # separator id of the synthetic rows (never drawn by the Zipf law)
ZIPF_S = 1.0
TRAIN_TOKENS_PER_TYPE = 50  # size of the "training" sample, per vocabulary type
SEED = 0
RARITY_Q = 50.0  # claimset.ci_rarities' q=50, target rarity
DEFAULT_POWER_REPS = 8
# (rows, seq_len, routing_rows) when not given: CPU-sized
DEFAULT_SIZES = {"tiny": (16, 64, 12)}
DEFAULT_SIZES_LARGE = (8, 128, 2)


@dataclass(frozen=True)
class Stage:
    """One timed stage: wall seconds, peak host RSS and peak device memory (MiB)."""

    name: str
    wall_s: float
    host_peak_mib: float | None
    device_peak_mib: float | None
    status: str = "ok"
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class SuiteBench:
    """Every stage of one suite run and the environment it ran in; prints as a table."""

    stages: list[Stage]
    env: dict[str, Any]

    @property
    def total_s(self) -> float:
        return sum(s.wall_s for s in self.stages)

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env, "total_s": self.total_s,
                "stages": [asdict(s) for s in self.stages]}

    def __str__(self) -> str:
        e = self.env
        head = (f"claim suite on random {e['shape_name']} ({e['shape']['family']}, "
                f"L={e['shape']['n_layers']}, d={e['shape']['d_model']}, "
                f"d_mlp={e['shape']['d_mlp']}, V={e['shape']['d_vocab']}) on {e['device']}, "
                f"{e['dtype']}, {e['threads']} threads; {e['rows']} rows x {e['seq_len']} "
                f"tokens, {e['evaluated_positions']} evaluated positions, claim 3: "
                f"{e['heads_ablated']} heads on {e['routing_rows']} rows "
                f"({e['routing_positions']} positions)")
        return head + "\n" + format_table(self.stages, e["host_memory"]) + \
            f"\ntotal {self.total_s:.1f} s"


def format_table(stages: list[Stage], host_memory: str = "") -> str:
    """Markdown table of the stages (host memory column named by how it was measured)."""
    host = "host peak MiB" + (" (so far)" if host_memory.startswith("ru_maxrss") else "")
    lines = [f"| stage | wall s | {host} | device peak MiB | status |",
             "|---|---:|---:|---:|---|"]
    for s in stages:
        fmt = lambda v: "-" if v is None else f"{v:,.0f}"  # noqa: E731
        note = s.status
        if "positions_per_s" in s.info:
            note += f"; {s.info['positions_per_s']:,.0f} positions/s"
        if "head_positions_per_s" in s.info:
            note += f"; {s.info['head_positions_per_s']:,.0f} (head, position)/s"
        if s.info.get("head_ablation_included"):
            note += "; includes the head ablation (memo missed)"
        lines.append(f"| {s.name} | {s.wall_s:.2f} | {fmt(s.host_peak_mib)} | "
                     f"{fmt(s.device_peak_mib)} | {note} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- data (pure)

def zipf_probs(d_vocab: int, seed: int, s: float = ZIPF_S) -> np.ndarray:
    """float64 [V]: p(id) proportional to rank^-s over ids 1..V-1 (ranks shuffled over ids, so
    frequency is not the id order); the separator BOS has p = 0."""
    if d_vocab < 3:
        raise BadInputError(f"d_vocab must be >= 3, got {d_vocab}")
    rng = np.random.default_rng([seed, 1])
    w = 1.0 / np.arange(1, d_vocab, dtype=np.float64) ** s
    p = np.zeros(d_vocab)
    p[1 + rng.permutation(d_vocab - 1)] = w / w.sum()
    return p


def synthetic_rows(probs: np.ndarray, n_rows: int, seq_len: int, seed: int) -> np.ndarray:
    """int64 [n_rows, seq_len]: BOS then i.i.d. draws from `probs`."""
    rng = np.random.default_rng([seed, 2])
    rows = rng.choice(probs.size, size=(n_rows, seq_len), p=probs).astype(np.int64)
    rows[:, 0] = BOS
    return rows


def training_counts(probs: np.ndarray, n_tokens: int, seed: int) -> np.ndarray:
    """int64 [V]: counts of a separate sample of `n_tokens` from the same law."""
    return np.random.default_rng([seed, 3]).multinomial(n_tokens, probs).astype(np.int64)


def synthetic_data(d_vocab: int, spec: Any, seed: int = SEED) -> dict[str, Any]:
    """Rows, keep mask, frequency table and evaluated / uniform grids of one EvalSpec."""
    from harness.data.frequency import FrequencyTable
    from harness.data.packing import keep_mask
    from harness.pipeline import evaluation_positions

    probs = zipf_probs(d_vocab, seed)
    rows = synthetic_rows(probs, spec.n_rows, spec.seq_len, seed)
    n_train = TRAIN_TOKENS_PER_TYPE * d_vocab
    freq = FrequencyTable(training_counts(probs, n_train, seed),
                          f"synthetic Zipf(s={ZIPF_S:g}) sample of {n_train:,} tokens")
    keep = keep_mask(rows, {BOS})
    evaluate, uniform = evaluation_positions(rows, keep, freq, spec)
    return {"rows": rows, "keep": keep, "freq": freq, "evaluate": evaluate, "uniform": uniform}


# ---------------------------------------------------------------- measuring

def _reset_host_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (VmHWM) of this process
        return True
    except OSError:
        return False


def _host_peak_mib(exact: bool) -> float | None:
    if exact:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 / (1024 if sys.platform == "darwin" else 1)


class _Meter:
    """Runs stages and records each one's wall time and memory peaks."""

    def __init__(self, device: torch.device,
                 progress: Callable[[Stage], None] | None = None) -> None:
        self.device = device
        self.progress = progress
        self.cuda = device.type == "cuda"
        self.exact_host = _reset_host_peak()
        self.stages: list[Stage] = []

    def run(self, name: str, fn: Callable[[], Any], status: Callable[[Any], str] | None = None,
            catch: bool = False, **info: Any) -> Any:
        if self.exact_host:
            _reset_host_peak()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        out, text = None, "ok"
        try:
            out = fn()
            if self.cuda:
                torch.cuda.synchronize(self.device)
            text = status(out) if status else "ok"
        except Exception as exc:  # noqa: BLE001 - a claim's failure is that stage's result
            if not catch:
                raise
            first = (str(exc).splitlines() or [""])[0][:200]
            text = f"error: {type(exc).__name__}: {first}"
        wall = time.perf_counter() - start
        dev = torch.cuda.max_memory_allocated(self.device) / 2**20 if self.cuda else None
        self.stages.append(Stage(name, wall, _host_peak_mib(self.exact_host), dev, text, info))
        if self.progress:
            self.progress(self.stages[-1])
        return out


def _warm_up(facade: Any, rows: np.ndarray, mu: np.ndarray, n: int = 4) -> None:
    """The closed form on a few positions, so its kernel's compilation is not billed to the
    neuron-ablation stage (as `rarebench bench` does)."""
    from harness.ablation.neuron import closed_form_delta, closed_form_for

    with torch.no_grad():
        final = facade.forward_final(torch.from_numpy(rows[:1]))
        op = closed_form_for(facade)
        t = torch.arange(1, 1 + min(n, rows.shape[1] - 1))
        closed_form_delta(op, final.resid[0, t], final.post[0, t],
                          torch.from_numpy(rows[0, t + 1]).to(final.resid.device),
                          torch.from_numpy(mu))


def _claim_status(out: Any) -> str:
    if out is None:
        return "skipped: too few rare positions"
    result = out[0] if isinstance(out, tuple) else out
    return f"verdict {getattr(result, 'verdict', '?')}"


# ---------------------------------------------------------------- the suite

def resolve_shape(name: str) -> ModelShape:
    if name not in SHAPES:
        raise BadInputError(f"unknown shape {name!r}; choose one of {', '.join(SHAPES)}")
    return SHAPES[name]


def run_suite(shape_name: str = "tiny", rows: int | None = None, seq_len: int | None = None,
              routing_rows: int | None = None, power_reps: int = DEFAULT_POWER_REPS,
              device: str = "cpu", dtype: torch.dtype = torch.float32, quick: bool = False,
              seed: int = SEED, batch_size: int = 8, clean_precision: str = "fp32",
              progress: Callable[[Stage], None] | None = None) -> SuiteBench:
    """Every registered claim (claim 3: every mode x scope, all heads of every layer) on a
    random model of `shape_name`, every kept position evaluated (no common sampling)."""
    from harness import pipeline
    from harness.ablation.heads import MODES, SCOPES
    from harness.ablation.neuron import mean_activation, neuron_influence, resolve_method
    from harness.claimset import load_claims
    from harness.data.rarity import RaritySpec

    shape = resolve_shape(shape_name)
    d_rows, d_len, d_routing = DEFAULT_SIZES.get(shape_name, DEFAULT_SIZES_LARGE)
    rows = d_rows if rows is None else rows
    seq_len = d_len if seq_len is None else seq_len
    routing_rows = d_routing if routing_rows is None else routing_rows
    if seq_len > shape.n_ctx:
        raise BadInputError(f"--seq-len {seq_len} exceeds the shape's n_ctx {shape.n_ctx}")
    if routing_rows < 1 or power_reps < 1:
        raise BadInputError("--routing-rows and --power-reps must be >= 1")
    spec = pipeline.EvalSpec(text="synthetic-zipf", n_rows=rows, seq_len=seq_len, seed=seed,
                             cover_q=RARITY_Q, cover_which=("target", "current"),
                             common_budget=None)
    rarity = RaritySpec(q=RARITY_Q, which="target")
    dev = torch.device(device)
    meter = _Meter(dev, progress)

    facade = meter.run("model init", lambda: random_model(shape, seed=seed, device=device,
                                                          dtype=dtype))
    data = meter.run("data", lambda: synthetic_data(shape.d_vocab, spec, seed))
    r, keep = data["rows"], data["keep"]
    over = np.ones_like(keep)  # mu over every position (spec.mu_over 'all', as _prepare)
    mu = meter.run("forward (mean activation)",
                   lambda: mean_activation(facade, r, over, batch_size),
                   positions=int(over.sum()))
    meter.run("kernel warm-up", lambda: _warm_up(facade, r, mu),
              kernel=resolve_method("auto", facade.W_out.device, torch.float32),
              note="one-off per process: torch.compile (CPU) / Triton JIT (CUDA)")
    n_eval = int(data["evaluate"].sum())
    influence = meter.run("neuron ablation",
                          lambda: neuron_influence(facade, r, data["evaluate"],
                                                   values=torch.from_numpy(mu),
                                                   batch_size=batch_size,
                                                   clean_precision=clean_precision),
                          positions=n_eval, clean_precision=clean_precision,
                          note="neuron_influence repeats the mean-activation forward")
    abl = meter.stages[-1]
    abl.info["positions_per_s"] = n_eval / abl.wall_s
    prep = pipeline.Prepared(f"random-{shape_name}", facade, spec, r, keep, data["uniform"],
                             data["freq"], f"synthetic: {data['freq'].source}", influence,
                             None, extras={"mean_act_all": mu})

    heads = facade.n_layers * facade.n_heads
    routed = pipeline.routing_rows(prep, routing_rows)
    routing_pos = int(np.isin(influence.row, routed).sum())
    kw = {"quick": quick, "power_reps": power_reps}
    for key, module in load_claims().items():
        if key != "no-routing":
            meter.run(f"claim {key}", lambda m=module: m.compute(prep, rarity, seed, **kw),
                      _claim_status, catch=True, claim=key)
            continue
        for scope in SCOPES:
            for mode in MODES:
                _routing_case(meter, module, prep, rarity, seed, mode, scope, routed,
                              routing_rows, heads, routing_pos, kw)

    env = {
        "shape_name": shape_name, "shape": asdict(shape), "device": _device_name(dev),
        "dtype": str(dtype).removeprefix("torch."), "torch": torch.__version__,
        "python": platform.python_version(), "threads": torch.get_num_threads(),
        "kernel": resolve_method("auto", facade.W_out.device, torch.float32),
        "parameters": sum(p.numel() for p in facade.hf_model.parameters()),
        "rows": rows, "seq_len": seq_len, "routing_rows": int(routed.size),
        "power_reps": power_reps, "quick": quick, "seed": seed, "batch_size": batch_size,
        "rarity": rarity.tag, "kept_positions": int(keep.sum()),
        "evaluated_positions": n_eval,
        "rare_positions": int(prep.masks(rarity)[0].sum()),
        "routing_positions": routing_pos, "heads_ablated": heads,
        "data": "Zipf token ids (BOS at position 0); frequencies from a separate sample",
        "host_memory": ("VmHWM per stage (reset via /proc/self/clear_refs)" if meter.exact_host
                        else "ru_maxrss: process peak so far (monotonic)"),
        "device_memory": "torch.cuda.max_memory_allocated per stage" if meter.cuda else None,
    }
    return SuiteBench(meter.stages, env)


def _routing_case(meter: _Meter, module: Any, prep: Any, rarity: Any, seed: int, mode: str,
                  scope: str, routed: np.ndarray, n_rows: int, heads: int, positions: int,
                  kw: dict[str, Any]) -> None:
    """Claim 3 at one (mode, scope): the head ablation (`routing_inputs`, i.e.
    pipeline.head_effects with the neurons compute will ask for), then compute on the memo.
    The memoised effects are dropped afterwards, so each case's peak is its own."""
    tag = f"{mode}/{scope}"
    rare_all, _ = prep.masks(rarity)
    enough = rare_all[np.isin(prep.influence.row, routed)].sum() >= module.MIN_RARE
    info = {"claim": module.CLAIM, "mode": mode, "scope": scope, "heads": heads,
            "positions": positions}
    if enough:
        out = meter.run(f"no-routing {tag} head ablation",
                        lambda: module.routing_inputs(prep, rarity, mode, seed, routed, None,
                                                      scope),
                        catch=True, **info)
        stage = meter.stages[-1]
        if out is not None:
            stage.info["heads"] = len(out[0].heads)  # as ablated
            stage.info["head_positions_per_s"] = heads * positions / max(stage.wall_s, 1e-9)
            stage.info["neurons_recorded"] = int(out[0].neurons.size)
            stage.info["effects_mib"] = out[0].delta_act.nbytes / 2**20  # held on the host
    before = _head_keys(prep)
    meter.run(f"no-routing {tag} analysis",
              lambda: module.compute(prep, rarity, seed, mode, n_rows, None, scope, **kw),
              _claim_status, catch=True, **info)
    # compute must have found the effects memoised; else its time includes the ablation
    meter.stages[-1].info["head_ablation_included"] = bool(_head_keys(prep) - before)
    for key in _head_keys(prep):
        del prep.extras[key]


def _head_keys(prep: Any) -> set:
    return {k for k in prep.extras if isinstance(k, tuple) and k[:1] == ("heads",)}


def _device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else \
        (platform.processor() or platform.machine() or "cpu")


def _progress(out: Path | None) -> Callable[[Stage], None]:
    """One line per finished stage on stderr and, with --out, one JSON line appended to
    suite.partial.jsonl, so a long run that is killed still shows what it finished."""
    def report(s: Stage) -> None:
        print(f"[bench --suite] {s.name}: {s.wall_s:.2f} s, {s.status}", file=sys.stderr,
              flush=True)
        if out is not None:
            with open(out / "suite.partial.jsonl", "a") as f:
                f.write(json.dumps(asdict(s)) + "\n")
    return report


def main_suite(args: Any, device: str, dtype: torch.dtype) -> int:
    """The CLI: table on stdout (and JSON on the last line with --json); --out writes both."""
    if args.model:
        raise BadInputError("--model does not apply with --suite; use --shape")
    shape = args.shape or "tiny"
    resolve_shape(shape)  # a bad name fails before anything is written
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "suite.partial.jsonl").unlink(missing_ok=True)
    res = run_suite(shape, rows=args.rows, seq_len=args.seq_len, routing_rows=args.routing_rows,
                    power_reps=DEFAULT_POWER_REPS if args.power_reps is None else
                    args.power_reps, device=device, dtype=dtype, quick=args.quick,
                    clean_precision=args.clean_precision, progress=_progress(out))
    print(res)
    data = res.to_dict()
    if out is not None:
        (out / "suite.json").write_text(json.dumps(data, indent=1) + "\n")
        (out / "suite.md").write_text(str(res) + "\n")
        (out / "suite.partial.jsonl").unlink()  # complete: suite.json has every stage
    if args.json:
        print(json.dumps(data))
    return 0
