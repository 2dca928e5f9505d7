"""Checkpoint directories of the self-trained models, and step 0 rebuilt instead of stored.

A checkpoint is an HF model directory (fp16 `model.safetensors`, `config.json`) without a
tokenizer: every checkpoint of a model shares one tokenizer directory, named in the model
dir's `CHECKPOINTS.json` ("tokenizer": "gpt2" for the committed GPT-2 BPE, else a corpus BPE
in `fixtures/tokenizer/<name>/`) and found by `checkpoint_tokenizer_dir` (`load_model` does
this). Copies in each checkpoint cost ~1.4 MB each of the fixtures' size budget. Step 0 (the
init) is a pure function of the preset and seed, so it is regenerated and checked against the
sha256 in `CHECKPOINTS.json` rather than stored.
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


def save_checkpoint(model: torch.nn.Module, out: Path) -> str:
    """Write `model` as an fp16 HF dir at `out` (atomically) and return its weights sha256.
    No tokenizer is written: the model dir's CHECKPOINTS.json names the shared one."""
    out = Path(out)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    copy.deepcopy(model).to(torch.float16).save_pretrained(tmp)  # never round the original
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


def checkpoint_tokenizer_dir(model_dir: Path) -> Path | None:
    """The tokenizer dir shared by every checkpoint of a trained-model dir: the one its
    CHECKPOINTS.json names ("gpt2" when it names none), checked against the recorded
    `tokenizer_sha256` when there is one; None for a dir without the file."""
    from harness.data.bpe import tokenizer_dir, tokenizer_sha256

    path = Path(model_dir) / "CHECKPOINTS.json"
    if not path.is_file():
        return None
    meta = json.loads(path.read_text())
    tok_dir = tokenizer_dir(meta.get("tokenizer", "gpt2"))
    want = meta.get("tokenizer_sha256")
    if want and tokenizer_sha256(tok_dir) != want:
        raise BadInputError(f"the tokenizer in {tok_dir} does not match the sha256 recorded in "
                            f"{path} (edited or retrained); restore it from git")
    return tok_dir
