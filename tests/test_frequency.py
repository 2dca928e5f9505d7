"""Unigram frequency tables: add-one smoothing, checksummed save/load, user counts files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.data.frequency import FrequencyTable, count_tokens, from_counts_file
from harness.errors import BadInputError, CorruptCacheError


class _Vocab:
    """A minimal tokenizer stand-in: what from_counts_file needs."""

    def __init__(self, tokens):
        self._vocab = {t: i for i, t in enumerate(tokens)}

    def get_vocab(self):
        return dict(self._vocab)

    def __len__(self):
        return len(self._vocab)


def test_add_one_smoothing_values():
    probs = FrequencyTable(np.array([0, 1, 3]), "toy").probs
    np.testing.assert_allclose(probs, [1 / 7, 2 / 7, 4 / 7], rtol=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=200))
def test_probs_sum_to_one_and_keep_order(counts):
    table = FrequencyTable(np.array(counts, dtype=np.int64), "h")
    p = table.probs
    assert abs(p.sum() - 1.0) < 1e-9 and (p > 0).all()
    c = np.array(counts)
    assert (np.sign(np.diff(p[np.argsort(c, kind="stable")])) >= 0).all()


def test_count_tokens_rows_and_iterables():
    rows = np.array([[0, 1, 1], [2, 1, 0]])
    np.testing.assert_array_equal(count_tokens(rows, 4), [2, 3, 1, 0])
    np.testing.assert_array_equal(count_tokens([[3, 3], np.array([0])], 4), [1, 0, 0, 2])
    with pytest.raises(BadInputError, match="out of range"):
        count_tokens(np.array([4]), 4)


def test_save_load_round_trip(tmp_path):
    table = FrequencyTable(np.array([5, 0, 7, 1]), "unit")
    npy = table.save(tmp_path / "freq")
    meta = json.loads((tmp_path / "freq.json").read_text())
    assert npy == tmp_path / "freq.npy" and meta["V"] == 4 and meta["total"] == 13
    back = FrequencyTable.load(tmp_path / "freq.npy")
    np.testing.assert_array_equal(back.counts, table.counts)
    assert back.source == "unit"


def test_corrupt_table_is_detected(tmp_path):
    FrequencyTable(np.arange(100), "unit").save(tmp_path / "freq")
    raw = bytearray((tmp_path / "freq.npy").read_bytes())
    raw[-3] ^= 0xFF
    (tmp_path / "freq.npy").write_bytes(bytes(raw))
    with pytest.raises(CorruptCacheError, match="delete"):
        FrequencyTable.load(tmp_path / "freq")
    with pytest.raises(BadInputError, match="not found"):
        FrequencyTable.load(tmp_path / "absent")


def test_counts_file_tsv_and_json(tmp_path):
    tok = _Vocab(["a", "Ġthe", "7", "x"])
    (tmp_path / "c.tsv").write_text("Ġthe\t10\na\t3\n7\t2\n")
    np.testing.assert_array_equal(from_counts_file(tmp_path / "c.tsv", tok).counts, [3, 10, 2, 0])
    (tmp_path / "c.json").write_text(json.dumps({"x": 4, "3": 1}))  # "3" is not a token -> id 3
    np.testing.assert_array_equal(from_counts_file(tmp_path / "c.json", tok).counts, [0, 0, 0, 5])
    (tmp_path / "bad.tsv").write_text("zebra\t1\n")
    with pytest.raises(BadInputError, match="zebra"):
        from_counts_file(tmp_path / "bad.tsv", tok)
    (tmp_path / "junk.tsv").write_text("a\tmany\n")
    with pytest.raises(BadInputError, match="token<TAB>count"):
        from_counts_file(tmp_path / "junk.tsv", tok)


@pytest.mark.tiny
def test_corpus_proxy_counts_the_corpus_under_the_models_tokenizer(tmp_path):
    """`rarebench corpus proxy` = count_tokens of every document under the model's tokenizer,
    saved under the key the pipeline looks the proxy up by."""
    from harness.cli import main
    from harness.pipeline import load_facade, tokenizer_key

    texts = ["The cat sat on the mat.", "Zygomorphic florets, rarely seen.", "The end."]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    assert main(["corpus", "proxy", "--corpus", str(corpus), "--model", "tiny-pythia-learned",
                 "--out", str(tmp_path / "out")]) == 0
    facade = load_facade("tiny-pythia-learned")
    table = FrequencyTable.load(tmp_path / "out" / tokenizer_key(facade))
    want = count_tokens([facade.tokenizer.encode(t, add_special_tokens=False) for t in texts],
                        facade.d_vocab)
    np.testing.assert_array_equal(table.counts, want)
    assert table.total == want.sum() > 10 and "PROXY for tiny-pythia-learned" in table.source
