"""GPT-2 tokenizer built offline from the committed BPE files."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from harness.data.tokenizer import _bpe_source_dir, gpt2_tokenizer, gpt2_tokenizer_dir
from harness.errors import MissingPackageError


@pytest.mark.parametrize("text, ids", [
    ("Hello world", [15496, 995]),
    (" the", [262]),
    ("\n", [198]),
    ("The quick brown fox", [464, 2068, 7586, 21831]),
])
def test_known_gpt2_ids(text, ids):
    tok = gpt2_tokenizer()
    assert tok.encode(text) == ids
    assert tok.decode(ids) == text


def test_special_tokens_and_size():
    tok = gpt2_tokenizer()
    assert tok.bos_token_id == tok.eos_token_id == 50256
    assert len(tok) == 50257


def test_directory_reloads_with_autotokenizer():
    path = gpt2_tokenizer_dir()
    assert (path / "tokenizer.json").is_file()
    tok = AutoTokenizer.from_pretrained(str(path))
    assert tok.name_or_path == str(path)  # TransformerBridge reads name_or_path
    assert tok.encode("rarebench tokens") == gpt2_tokenizer().encode("rarebench tokens")


def test_missing_fixture_files_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("RAREBENCH_FIXTURES", str(tmp_path))
    with pytest.raises(MissingPackageError, match="RAREBENCH_FIXTURES"):
        _bpe_source_dir()
