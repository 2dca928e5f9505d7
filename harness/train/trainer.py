"""Train a tiny causal LM from a preset: deterministic for a seed, resumable, HF checkpoints.

Determinism: dropout is off, the init comes from `build_model(preset, seed)`, rows come from
`pack_rows(..., seed)` and batch `s` is a pure function of (seed, s), so the only state to carry
across an interruption is the weights, AdamW's moments, the RNG and the step (the data cursor).
All of it goes to `<out>/resume.pt` every `resume_every` steps and on Ctrl-C.

Held-out slice: a document is held out iff `int(sha1(text).hexdigest(), 16) % heldout_mod == 0`
(by document, reproducible, never trained on). Evaluation uses the first `eval_rows` packed rows
of the held-out documents, saved as int32 so tests can recompute the loss without the corpus.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import BadInputError
from harness.train.init import save_checkpoint
from harness.train.presets import build_model, get_preset

RESUME_FILE = "resume.pt"
# Settings that change the trained weights; a resume file must agree on all of them.
_IDENTITY = ("preset", "corpus_sha256", "seed", "steps", "batch_size", "lr", "warmup",
             "min_lr_frac", "weight_decay", "save_steps", "eval_rows", "heldout_mod")


@dataclass(frozen=True)
class TrainConfig:
    preset: str
    corpus: str
    out: str
    seed: int = 0
    steps: int = 400
    batch_size: int = 16
    lr: float = 3e-3
    warmup: int = 20
    min_lr_frac: float = 0.1
    weight_decay: float = 0.1
    save_steps: tuple[int, ...] = ()  # empty: steps//8, steps//2, steps
    eval_rows: int = 64
    heldout_mod: int = 50
    heldout_file: str | None = None  # default <out>/heldout_tokens.npy; must match if present
    resume_every: int = 10
    stop_after: int | None = None  # stop at this step with a resume file (time-sliced runs)
    progress: bool = True

    def checkpoint_steps(self) -> tuple[int, ...]:
        steps = self.save_steps or (max(1, self.steps // 8), max(1, self.steps // 2), self.steps)
        steps = tuple(sorted(set(steps)))
        if steps[0] < 1 or steps[-1] != self.steps:
            raise BadInputError(f"save steps {steps} must be >= 1 and end at --steps {self.steps}")
        return steps

    def command(self) -> str:
        """The `rarebench train` command line that reproduces this run."""
        parts = [f"rarebench train --preset {self.preset} --corpus {self.corpus} --out {self.out}",
                 f"--seed {self.seed} --steps {self.steps} --batch-size {self.batch_size}",
                 f"--lr {self.lr} --warmup {self.warmup} --min-lr-frac {self.min_lr_frac}",
                 f"--weight-decay {self.weight_decay}",
                 "--save-steps " + ",".join(map(str, self.checkpoint_steps())),
                 f"--eval-rows {self.eval_rows} --heldout-mod {self.heldout_mod}"]
        if self.heldout_file:
            parts.append(f"--heldout-file {self.heldout_file}")
        return " ".join(parts)


@dataclass(frozen=True)
class CheckpointRecord:
    step: int
    tokens_seen: int
    wall_s: float
    train_loss: float | None  # mean of the last <= 10 training steps
    heldout_loss: float  # from the saved fp16 weights loaded in fp32
    sha256: str

    def __str__(self) -> str:
        train = "-" if self.train_loss is None else f"{self.train_loss:.4f}"
        return (f"step {self.step:>5}  tokens {self.tokens_seen:>9,}  wall {self.wall_s:7.1f}s  "
                f"train {train}  held-out {self.heldout_loss:.4f}")


@dataclass(frozen=True)
class TrainResult:
    out: Path
    records: tuple[CheckpointRecord, ...]
    unigram_loss: float  # add-one unigram from the training counts, on the held-out targets
    uniform_loss: float  # ln V
    fp32_sha256: str  # final fp32 weights (bit-identity checks)
    step: int  # steps done so far
    finished: bool  # False when stopped early by `stop_after`

    def __str__(self) -> str:
        lines = [str(r) for r in self.records]
        lines.append(f"unigram {self.unigram_loss:.4f}  uniform ln V {self.uniform_loss:.4f}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------- pure helpers

def is_heldout(text: str, mod: int = 50) -> bool:
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16) % mod == 0


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to `lr`, then cosine down to `lr * min_lr_frac` at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))


def batch_indices(step: int, batch_size: int, n_rows: int, seed: int) -> np.ndarray:
    """Row ids of batch `step`: a fresh seeded permutation of the rows per epoch."""
    pos = step * batch_size + np.arange(batch_size)
    epochs = pos // n_rows
    out = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(epochs):
        perm = np.random.default_rng([seed, int(epoch)]).permutation(n_rows)
        sel = epochs == epoch
        out[sel] = perm[pos[sel] % n_rows]
    return out


def unigram_loss(counts: np.ndarray, targets: np.ndarray) -> float:
    """Mean -ln p(target) under add-one smoothed unigram probabilities (methods.md section 2)."""
    counts = np.asarray(counts, dtype=np.float64)
    logp = np.log(counts + 1.0) - np.log(counts.sum() + len(counts))
    return float(-logp[np.asarray(targets).ravel()].mean())


def lm_loss(model: torch.nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over every position of `rows` [B, T]."""
    logits = model(input_ids=rows).logits
    targets = F.pad(rows[:, 1:], (0, 1), value=-100)  # no copy of the [B, T, V] logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, rows: np.ndarray, chunk: int = 8) -> float:
    """Held-out loss (nats/token), averaged over all targets of all rows."""
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(rows), chunk):
        x = torch.as_tensor(np.asarray(rows[i:i + chunk]), dtype=torch.long)
        k = x[:, 1:].numel()
        total += float(lm_loss(model, x)) * k
        n += k
    return total / n


