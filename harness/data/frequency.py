"""Unigram token frequencies over vocabulary types (methods.md section 2): counts, add-one
smoothed probabilities, and a checksummed on-disk form so a corrupt cache is caught."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import BadInputError, CorruptCacheError


@dataclass(frozen=True, eq=False)
class FrequencyTable:
    counts: np.ndarray  # int64 [V]
    source: str  # where the counts came from (corpus name, counts file, ...)
    # A proxy corpus says nothing about the types it never contains (a multilingual vocabulary
    # under an English corpus: 2/3 of Gemma-3's 262k types): rarity percentiles are then taken
    # over the observed types only, and an unobserved type is never rare (harness.data.rarity).
    observed_only: bool = False

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts)
        if counts.ndim != 1 or counts.size == 0 or (counts < 0).any():
            raise BadInputError("token counts must be a non-empty 1-D array of counts >= 0")
        object.__setattr__(self, "counts", counts.astype(np.int64, copy=False))

    @property
    def vocab_size(self) -> int:
        return int(self.counts.size)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def probs(self) -> np.ndarray:
        """Add-one smoothed p(v) = (c_v + 1) / sum(c + 1), float64 [V]."""
        c = self.counts.astype(np.float64) + 1.0
        return c / c.sum()

    def __str__(self) -> str:
        seen = int((self.counts > 0).sum())
        return (f"FrequencyTable({self.source}: V={self.vocab_size}, {self.total:,} tokens, "
                f"{seen:,} types seen)")

    def save(self, path: str | Path) -> Path:
        """Write `<path>.npy` and `<path>.json` (source, V, total, sha256 of the .npy)."""
        npy, meta = _paths(path)
        npy.parent.mkdir(parents=True, exist_ok=True)
        tmp = npy.with_name(npy.name + ".tmp")
        with open(tmp, "wb") as f:
            np.save(f, self.counts)
        tmp.replace(npy)
        meta.write_text(json.dumps({"source": self.source, "V": self.vocab_size,
                                    "total": self.total, "sha256": _sha256(npy)}, indent=2))
        return npy

    @classmethod
    def load(cls, path: str | Path) -> FrequencyTable:
        npy, meta = _paths(path)
        if not npy.is_file() or not meta.is_file():
            raise BadInputError(f"frequency table {npy} / {meta} not found; build it first")
        try:
            info = json.loads(meta.read_text())
            ok = _sha256(npy) == info["sha256"]
            counts = np.load(npy, allow_pickle=False) if ok else None
        except (ValueError, KeyError, OSError) as exc:
            raise CorruptCacheError(f"frequency table {npy} unreadable ({exc}); delete "
                                    f"{npy} and {meta} to rebuild") from exc
        if not ok or counts.shape != (info["V"],) or int(counts.sum()) != info["total"]:
            raise CorruptCacheError(f"frequency table {npy} does not match its manifest "
                                    f"(checksum/shape); delete {npy} and {meta} to rebuild")
        return cls(counts, info["source"])


def _paths(path: str | Path) -> tuple[Path, Path]:
    base = Path(path)
    if base.suffix in (".npy", ".json"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".npy"), base.with_name(base.name + ".json")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def count_tokens(token_arrays: np.ndarray | Iterable, vocab_size: int) -> np.ndarray:
    """int64 [V] counts from one array (any shape) or an iterable of token-id arrays."""
    arrays = [token_arrays] if isinstance(token_arrays, np.ndarray) else token_arrays
    counts = np.zeros(vocab_size, dtype=np.int64)
    for arr in arrays:
        ids = np.asarray(arr, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise BadInputError(f"token id out of range [0, {vocab_size}): "
                                f"min {ids.min()}, max {ids.max()} (wrong tokenizer?)")
        counts += np.bincount(ids, minlength=vocab_size)
    return counts


def from_counts_file(path: str | Path, tokenizer) -> FrequencyTable:
    """A user's own unigram counts: TSV `token<TAB>count` or JSON `{token: count}`.

    Keys are vocabulary token strings as in `tokenizer.get_vocab()` (e.g. GPT-2 "Ġthe");
    a key that is not a token but an integer in [0, V) is taken as a token id.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"counts file {path} not found")
    text = path.read_text("utf-8")
    try:
        if path.suffix == ".json":
            pairs = list(json.loads(text).items())
        else:
            pairs = [tuple(line.rsplit("\t", 1)) for line in text.splitlines() if line.strip()]
            pairs = [(k, int(v)) for k, v in pairs]
    except (ValueError, AttributeError) as exc:
        raise BadInputError(f"{path}: expected `token<TAB>count` lines or a JSON object "
                            f"{{token: count}} ({exc})") from exc
    vocab = tokenizer.get_vocab()
    size = max(len(tokenizer), max(vocab.values()) + 1)
    counts = np.zeros(size, dtype=np.int64)
    unknown = []
    for key, value in pairs:
        tid = vocab.get(key)
        if tid is None and str(key).isdigit() and int(key) < size:
            tid = int(key)
        if tid is None:
            unknown.append(key)
            continue
        counts[tid] += int(value)
    if unknown:
        raise BadInputError(f"{path}: {len(unknown)} keys are not tokens of this tokenizer "
                            f"(e.g. {unknown[:5]}); write vocabulary tokens or token ids")
    return FrequencyTable(counts, f"counts-file:{path.name}")
