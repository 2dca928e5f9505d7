"""`rarebench train` on a micro preset: it learns, it is deterministic, and an interrupted run
resumed from its resume file ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import argparse
import hashlib
import json
import math

import numpy as np
import pytest

from harness.data.frequency import FrequencyTable
from harness.errors import BadInputError, MissingWeightsError
from harness.train.init import materialize_step0, weights_sha256
from harness.train.trainer import (TrainConfig, batch_indices, is_heldout, lr_at, prepare_data,
                                   train, unigram_loss)

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from "
         "at which but have an they you were her she there been one all we their has would when "
         "if so no what my more out up said about into than them can only other time new some "
         "could these two may first then do any like now man such our over even most made after "
         "also did many before must through years where much your way well down should because "
         "each just those people how too little state good very make world still own see men "
         "work long get here between both life being under never day same another know while "
         "last might us great old year off come since against go came right used take three").split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Synthetic docs with a learnable structure (a Zipfian bigram chain) so loss can fall."""
    rng = np.random.default_rng(0)
    n = len(WORDS)
    nxt = rng.integers(0, n, size=(n, 3))
    docs = []
    for _ in range(150):
        w, out = int(rng.integers(n)), []
        for _ in range(int(rng.integers(60, 120))):
            out.append(WORDS[w])
            w = int(nxt[w, rng.integers(3)]) if rng.random() < 0.9 else int(rng.integers(n))
        docs.append(" ".join(out).capitalize() + ".")
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RAREBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _cfg(corpus, out, **kw) -> TrainConfig:
    base = dict(preset="micro-gpt2", corpus=str(corpus), out=str(out), seed=3, steps=8,
                batch_size=4, lr=1e-2, warmup=2, save_steps=(2, 4, 8), eval_rows=8,
                heldout_mod=5, resume_every=2, progress=False)
    return TrainConfig(**(base | kw))


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("RAREBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    cfg = _cfg(corpus, tmp_path_factory.mktemp("run") / "micro")
    result = train(cfg)
    mp.undo()
    return cfg, result


def test_lr_schedule_warms_up_then_decays_to_floor():
    cfg = TrainConfig(preset="micro-gpt2", corpus="x", out="x", steps=100, lr=1e-3, warmup=10,
                      min_lr_frac=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4, rel=1e-12)
    assert lr_at(9, cfg) == pytest.approx(1e-3, rel=1e-12)
    assert lr_at(100, cfg) == pytest.approx(1e-4, rel=1e-12)
    assert lr_at(55, cfg) == pytest.approx(0.55e-3, rel=1e-12)  # cosine midpoint
    lrs = [lr_at(s, cfg) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_batches_cover_every_row_once_per_epoch_and_are_seeded():
    n, bs = 10, 4
    stream = np.concatenate([batch_indices(s, bs, n, seed=1) for s in range(5)])  # 2 epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert not np.array_equal(stream[:10], stream[10:20])
    np.testing.assert_array_equal(batch_indices(3, bs, n, seed=1), stream[12:16])
    assert not np.array_equal(batch_indices(0, bs, n, seed=2), stream[:4])


def test_heldout_rule_is_a_document_hash():
    texts = [f"document number {i}" for i in range(500)]
    held = [t for t in texts if is_heldout(t, 50)]
    assert held == [t for t in texts if int(hashlib.sha1(t.encode()).hexdigest(), 16) % 50 == 0]
    assert 2 <= len(held) <= 25  # about 1 in 50


def test_unigram_loss_is_add_one_smoothed():
    counts = np.array([3, 1, 0, 0])
    expected = -(math.log(4 / 8) + math.log(1 / 8)) / 2
    assert unigram_loss(counts, np.array([[0, 2]])) == pytest.approx(expected, abs=1e-12)


def test_training_lowers_heldout_loss_and_writes_checkpoints(trained):
    cfg, result = trained
    out = result.out
    assert result.finished and [r.step for r in result.records] == [0, 2, 4, 8]
    first, last = result.records[0].heldout_loss, result.records[-1].heldout_loss
    assert first == pytest.approx(result.uniform_loss, abs=0.1)  # init predicts ~uniformly
    assert last < first - 0.2, (first, last)
    assert result.records[-1].train_loss < first - 0.2
    meta = json.loads((out / "CHECKPOINTS.json").read_text())
    assert meta["steps"] == [0, 2, 4, 8] and meta["stored"] == [2, 4, 8] and meta["final"] == 8
    assert not (out / "step0").exists() and not (out / "resume.pt").exists()
    for r in result.records[1:]:
        assert weights_sha256(out / f"step{r.step}") == meta["sha256"][str(r.step)] == r.sha256
    assert len({r.sha256 for r in result.records}) == 4
    assert "| 8 | 1,024 |" in (out / "TRAINING.md").read_text()


def test_train_counts_are_exactly_the_trained_tokens(trained):
    cfg, result = trained
    data = prepare_data(cfg, n_ctx=32)
    expected = np.zeros(50257, np.int64)
    for s in range(cfg.steps):
        rows = data.train_rows[batch_indices(s, cfg.batch_size, len(data.train_rows), cfg.seed)]
        expected += np.bincount(rows.ravel(), minlength=50257)
    counts = np.load(result.out / "train_counts.npy")
    np.testing.assert_array_equal(counts, expected)
    table = FrequencyTable.load(result.out / "train_counts")  # checks the manifest's sha256
    np.testing.assert_array_equal(table.counts, counts)
    assert table.total == cfg.steps * cfg.batch_size * 32 and table.vocab_size == 50257
    held = np.load(result.out / "heldout_tokens.npy")
    assert result.unigram_loss == pytest.approx(unigram_loss(counts, held[:, 1:]), abs=1e-12)


def test_interrupted_then_resumed_run_is_bit_identical(corpus, tmp_path):
    kw = dict(preset="micro-pythia", steps=6, save_steps=(3, 6))
    whole = train(_cfg(corpus, tmp_path / "whole", **kw))
    part = train(_cfg(corpus, tmp_path / "split", stop_after=3, **kw))
    assert not part.finished and part.step == 3 and (tmp_path / "split" / "resume.pt").is_file()
    resumed = train(_cfg(corpus, tmp_path / "split", **kw))
    assert resumed.finished
    assert resumed.fp32_sha256 == whole.fp32_sha256
    assert [r.sha256 for r in resumed.records] == [r.sha256 for r in whole.records]
    assert [r.train_loss for r in resumed.records] == [r.train_loss for r in whole.records]
    np.testing.assert_array_equal(np.load(tmp_path / "split" / "train_counts.npy"),
                                  np.load(tmp_path / "whole" / "train_counts.npy"))


def test_resume_refuses_changed_settings(corpus, tmp_path):
    train(_cfg(corpus, tmp_path / "m", steps=4, save_steps=(4,), stop_after=1))
    with pytest.raises(BadInputError, match="different settings.*lr"):
        train(_cfg(corpus, tmp_path / "m", steps=4, save_steps=(4,), lr=5e-3))


def test_step0_is_regenerated_and_verified(trained, tmp_path):
    _, result = trained
    step0 = materialize_step0(result.out, out_dir=tmp_path / "step0")
    assert weights_sha256(step0) == result.records[0].sha256
    meta_path = result.out / "CHECKPOINTS.json"
    meta = json.loads(meta_path.read_text())
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    (tampered / "CHECKPOINTS.json").write_text(json.dumps(meta | {"step0_sha256": "0" * 64}))
    with pytest.raises(MissingWeightsError, match="step 0 rebuilt"):
        materialize_step0(tampered, out_dir=tmp_path / "bad")


def test_cli_registers_train_command():
    from harness.train.cli import register, run

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["train", "--preset", "tiny-pythia", "--corpus", "c", "--out", "o",
                              "--save-steps", "10,20"])
    assert args.func is run and args.save_steps == "10,20" and args.steps == 400
