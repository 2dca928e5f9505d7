"""Nothing lost, nothing silently wrong (issue 21.1): every kind of corrupt or partial store
entry of the neuron influence and the head ablation is detected, logged and recomputed, and the
rerun gives the same numbers as a clean run."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from harness.ablation import neuron
from harness.ablation.heads import head_ablation
from harness.store import ResultStore

pytestmark = pytest.mark.tiny


def _truncate(npz, man):
    npz.write_bytes(npz.read_bytes()[: len(npz.read_bytes()) // 2])


def _flip(npz, man):
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))


def _no_checksum(npz, man):
    m = json.loads(man.read_text())
    m.pop("sha256")
    man.write_text(json.dumps(m))


def _bad_manifest(npz, man):
    man.write_text("{not json")


def _missing_array(npz, man):
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files[1:]}  # drop the first array
    ResultStore(npz.parent).save(man.stem, arrays)


DAMAGES = [_truncate, _flip, _no_checksum, _bad_manifest, _missing_array]


@pytest.fixture(scope="module")
def problem():
    from harness.ablation.bench import ModelShape, random_model

    facade = random_model(ModelShape(n_layers=2, d_model=16, d_mlp=16, d_vocab=300, n_ctx=16),
                          init_std=0.3)
    rng = np.random.default_rng(0)
    rows = rng.integers(1, 300, size=(4, 10))
    rows[:, 0] = 0
    keep = rng.random(rows.shape) < 0.7
    keep[:, :1] = keep[:, -1] = False
    return facade, rows, keep


def _entries(root):
    """Final (non-chunk) entries: npz, manifest pairs."""
    return [(p.with_suffix(".npz"), p) for p in root.glob("*.json") if "-" not in p.stem]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__.strip("_"))
def test_corrupt_influence_entry_is_recomputed(problem, tmp_path, caplog, damage):
    facade, rows, keep = problem
    store = ResultStore(tmp_path)
    clean = neuron.neuron_influence(facade, rows, keep, batch_size=2, store=store)
    finals = _entries(tmp_path)
    assert len(finals) == 1
    damage(*finals[0])
    with caplog.at_level(logging.WARNING):
        again = neuron.neuron_influence(facade, rows, keep, batch_size=2, store=store)
    for name, arr in clean.arrays().items():
        np.testing.assert_array_equal(getattr(again, name), arr, err_msg=name)
    assert damage is _missing_array or "recomputing" in caplog.text


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__.strip("_"))
def test_corrupt_head_ablation_entry_is_recomputed(problem, tmp_path, damage):
    facade, rows, keep = problem
    store = ResultStore(tmp_path)
    kw = dict(heads=[(1, 0), (1, 1)], mode="zero", neurons=[0, 3, 5], store=store)
    clean = head_ablation(facade, rows, keep, **kw)
    finals = _entries(tmp_path)
    assert len(finals) == 1
    damage(*finals[0])
    again = head_ablation(facade, rows, keep, **kw)
    np.testing.assert_array_equal(again.delta_act, clean.delta_act)
    np.testing.assert_array_equal(again.delta_loss, clean.delta_loss)