def heldout_loss_of_dir(ckpt_dir: Path, rows: np.ndarray) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(ckpt_dir), dtype=torch.float32)
    return heldout_loss(model, rows)


def state_sha256(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------- data

@dataclass(frozen=True)
class TrainData:
    train_rows: np.ndarray  # int64 [n, n_ctx]
    heldout_rows: np.ndarray  # int64 [eval_rows, n_ctx]
    n_train_docs: int
    n_heldout_docs: int
    corpus_sha256: str
    manifest: dict = field(default_factory=dict)


def corpus_file(corpus: str | Path) -> Path:
    path = Path(corpus)
    if path.is_dir():
        path = path / "docs.jsonl"
    if not path.is_file():
        raise BadInputError(f"corpus {corpus} not found: pass a docs.jsonl (or its directory), "
                            "e.g. from `rarebench corpus build --out DIR`")
    return path


def preset_tokenizer(name: str):
    """The tokenizer a preset trains with, and a cache key for its token ids."""
    from transformers import AutoTokenizer

    from harness.data.bpe import tokenizer_dir

    path = tokenizer_dir(name)
    key = "gpt2" if name == "gpt2" else f"{name}-{_tokenizer_sha(name)[:12]}"
    return AutoTokenizer.from_pretrained(str(path)), key


def tokenize_corpus(texts: list[str], corpus_sha: str, tokenizer: str = "gpt2"
                    ) -> list[np.ndarray]:
    """Token ids of every document, cached by corpus sha256 and tokenizer (tokenizing ~12M
    tokens takes minutes on a busy CPU; a resume or a second model should not pay it again)."""
    from harness.train.init import cache_root

    tok, key = preset_tokenizer(tokenizer)
    path = cache_root() / "tokens" / f"{key}-{corpus_sha[:16]}.npz"
    if path.is_file():
        with np.load(path) as z:
            ids, lens = z["ids"], z["lens"]
    else:
        docs = tok(texts, add_special_tokens=False)["input_ids"]
        lens = np.array([len(d) for d in docs], dtype=np.int64)
        ids = np.fromiter((i for d in docs for i in d), dtype=np.int32, count=int(lens.sum()))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, ids=ids, lens=lens)
        tmp.replace(path)
    if len(lens) != len(texts):
        raise BadInputError(f"token cache {path} does not match the corpus; delete it")
    return np.split(ids.astype(np.int64), np.cumsum(lens)[:-1])


