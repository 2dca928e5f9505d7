"""The committed self-trained models (fixtures/models): loadable by path, checkpoints distinct
and verified, and the held-out numbers in TRAINING.md reproducible from the committed
held-out token ids."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data.frequency import FrequencyTable
from harness.train.init import (checkpoint_dir, checkpoint_tokenizer_dir, materialize_step0,
                                 weights_sha256)
from harness.train.trainer import heldout_loss_of_dir, unigram_loss

pytestmark = pytest.mark.tiny

MODELS_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "models"
NAMES = ["tiny-gpt2", "tiny-pythia"]


def _meta(name: str) -> dict:
    return json.loads((MODELS_DIR / name / "CHECKPOINTS.json").read_text())


def _training_md_heldout(name: str, step: int) -> float:
    text = (MODELS_DIR / name / "TRAINING.md").read_text()
    row = re.search(rf"^\| {step} \|[^|]*\|[^|]*\|[^|]*\| ([0-9.]+) \|", text, re.M)
    assert row, f"no row for step {step} in {name}/TRAINING.md"
    return float(row.group(1))


@pytest.fixture(scope="module")
def heldout() -> np.ndarray:
    return np.load(MODELS_DIR / "heldout_tokens.npy").astype(np.int64)


@pytest.fixture(scope="module")
def final_losses(heldout) -> dict[str, float]:
    return {n: heldout_loss_of_dir(checkpoint_dir(MODELS_DIR / n), heldout) for n in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_manifest_lists_four_steps_and_three_stored_dirs(name):
    meta = _meta(name)
    assert meta["preset"] == name and meta["steps"][0] == 0 and len(meta["steps"]) >= 4
    assert meta["stored"] == meta["steps"][1:] and meta["final"] == meta["stored"][-1]
    for step in meta["stored"]:
        d = MODELS_DIR / name / f"step{step}"
        assert weights_sha256(d) == meta["sha256"][str(step)]
    assert len({meta["sha256"][str(s)] for s in meta["steps"]}) == len(meta["steps"])


@pytest.mark.parametrize("name", NAMES)
def test_loads_by_path_with_transformers(name):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = checkpoint_dir(MODELS_DIR / name)
    # one tokenizer for every checkpoint (issue 14.3): none is copied into a checkpoint
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors"]
    tok = AutoTokenizer.from_pretrained(str(checkpoint_tokenizer_dir(MODELS_DIR / name)))
    assert tok("Hello world")["input_ids"] == [15496, 995]
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    cfg = model.config
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers) == (50257, 48, 4)
    d_mlp = cfg.n_inner if name == "tiny-gpt2" else cfg.intermediate_size
    assert d_mlp == 512
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    if name == "tiny-pythia":
        assert cfg.use_parallel_residual
        assert cfg.rope_parameters["partial_rotary_factor"] == 0.25
    assert next(model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("name", NAMES)
def test_step0_regenerates_to_its_recorded_sha(name, tmp_path):
    meta = _meta(name)
    step0 = materialize_step0(MODELS_DIR / name, out_dir=tmp_path / "step0")
    assert weights_sha256(step0) == meta["step0_sha256"] == meta["sha256"]["0"]


def test_heldout_tokens_are_the_documented_slice(heldout):
    log = json.loads((MODELS_DIR / "tiny-gpt2" / "train_log.json").read_text())
    assert heldout.shape == (log["config"]["eval_rows"], 256)
    assert (heldout[:, 0] == 50256).all()  # every row starts with BOS
    raw = np.load(MODELS_DIR / "heldout_tokens.npy")
    for name in NAMES:
        log = json.loads((MODELS_DIR / name / "train_log.json").read_text())
        assert log["heldout_sha256"] == hashlib.sha256(raw.tobytes()).hexdigest()


@pytest.mark.parametrize("name", NAMES)
def test_final_heldout_loss_matches_training_md(name, final_losses):
    assert final_losses[name] == pytest.approx(
        _training_md_heldout(name, _meta(name)["final"]), abs=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_final_model_beats_unigram_baseline(name, final_losses, heldout):
    table = FrequencyTable.load(MODELS_DIR / name / "train_counts")  # checks its sha256
    meta = _meta(name)
    log = json.loads((MODELS_DIR / name / "train_log.json").read_text())
    assert table.vocab_size == 50257
    assert table.total == meta["final"] * log["config"]["batch_size"] * 256
    unigram = unigram_loss(table.counts, heldout[:, 1:])
    assert unigram == pytest.approx(log["unigram_loss"], abs=1e-9)
    assert final_losses[name] < unigram - 0.15, (final_losses[name], unigram)
    assert unigram < math.log(50257)


@pytest.mark.parametrize("name", NAMES)
def test_model_zoo_loads_fixtures_by_name_and_step(name):
    from harness.models.loading import load_model

    meta = _meta(name)
    facade = load_model(name, step=meta["stored"][0])
    assert (facade.step, facade.d_mlp, facade.d_vocab, facade.n_layers) == (
        meta["stored"][0], 512, 50257, 4)
