"""Rows of evaluation/training text and the paper's position filters (methods.md section 2).

Documents are joined with EOS (as TransformerLens' `tokenize_and_concatenate` does), cut into
rows of BOS + (seq_len - 1) tokens, and the rows are shuffled with a seeded generator.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from harness.errors import BadInputError


def pack_rows(docs_token_ids: Iterable[Sequence[int]], seq_len: int = 256, *, bos_id: int,
              eos_id: int, seed: int = 42, max_rows: int | None = None) -> np.ndarray:
    """int64 [n_rows, seq_len]; the incomplete tail is dropped; `max_rows` keeps the first
    rows *after* shuffling, so a small budget still samples the whole stream."""
    if seq_len < 2:
        raise BadInputError(f"seq_len must be >= 2 (BOS + at least one token), got {seq_len}")
    body = seq_len - 1
    pieces: list[np.ndarray] = []
    for i, doc in enumerate(docs_token_ids):
        if i:
            pieces.append(np.array([eos_id], dtype=np.int64))
        pieces.append(np.asarray(doc, dtype=np.int64).reshape(-1))
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    n_rows = len(stream) // body
    rows = np.empty((n_rows, seq_len), dtype=np.int64)
    rows[:, 0] = bos_id
    rows[:, 1:] = stream[: n_rows * body].reshape(n_rows, body)
    rows = rows[np.random.default_rng(seed).permutation(n_rows)]
    return rows if max_rows is None else rows[:max_rows]


def keep_mask(rows: np.ndarray, special_ids: Iterable[int]) -> np.ndarray:
    """bool [n_rows, seq_len]: positions whose loss (predicting x_{t+1}) the analyses use.

    Dropped: t < 3, the last column (no next token), special tokens at t, and t whose next
    token is special (predicting BOS/EOS/newline is not a "token prediction" in the papers).
    """
    rows = np.asarray(rows)
    if rows.ndim != 2:
        raise BadInputError(f"rows must be 2-D [n_rows, seq_len], got shape {rows.shape}")
    special = np.isin(rows, np.fromiter(special_ids, dtype=np.int64))
    keep = ~special
    keep[:, :3] = False
    keep[:, -1] = False
    keep[:, :-1] &= ~special[:, 1:]
    return keep


def special_ids_for(tokenizer, family: str) -> set[int]:
    """BOS/EOS ids, plus the newline token for the GPT-2 family (as in the original code)."""
    ids = {i for i in (tokenizer.bos_token_id, tokenizer.eos_token_id) if i is not None}
    if family == "gpt2":
        newline = tokenizer.encode("\n", add_special_tokens=False)
        if len(newline) == 1:
            ids.add(int(newline[0]))
    return ids