def prepare_data(cfg: TrainConfig, n_ctx: int) -> TrainData:
    from harness.data.packing import pack_rows

    path = corpus_file(cfg.corpus)
    raw = path.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    texts = [json.loads(line)["text"] for line in raw.decode("utf-8").split("\n") if line.strip()]
    held = np.array([is_heldout(t, cfg.heldout_mod) for t in texts], dtype=bool)
    if held.all() or not held.any():
        raise BadInputError(f"corpus {path} has {int((~held).sum())} training and "
                            f"{int(held.sum())} held-out documents; it needs both (about 1 in "
                            f"{cfg.heldout_mod} is held out)")
    preset = get_preset(cfg.preset)
    ids = tokenize_corpus(texts, sha, preset.tokenizer)
    pack = dict(seq_len=n_ctx, bos_id=preset.eos_id, eos_id=preset.eos_id, seed=cfg.seed)
    train_rows = pack_rows([d for d, h in zip(ids, held) if not h], **pack)
    heldout_rows = pack_rows([d for d, h in zip(ids, held) if h], **pack)[:cfg.eval_rows]
    if len(train_rows) < cfg.batch_size or len(heldout_rows) == 0:
        raise BadInputError(f"corpus {path} is too small: {len(train_rows)} training rows, "
                            f"{len(heldout_rows)} held-out rows of {n_ctx} tokens")
    manifest_path = path.with_name("MANIFEST.json")
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    return TrainData(train_rows, heldout_rows, int((~held).sum()), int(held.sum()), sha, manifest)


def _resolve_heldout(cfg: TrainConfig, rows: np.ndarray) -> Path:
    """Save the eval rows, or check they equal an existing shared file (one set per corpus)."""
    path = Path(cfg.heldout_file) if cfg.heldout_file else Path(cfg.out) / "heldout_tokens.npy"
    rows32 = rows.astype(np.int32)
    if path.is_file():
        if not np.array_equal(np.load(path), rows32):
            raise BadInputError(f"held-out tokens in {path} differ from this corpus/seed/n_ctx; "
                                "pass another --heldout-file or delete it")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, rows32)
    return path


# ---------------------------------------------------------------------------- training

def _identity(cfg: TrainConfig, corpus_sha: str) -> dict:
    d = asdict(cfg) | {"corpus_sha256": corpus_sha, "save_steps": list(cfg.checkpoint_steps())}
    return {k: d[k] for k in _IDENTITY}


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def _save_resume(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _record(model, out: Path, step: int, cfg: TrainConfig, wall: float, losses: list[float],
            heldout_rows: np.ndarray) -> CheckpointRecord:
    ckpt = out / f"step{step}"
    sha = save_checkpoint(model, ckpt)
    loss = heldout_loss_of_dir(ckpt, heldout_rows)
    recent = losses[-10:]
    return CheckpointRecord(step, step * cfg.batch_size * heldout_rows.shape[1], round(wall, 1),
                            float(np.mean(recent)) if recent else None, loss, sha)


def train(cfg: TrainConfig) -> TrainResult:
    """Train (or resume) and write `<out>/step<N>/` checkpoints, CHECKPOINTS.json,
    train_counts.{npy,json}, train_log.json and TRAINING.md."""
    from tqdm.auto import tqdm
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one progress bar: ours
    preset = get_preset(cfg.preset)
    save_steps = cfg.checkpoint_steps()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(cfg, preset.n_ctx)
    heldout_path = _resolve_heldout(cfg, data.heldout_rows)
    identity = _identity(cfg, data.corpus_sha256)
    model = build_model(preset, cfg.seed)
    opt = _optimizer(model, cfg)
    resume_path = out / RESUME_FILE
    if resume_path.is_file():
        try:  # tensors and plain containers only: a resume file never unpickles code
            state = torch.load(resume_path, weights_only=True)
        except Exception as exc:
            raise BadInputError(f"{resume_path} is not a readable resume file ({exc}); delete "
                                "it to start over") from None
        if state["identity"] != identity:
            diff = sorted(k for k in identity if state["identity"].get(k) != identity[k])
            raise BadInputError(f"{resume_path} was written with different settings ({diff}); "
                                "delete it to start over or use another --out")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        step, losses = state["step"], list(state["losses"])
        counts = np.asarray(state["counts"].numpy(), dtype=np.int64)
        records, wall0 = [CheckpointRecord(**r) for r in state["records"]], state["wall_s"]
    else:
        step, counts, losses, wall0 = 0, np.zeros(preset.vocab_size, np.int64), [], 0.0
        step0 = _record(model, out, 0, cfg, 0.0, [], data.heldout_rows)
        shutil.rmtree(out / "step0")  # regenerated by materialize_step0, only its sha is kept
        records = [step0]

    def snapshot() -> dict:
        return {"identity": identity, "step": step, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                "counts": torch.from_numpy(counts.copy()), "losses": [float(x) for x in losses],
                "records": [asdict(r) for r in records],
                "wall_s": wall0 + time.perf_counter() - t0}

    t0 = time.perf_counter()
    stop = min(cfg.steps, cfg.stop_after) if cfg.stop_after else cfg.steps
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, disable=not cfg.progress, desc=cfg.preset,
               unit="step", dynamic_ncols=True)
    try:
        while step < stop:
            batch = data.train_rows[batch_indices(step, cfg.batch_size, len(data.train_rows),
                                                  cfg.seed)]
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
            loss = lm_loss(model, torch.as_tensor(batch))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            counts += np.bincount(batch.ravel(), minlength=preset.vocab_size)
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr_at(step - 1, cfg):.2e}")
            if step in save_steps:
                wall = wall0 + time.perf_counter() - t0
                records.append(_record(model, out, step, cfg, wall, losses, data.heldout_rows))
                bar.write(str(records[-1]))
            if step in save_steps or step % cfg.resume_every == 0 or step == stop:
                _save_resume(resume_path, snapshot())
    except KeyboardInterrupt:
        _save_resume(resume_path, snapshot())
        raise
    finally:
        bar.close()

    targets = data.heldout_rows[:, 1:]
    result = TrainResult(out, tuple(records), unigram_loss(counts, targets),
                         math.log(preset.vocab_size), state_sha256(model), step,
                         step == cfg.steps)
    if result.finished:
        _write_outputs(cfg, data, heldout_path, counts, result)
        resume_path.unlink()
    return result


