"""Cache keys cover everything that can change a number (issue 20.4, 21.7).

A copy of tiny-gpt2 under the same directory name with ONE attention weight changed must get a
different model identity and so recompute every cached array - neuron influence and head
ablations alike - instead of being served the original model's. Store keys also carry the
engine's source digest and the package versions, derived rather than hand-bumped.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.ablation.heads import head_ablation
from harness.ablation.neuron import neuron_influence
from harness.data.packing import keep_mask
from harness.data.tokenizer import fixtures_dir
from harness.models.facade import tokenizer_digest
from harness.models.loading import load_model
from harness.train.init import weights_sha256
from harness.store import ENGINE_SOURCES, ResultStore, code_digest, environment

pytestmark = pytest.mark.tiny


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    src = fixtures_dir() / "models" / "tiny-gpt2"
    root = tmp_path_factory.mktemp("copy") / "tiny-gpt2"
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("step40", "step120"))
    dst = root / "step320"
    weights = load_file(dst / "model.safetensors")
    name = next(k for k in sorted(weights) if "attn.c_attn.weight" in k and ".0." in k)
    weights[name] = weights[name].clone()
    weights[name][0, 0] += 0.25  # one attention weight of layer 0
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    meta = json.loads((root / "CHECKPOINTS.json").read_text())  # a deliberately new model:
    meta["sha256"]["320"] = weights_sha256(dst)                 # record its own checksum
    (root / "CHECKPOINTS.json").write_text(json.dumps(meta))
    return load_model("tiny-gpt2"), load_model(str(root)), name


def _rows(facade, n=4, t=32):
    rng = np.random.default_rng(0)
    rows = rng.integers(100, 5000, (n, t))
    rows[:, 0] = facade.bos_token_id if facade.bos_token_id is not None else 50256
    return rows, keep_mask(rows, set())


def test_same_name_other_attention_weight_is_another_model(pair):
    orig, copy, name = pair
    assert orig.name == copy.name == "tiny-gpt2"
    assert orig.info()["weights_sha"] != copy.info()["weights_sha"], name
    # the final layer is unchanged, so the old final-layer-only hash could not tell them apart
    assert torch.equal(orig.W_out, copy.W_out) and torch.equal(orig.W_U, copy.W_U)


def test_nothing_cached_for_the_original_is_served_to_the_copy(pair, tmp_path):
    orig, copy, _ = pair
    store = ResultStore(tmp_path)
    rows, keep = _rows(orig)
    a = head_ablation(orig, rows, keep, heads=[(0, 0)], mode="zero", neurons=[0, 1, 2],
                      store=store)
    n_entries = len(list(tmp_path.glob("*.json")))
    b = head_ablation(copy, rows, keep, heads=[(0, 0)], mode="zero", neurons=[0, 1, 2],
                      store=store)
    assert len(list(tmp_path.glob("*.json"))) > n_entries  # computed and stored anew
    assert not np.array_equal(a.delta_act, b.delta_act)   # and really the copy's numbers
    before = len(list(tmp_path.glob("*.json")))
    inf_a = neuron_influence(orig, rows, keep, store=store)
    inf_b = neuron_influence(copy, rows, keep, store=store)
    assert len(list(tmp_path.glob("*.json"))) >= before + 2
    assert not np.array_equal(inf_a.delta, inf_b.delta)


def test_store_key_carries_code_and_package_versions(monkeypatch):
    k1 = ResultStore.key(kind="x")
    assert "torch" in environment()["packages"] and "transformers" in environment()["packages"]
    monkeypatch.setattr("harness.store.code_digest", lambda: "other source")
    assert ResultStore.key(kind="x") != k1
    monkeypatch.undo()
    env = environment()
    env["packages"]["torch"] = "9.9"
    monkeypatch.setattr("harness.store.environment", lambda: env)
    assert ResultStore.key(kind="x") != k1
    assert len(code_digest()) == 64 and "ablation/*.py" in ENGINE_SOURCES


def test_tokenizer_is_part_of_the_identity(pair):
    orig, _, _ = pair
    d = tokenizer_digest(orig.tokenizer)
    assert len(d) == 64 and d == tokenizer_digest(orig.tokenizer)
