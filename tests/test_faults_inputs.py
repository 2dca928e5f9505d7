"""Bad input files are refused where they enter, with one clear line (issue 21.2, 21.6):
a fixture whose weights differ from its recorded checksum, a truncated safetensors file, NaN
weights, and a trainer resume file are never loaded silently or unpickled."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.data.tokenizer import fixtures_dir
from harness.errors import BadInputError
from harness.models.loading import load_model

pytestmark = pytest.mark.tiny


@pytest.fixture
def fixture_copy(tmp_path):
    root = tmp_path / "tiny-gpt2"
    shutil.copytree(fixtures_dir() / "models" / "tiny-gpt2", root,
                    ignore=shutil.ignore_patterns("step40", "step120"))
    return root


def test_bit_flip_in_a_fixture_is_refused(fixture_copy):
    path = fixture_copy / "step320" / "model.safetensors"
    w = load_file(path)
    name = sorted(w)[3]
    w[name] = w[name].clone()
    w[name].view(-1)[0] += 1e-2
    save_file(w, path, metadata={"format": "pt"})
    with pytest.raises(BadInputError, match="do not match the sha256 recorded"):
        load_model(str(fixture_copy))


def test_truncated_safetensors_is_one_clear_error(fixture_copy):
    path = fixture_copy / "step320" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(BadInputError, match="unreadable weights|cannot load the weights"):
        load_model(str(fixture_copy))


def test_nan_weights_are_refused(fixture_copy):
    path = fixture_copy / "step320" / "model.safetensors"
    w = load_file(path)
    name = next(k for k in sorted(w) if "mlp" in k)
    w[name] = w[name].clone()
    w[name].view(-1)[:5] = float("nan")
    save_file(w, path, metadata={"format": "pt"})
    meta = json.loads((fixture_copy / "CHECKPOINTS.json").read_text())
    meta["sha256"].pop("320")  # no recorded checksum: the NaN check itself must refuse it
    (fixture_copy / "CHECKPOINTS.json").write_text(json.dumps(meta))
    with pytest.raises(BadInputError, match="5 NaN/Inf values in weight"):
        load_model(str(fixture_copy))


def test_resume_file_is_never_unpickled(tmp_path, monkeypatch):
    """A resume file holding an arbitrary object is refused (weights_only=True)."""
    from harness.train.trainer import TrainConfig, train

    out = tmp_path / "run"
    out.mkdir()

    from fractions import Fraction  # any class a pickle could construct (code on load)

    torch.save({"identity": {}, "x": Fraction(1, 3)}, out / "resume.pt")
    monkeypatch.setenv("RAREBENCH_CACHE", str(tmp_path / "cache"))
    sample = (fixtures_dir() / "corpus" / "sample.jsonl").read_text().splitlines()[:40]
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"{i}. " + json.loads(line)["text"]}) + "\n"
                            for i, line in enumerate(sample)))
    cfg = TrainConfig(preset="micro-gpt2", out=str(out), steps=2, progress=False,
                      corpus=str(docs), eval_rows=4, heldout_mod=2)
    with pytest.raises(BadInputError, match="not a readable resume file"):
        train(cfg)