# ---------------------------------------------------------------------------- outputs

def _write_outputs(cfg: TrainConfig, data: TrainData, heldout_path: Path, counts: np.ndarray,
                   result: TrainResult) -> None:
    import transformers

    from harness.data.frequency import FrequencyTable

    out = result.out
    stored = [r.step for r in result.records if r.step]
    meta = {"steps": [r.step for r in result.records], "final": cfg.steps, "stored": stored,
            "step0_sha256": result.records[0].sha256, "seed": cfg.seed, "preset": cfg.preset,
            "sha256": {str(r.step): r.sha256 for r in result.records},
            "tokenizer": get_preset(cfg.preset).tokenizer,
            "tokenizer_sha256": _tokenizer_sha(get_preset(cfg.preset).tokenizer),
            "torch": torch.__version__, "transformers": transformers.__version__}
    (out / "CHECKPOINTS.json").write_text(json.dumps(meta, indent=2) + "\n")
    FrequencyTable(counts, f"exact training-token counts of {cfg.preset}: every input token of "
                   f"every batch, BOS included ({cfg.steps} steps x {cfg.batch_size} rows)"
                   ).save(out / "train_counts")
    log = {"config": asdict(cfg), "command": cfg.command(),
           "records": [asdict(r) for r in result.records], "unigram_loss": result.unigram_loss,
           "uniform_loss": result.uniform_loss, "heldout_file": heldout_path.name,
           "heldout_sha256": hashlib.sha256(np.load(heldout_path).tobytes()).hexdigest(),
           "n_train_docs": data.n_train_docs, "n_heldout_docs": data.n_heldout_docs,
           "n_train_rows": int(len(data.train_rows)), "corpus_sha256": data.corpus_sha256}
    (out / "train_log.json").write_text(json.dumps(log, indent=2) + "\n")
    (out / "TRAINING.md").write_text(render_training_md(cfg, data, log))


def _tokenizer_sha(name: str) -> str | None:
    """A corpus BPE's vocabulary + merges sha256 (checked on load by
    init.checkpoint_tokenizer_dir); None for GPT-2's BPE."""
    from harness.data.bpe import tokenizer_dir, tokenizer_sha256

    return None if name == "gpt2" else tokenizer_sha256(tokenizer_dir(name))


