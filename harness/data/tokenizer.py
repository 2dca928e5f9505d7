"""The GPT-2 tokenizer, built offline from the committed BPE files.

TransformerBridge reads `tokenizer.name_or_path`, so a tokenizer made in memory is not enough:
we save it once to a directory and reload it with `AutoTokenizer.from_pretrained(dir)`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from functools import lru_cache
from pathlib import Path

from harness.errors import MissingPackageError

_BPE_FILES = ("vocab.json", "merges.txt")


def fixtures_dir() -> Path:
    """Committed fixtures: `$RAREBENCH_FIXTURES` if set, else `<repo>/fixtures`."""
    override = os.environ.get("RAREBENCH_FIXTURES")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "fixtures"


def _bpe_source_dir() -> Path:
    src = fixtures_dir() / "tokenizer" / "gpt2"
    missing = [f for f in _BPE_FILES if not (src / f).is_file()]
    if missing:
        raise MissingPackageError(
            f"GPT-2 tokenizer files {missing} not found in {src}; restore fixtures/tokenizer/gpt2 "
            "from the repository or point RAREBENCH_FIXTURES at a fixtures directory"
        )
    return src


def _cache_root() -> Path:
    return Path(os.environ.get("RAREBENCH_CACHE", Path.home() / ".cache" / "rarebench"))


@lru_cache(maxsize=None)
def gpt2_tokenizer_dir() -> Path:
    """A directory `AutoTokenizer.from_pretrained` can load (keyed by the BPE files' hash)."""
    from transformers import GPT2TokenizerFast

    src = _bpe_source_dir()
    digest = hashlib.sha256(b"".join((src / f).read_bytes() for f in _BPE_FILES)).hexdigest()
    out = _cache_root() / "tokenizer" / f"gpt2-{digest[:12]}"
    if not (out / "tokenizer.json").is_file():
        tok = GPT2TokenizerFast(vocab=str(src / "vocab.json"), merges=str(src / "merges.txt"))
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        tok.save_pretrained(tmp)
        try:
            tmp.rename(out)  # atomic: a concurrent builder either wins or finds it done
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (out / "tokenizer.json").is_file():
                raise
    return out


@lru_cache(maxsize=None)
def gpt2_tokenizer():
    """GPT-2 BPE (`"Hello world" -> [15496, 995]`), bos = eos = 50256, as a fast HF tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gpt2_tokenizer_dir()))
