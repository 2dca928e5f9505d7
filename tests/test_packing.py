"""Row packing (docs joined with EOS, BOS + seq_len-1 tokens, seeded shuffle) and the
paper's position filters."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.data.packing import keep_mask, pack_rows, special_ids_for
from harness.errors import BadInputError

BOS, EOS = 1001, 1000
docs_strategy = st.lists(st.lists(st.integers(0, 999), min_size=0, max_size=60), min_size=1, max_size=12)


def _stream(docs):
    out = []
    for i, d in enumerate(docs):
        out += ([EOS] if i else []) + list(d)
    return np.array(out, dtype=np.int64)


@settings(max_examples=60, deadline=None)
@given(docs=docs_strategy, seq_len=st.integers(2, 17), seed=st.integers(0, 2**16))
def test_rows_hold_the_stream_in_order(docs, seq_len, seed):
    rows = pack_rows(docs, seq_len, bos_id=BOS, eos_id=EOS, seed=seed)
    stream = _stream(docs)
    n = len(stream) // (seq_len - 1)
    assert rows.shape == (n, seq_len) and rows.dtype == np.int64
    assert (rows[:, 0] == BOS).all()
    # undo the seeded shuffle: the rows' bodies are consecutive stream pieces, tail dropped
    order = np.argsort(np.random.default_rng(seed).permutation(n))
    np.testing.assert_array_equal(rows[order, 1:].reshape(-1), stream[: n * (seq_len - 1)])


@settings(max_examples=30, deadline=None)
@given(docs=docs_strategy, seed=st.integers(0, 1000))
def test_seed_only_reorders_rows(docs, seed):
    a = pack_rows(docs, 5, bos_id=BOS, eos_id=EOS, seed=seed)
    b = pack_rows(docs, 5, bos_id=BOS, eos_id=EOS, seed=seed)
    c = pack_rows(docs, 5, bos_id=BOS, eos_id=EOS, seed=seed + 1)
    np.testing.assert_array_equal(a, b)
    assert sorted(map(tuple, a)) == sorted(map(tuple, c))


def test_eos_joins_documents_and_max_rows():
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    rows = pack_rows(docs, 4, bos_id=BOS, eos_id=EOS, seed=0)  # stream has 11 tokens -> 3 rows
    assert rows.shape == (3, 4)
    assert sorted(map(tuple, rows[:, 1:])) == sorted([(1, 2, 3), (EOS, 4, 5), (EOS, 6, 7)])
    full = pack_rows(docs, 4, bos_id=BOS, eos_id=EOS, seed=0)
    np.testing.assert_array_equal(pack_rows(docs, 4, bos_id=BOS, eos_id=EOS, seed=0, max_rows=2), full[:2])
    with pytest.raises(BadInputError):
        pack_rows(docs, 1, bos_id=BOS, eos_id=EOS)


def test_keep_mask_drops_the_paper_positions():
    S = 9  # special
    rows = np.array([[S, 10, 11, 12, 13, S, 14, 15, 16, 17],
                     [S, 20, 21, 22, 23, 24, 25, 26, S, 27]])
    keep = keep_mask(rows, {S})
    expected = np.array([
        # t: 0  1  2  3  4  5  6  7  8  9
        [0, 0, 0, 1, 0, 0, 1, 1, 1, 0],  # t=4: next is special; t=5 special; t=9 last
        [0, 0, 0, 1, 1, 1, 1, 0, 0, 0],  # t=7: next special; t=8 special
    ], dtype=bool)
    np.testing.assert_array_equal(keep, expected)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=4, max_size=30))
def test_keep_mask_properties(tokens):
    rows = np.array([tokens, tokens[::-1]])
    special = {0, 1}
    keep = keep_mask(rows, special)
    assert not keep[:, :3].any() and not keep[:, -1].any()
    assert not (keep & np.isin(rows, list(special))).any()
    assert not (keep[:, :-1] & np.isin(rows[:, 1:], list(special))).any()


def test_special_ids_newline_only_for_gpt2():
    from harness.data.tokenizer import gpt2_tokenizer

    tok = gpt2_tokenizer()
    assert special_ids_for(tok, "gpt2") == {50256, 198}
    assert special_ids_for(tok, "neox") == {50256}