def render_training_md(cfg: TrainConfig, data: TrainData, log: dict) -> str:
    preset = get_preset(cfg.preset)
    final = log["records"][-1]
    lines = [f"# {cfg.preset}: training record", "",
             "Generated by `rarebench train` (harness/train/trainer.py); numbers are measured, "
             "not edited.", "", "## Model", "",
             f"- preset `{preset.name}` ({preset.family}): d_model {preset.d_model}, "
             f"{preset.n_layers} layers, {preset.n_heads} heads, d_mlp {preset.d_mlp}, "
             f"n_ctx {preset.n_ctx}, vocab {preset.vocab_size} ({preset.tokenizer_label}), "
             f"{'tied' if preset.tied else 'untied'} embeddings, no dropout; stored as fp16 "
             "safetensors" + ("" if preset.tokenizer == "gpt2" else
                              f"; the checkpoints share fixtures/tokenizer/{preset.tokenizer}/"),
             f"- optimiser: AdamW (betas 0.9/0.95, weight decay {cfg.weight_decay} on matrices), "
             f"lr {cfg.lr} with {cfg.warmup} warmup steps then cosine to "
             f"{cfg.lr * cfg.min_lr_frac:g}; grad-norm clip 1.0; fp32; batch "
             f"{cfg.batch_size} x {preset.n_ctx} tokens; seed {cfg.seed}",
             "", "## Corpus", "",
             f"- `{Path(cfg.corpus).name}` sha256 `{data.corpus_sha256[:16]}...`: "
             f"{data.n_train_docs} training docs packed into {len(data.train_rows)} rows; "
             f"{data.n_heldout_docs} held-out docs"]
    sources = data.manifest.get("sources", {})
    if sources:
        lines += ["", "| source | package | docs | words |", "|---|---|---:|---:|"]
        lines += [f"| {name} | {s.get('package', '')} | {s.get('n_docs', '')} | "
                  f"{s.get('n_words', '')} |" for name, s in sources.items()]
        total = data.manifest.get("totals", {})
        if total:
            lines.append(f"| **total** | | {total.get('n_docs', '')} | {total.get('n_words', '')} |")
    lines += ["", f"- held-out rule: a document is held out (never trained on) iff "
              f"`int(sha1(text.encode('utf-8')).hexdigest(), 16) % {cfg.heldout_mod} == 0`",
              f"- eval tokens: the first {len(data.heldout_rows)} rows of `pack_rows(held-out docs, "
              f"seq_len={preset.n_ctx}, bos=eos={preset.eos_id}, seed={cfg.seed})`, saved as "
              f"`{log['heldout_file']}` (int32, sha256 `{log['heldout_sha256'][:16]}...`); "
              f"loss = mean CE over all {len(data.heldout_rows) * (preset.n_ctx - 1)} targets",
              "", "## Command", "", "```", log["command"], "```", "",
              "## Checkpoints", "",
              "Held-out loss is computed from the *saved fp16* weights loaded in fp32. Step 0 is "
              "not stored: `harness.train.init.materialize_step0` rebuilds it and checks its "
              "sha256.", "",
              "| step | tokens seen | wall (s) | train loss | held-out loss | stored |",
              "|---:|---:|---:|---:|---:|---|"]
    for r in log["records"]:
        train = "-" if r["train_loss"] is None else f"{r['train_loss']:.4f}"
        where = f"`step{r['step']}/`" if r["step"] else "regenerated"
        lines.append(f"| {r['step']} | {r['tokens_seen']:,} | {r['wall_s']:.1f} | {train} | "
                     f"{r['heldout_loss']:.4f} | {where} |")
    lines += ["", "## Baselines on the same held-out targets", "",
              f"- unigram (exact training-token counts, add-one smoothed): "
              f"{log['unigram_loss']:.4f} nats",
              f"- uniform ln V: {log['uniform_loss']:.4f} nats",
              f"- final held-out loss {final['heldout_loss']:.4f} = unigram "
              f"{final['heldout_loss'] - log['unigram_loss']:+.4f} nats", ""]
    return "\n".join(lines)
