"""Checkpoint directories of the self-trained models, and step 0 rebuilt instead of stored.

A checkpoint is an ordinary HF directory (fp16 `model.safetensors`, `config.json`, GPT-2
`vocab.json` + `merges.txt` + `tokenizer_config.json`) so `from_pretrained(path)` and the model
zoo load it by path. Step 0 (the init) costs 5 MB of git budget yet is a pure function of the
preset and seed, so it is regenerated and checked against the sha256 in `CHECKPOINTS.json`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from harness.errors import BadInputError, MissingWeightsError
from harness.train.presets import build_model, get_preset

WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILES = ("vocab.json", "merges.txt")
_TOKENIZER_CONFIG = {
    "tokenizer_class": "GPT2Tokenizer",
    "add_prefix_space": False,
    "bos_token": "<|endoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "model_max_length": 1024,
}


def _bpe_dir() -> Path:
    from harness.data.tokenizer import fixtures_dir

    return fixtures_dir() / "tokenizer" / "gpt2"


def save_checkpoint(model: torch.nn.Module, out: Path) -> str:
    """Write `model` as an fp16 HF dir at `out` (atomically) and return its weights sha256."""
    out = Path(out)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    copy.deepcopy(model).to(torch.float16).save_pretrained(tmp)  # never round the original
    for name in TOKENIZER_FILES:  # byte-identical copies: git stores them once
        shutil.copyfile(_bpe_dir() / name, tmp / name)
    (tmp / "tokenizer_config.json").write_text(json.dumps(_TOKENIZER_CONFIG, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return weights_sha256(out)


def weights_sha256(ckpt_dir: Path) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, in name order.

    Hashes tensors rather than the file so safetensors header details cannot change it.
    """
    from safetensors.torch import load_file

    path = Path(ckpt_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise MissingWeightsError(f"no {WEIGHTS_FILE} in {ckpt_dir}")
    h = hashlib.sha256()
    for name, t in sorted(load_file(str(path)).items()):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def read_checkpoints(model_dir: Path) -> dict:
    path = Path(model_dir) / "CHECKPOINTS.json"
    if not path.is_file():
        raise MissingWeightsError(
            f"{path} not found: {model_dir} is not a trained model dir (train one with "
            "`rarebench train --preset ... --corpus ... --out DIR`)")
    return json.loads(path.read_text())


def cache_root() -> Path:
    return Path(os.environ.get("RAREBENCH_CACHE", Path.home() / ".cache" / "rarebench"))


def materialize_step0(model_dir: Path, out_dir: Path | None = None) -> Path:
    """Rebuild step 0 of the model in `model_dir` and return its checkpoint dir.

    Written to `out_dir`, default `$RAREBENCH_CACHE/models/<preset>-<sha[:12]>/step0` (not the
    repository). Raises MissingWeightsError if the rebuilt weights do not match the recorded
    sha256 (a different torch/transformers init or an edited preset).
    """
    meta = read_checkpoints(model_dir)
    expected = meta["step0_sha256"]
    out = Path(out_dir) if out_dir else (
        cache_root() / "models" / f"{meta['preset']}-{expected[:12]}" / "step0")
    if (out / WEIGHTS_FILE).is_file() and weights_sha256(out) == expected:
        return out
    got = save_checkpoint(build_model(get_preset(meta["preset"]), meta["seed"]), out)
    if got != expected:
        shutil.rmtree(out, ignore_errors=True)
        raise MissingWeightsError(
            f"step 0 rebuilt from preset {meta['preset']!r} seed {meta['seed']} has sha256 "
            f"{got[:16]}..., but {model_dir}/CHECKPOINTS.json records {expected[:16]}...: this "
            f"torch {torch.__version__} initialises differently from the one that trained it "
            f"({meta.get('torch', '?')}); use a stored step {meta['stored']} or retrain")
    return out


def checkpoint_dir(model_dir: Path, step: int | None = None) -> Path:
    """HF dir of `step` (default: the final one); step 0 is materialised on demand."""
    meta = read_checkpoints(model_dir)
    step = meta["final"] if step is None else int(step)
    if step == 0:
        return materialize_step0(model_dir)
    if step not in meta["stored"]:
        raise BadInputError(f"{model_dir} has no step {step}; available steps: {meta['steps']}")
    path = Path(model_dir) / f"step{step}"
    if not (path / WEIGHTS_FILE).is_file():
        raise MissingWeightsError(f"{path} is missing; restore fixtures/models from git")
    return path
