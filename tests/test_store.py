"""ResultStore: stable keys, checksummed atomic entries, corruption -> recompute, and a
neuron-influence run that crashes midway resumes from its stored batches with equal results."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from harness.ablation import neuron
from harness.errors import CorruptCacheError
from harness.store import ResultStore


def test_key_is_canonical_and_sensitive():
    a = ResultStore.key(model={"name": "m", "revision": None}, data="abc", code="v1")
    assert a == ResultStore.key(code="v1", data="abc", model={"revision": None, "name": "m"})
    assert a != ResultStore.key(model={"name": "m", "revision": None}, data="abd", code="v1")
    assert len(a) == 64 and int(a, 16) >= 0


def test_roundtrip_manifest_and_atomicity(tmp_path):
    store = ResultStore(tmp_path)
    key = store.key(x=1)
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], np.int64)}
    store.save(key, arrays, {"seed": 3, "device": "cpu"})
    got = store.load(key)
    for k in arrays:
        np.testing.assert_array_equal(got[k], arrays[k])
        assert got[k].dtype == arrays[k].dtype
    man = store.manifest(key)
    assert man["seed"] == 3 and man["arrays"]["a"] == {"dtype": "float32", "shape": [2, 3]}
    assert man["environment"]["packages"]["numpy"] == np.__version__
    assert len(man["sha256"]) == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{key}.json", f"{key}.npz"]  # no temps


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_corrupt_entry_is_detected_logged_and_recomputed(tmp_path, caplog, damage):
    store = ResultStore(tmp_path)
    key = store.key(x=2)
    store.save(key, {"a": np.arange(1000.0)})
    path = tmp_path / f"{key}.npz"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:-20] + bytes([data[-20] ^ 1]) + data[-19:])
    else:
        path.unlink()
    with pytest.raises(CorruptCacheError, match="recompute"):
        store.load(key)
    calls = []
    with caplog.at_level(logging.WARNING, logger="harness.store"):
        out = store.get_or_compute(key, lambda: calls.append(1) or {"a": np.arange(1000.0)})
    assert calls == [1] and "recomputing" in caplog.text
    np.testing.assert_array_equal(out["a"], np.arange(1000.0))
    np.testing.assert_array_equal(store.load(key)["a"], np.arange(1000.0))  # repaired
    assert store.get_or_compute(key, lambda: pytest.fail("must not recompute"))["a"][-1] == 999


@pytest.mark.tiny
def test_interrupted_neuron_influence_resumes_identically(tmp_path, monkeypatch):
    from harness.ablation.bench import ModelShape, random_model

    facade = random_model(ModelShape(n_layers=1, d_model=16, d_mlp=16, d_vocab=500, n_ctx=16),
                          init_std=0.3)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 500, size=(6, 8))
    keep = rng.random(rows.shape) < 0.7
    keep[:, -1] = False
    fresh = neuron.neuron_influence(facade, rows, keep, batch_size=2)

    real, calls = neuron._influence_batch, []

    def crash_after_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(neuron, "_influence_batch", crash_after_two)
    store = ResultStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        neuron.neuron_influence(facade, rows, keep, batch_size=2, store=store)
    assert len(list(tmp_path.glob("*-batch*.json"))) == 2  # two batches survived the crash
    calls.clear()
    resumed = neuron.neuron_influence(facade, rows, keep, batch_size=2, store=store)
    assert len(calls) == 1  # only the missing batch was computed
    for name, arr in fresh.arrays().items():
        np.testing.assert_array_equal(getattr(resumed, name), arr, err_msg=name)
    calls.clear()
    again = neuron.neuron_influence(facade, rows, keep, batch_size=2, store=store)
    assert calls == [] and np.array_equal(again.delta, fresh.delta)  # final entry reused
    assert list(tmp_path.glob("*-batch*")) == []  # chunks removed once the whole is stored
