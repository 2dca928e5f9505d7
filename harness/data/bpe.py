"""A byte-level BPE vocabulary trained on the offline corpus (the `tokenizers` library).

Why: with GPT-2's 50k vocabulary a corpus of ~15M tokens leaves the rarest half of the types
with a handful of occurrences each, so a model trained on it never learns them and every claim
is untestable. A vocabulary sized to the corpus (4,096 types: the q = 50 cutoff type still
occurs ~1,200 times in the training documents, measured) gives rare types enough examples.

The vocabulary is trained on the *training* documents only (`trainer.is_heldout` keeps the
evaluation text out), single-threaded, so the same corpus gives the same merges; the result is
committed (`fixtures/tokenizer/<name>/`) and its sha256 is checked where it is used.
<|endoftext|> is id 0 and serves as BOS, EOS, pad and unk, as in GPT-2.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from harness.errors import BadInputError

SPECIAL = "<|endoftext|>"
FILES = ("tokenizer.json", "tokenizer_config.json")


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: str | Path) -> Path:
    """Train a byte-level BPE of `vocab_size` types on `texts`; save an HF tokenizer dir."""
    os.environ.setdefault("RAYON_NUM_THREADS", "1")  # one thread: merges do not depend on timing
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if not 512 <= int(vocab_size) <= 65536:
        raise BadInputError(f"BPE vocabulary size must be in [512, 65536], got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), special_tokens=[SPECIAL],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    if tok.token_to_id(SPECIAL) != 0:
        raise RuntimeError(f"{SPECIAL} is not id 0 in the trained vocabulary")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL, eos_token=SPECIAL,
                                   unk_token=SPECIAL, pad_token=SPECIAL, model_max_length=1024)
    out = Path(out_dir)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    fast.save_pretrained(tmp)
    for extra in set(p.name for p in tmp.iterdir()) - set(FILES):
        (tmp / extra).unlink()  # special_tokens_map.json etc.: tokenizer_config.json has them
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def tokenizer_sha256(tok_dir: str | Path) -> str:
    """sha256 of the vocabulary and merges (tokenizer.json's model), not of formatting."""
    import json

    path = Path(tok_dir) / "tokenizer.json"
    if not path.is_file():
        raise BadInputError(f"no tokenizer.json in {tok_dir}")
    model = json.loads(path.read_text(encoding="utf-8"))["model"]
    blob = json.dumps({"vocab": model["vocab"], "merges": model["merges"]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def corpus_tokenizer_dir(name: str) -> Path:
    """`fixtures/tokenizer/<name>/` (a committed BPE trained by `rarebench corpus bpe`)."""
    from harness.data.tokenizer import fixtures_dir

    path = fixtures_dir() / "tokenizer" / name
    if not (path / "tokenizer.json").is_file():
        raise BadInputError(f"tokenizer {name!r} not found in {path.parent}; restore it from git "
                            f"or train it: rarebench corpus bpe --corpus CORPUS --vocab-size N "
                            f"--out {path}")
    return path


def tokenizer_dir(name: str) -> Path:
    """A named tokenizer's directory: 'gpt2' (built once from the committed GPT-2 BPE files,
    harness.data.tokenizer) or a committed corpus BPE (`corpus_tokenizer_dir`)."""
    if name == "gpt2":
        from harness.data.tokenizer import gpt2_tokenizer_dir

        return gpt2_tokenizer_dir()
    return corpus_tokenizer_dir(name)
