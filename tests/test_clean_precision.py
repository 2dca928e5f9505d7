"""The clean forward's precision (fp32 / tf32 / bf16 / auto) under the neuron ablation: the
choice is measured against fp32 on the run's own data and never silently changes results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.ablation import precision as prec
from harness.ablation.bench import ModelShape, random_model
from harness.ablation.neuron import neuron_influence
from harness.errors import BadInputError

pytestmark = pytest.mark.tiny
VOCAB = 300


@pytest.fixture(scope="module")
def setup():
    model = random_model(ModelShape("llama", n_layers=2, d_model=32, n_heads=4, d_mlp=64,
                                    d_vocab=VOCAB, n_ctx=16), seed=4, init_std=0.1)
    rng = np.random.default_rng(4)
    rows = rng.integers(0, VOCAB, size=(4, 16))
    keep = np.ones(rows.shape, bool)
    keep[:, -1] = keep[:, 0] = False
    return model, rows, keep


def test_bf16_moves_the_influence_and_the_error_is_measured(setup):
    model, rows, keep = setup
    fp32 = neuron_influence(model, rows, keep, batch_size=2, method="eager")
    bf16 = neuron_influence(model, rows, keep, batch_size=2, method="eager",
                            clean_precision="bf16")
    err = float(np.abs(bf16.delta - fp32.delta).max())
    assert 0 < err < 0.5 * float(np.abs(fp32.delta).max())  # moved, but the same quantity

    def delta_of(p):
        return torch.from_numpy(neuron_influence(model, rows, keep, batch_size=2, method="eager",
                                                 clean_precision=p).delta)

    errors = prec.precision_errors(delta_of, ("fp32", "bf16"))
    assert errors["fp32"] == 0 and errors["bf16"] == pytest.approx(err)


def test_auto_is_fp32_on_cpu_and_bad_choices_fail(setup):
    model, rows, keep = setup
    auto = neuron_influence(model, rows, keep, batch_size=2, method="eager",
                            clean_precision="auto")
    fp32 = neuron_influence(model, rows, keep, batch_size=2, method="eager")
    np.testing.assert_array_equal(auto.delta, fp32.delta)
    with pytest.raises(BadInputError, match="CUDA"):
        neuron_influence(model, rows, keep, clean_precision="tf32")
    with pytest.raises(BadInputError, match="clean precision"):
        neuron_influence(model, rows, keep, clean_precision="fp8")


@pytest.mark.parametrize("errors,expected", [({"bf16": 3e-5, "tf32": 1e-6}, "bf16"),
                                             ({"bf16": 3e-3, "tf32": 2e-5}, "tf32"),
                                             ({"bf16": 3e-3, "tf32": 2e-4}, "fp32")])
def test_auto_on_cuda_takes_the_fastest_mode_within_tolerance(errors, expected):
    """The rule, without a GPU: delta_of returns fp32's deltas plus each mode's error."""
    base = torch.linspace(-1, 1, 11, dtype=torch.float64)

    def delta_of(p):
        return base + (0.0 if p == "fp32" else errors[p])

    chosen, measured = prec.choose(delta_of, "cuda")
    assert chosen == expected
    assert measured == pytest.approx(errors)


def test_store_key_names_a_reduced_precision(setup, tmp_path):
    from harness.store import ResultStore

    model, rows, keep = setup
    store = ResultStore(tmp_path)
    neuron_influence(model, rows, keep, batch_size=2, store=store, method="eager")
    neuron_influence(model, rows, keep, batch_size=2, store=store, method="eager",
                     clean_precision="bf16")
    entries = [p for p in tmp_path.glob("*.json") if not p.stem.endswith("-mean")]
    assert len(entries) == 2  # two entries: bf16 never reuses fp32's numbers
