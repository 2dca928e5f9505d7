"""No silent choice by name (issue 20.5): evaluation sizes come from the model's registry
spec, and frequencies are exact where promised or visibly a proxy."""

from __future__ import annotations

import numpy as np
import pytest

from harness import pipeline
from harness.data.frequency import FrequencyTable
from harness.errors import BadInputError


def test_sizes_follow_the_spec_not_the_name(tmp_path):
    fixture = pipeline.default_spec_for("tiny-gpt2")
    assert fixture.n_rows == 64 and fixture.common_budget == 400
    # a copy of a fixture elsewhere is a local model: real-model defaults, by its spec
    import shutil

    from harness.data.tokenizer import fixtures_dir

    copy = tmp_path / "tiny-gpt2-copy"
    shutil.copytree(fixtures_dir() / "models" / "tiny-gpt2" / "step320", copy)
    assert pipeline.default_spec_for(str(copy)).n_rows == 48
    assert pipeline.default_spec_for("smollm2-135m").n_rows == 48


class _Facade:
    def __init__(self, name, d_vocab, family="gpt2"):
        self.name, self.d_vocab, self.family = name, d_vocab, family


def test_exact_counts_promised_for_fixtures_are_checked(monkeypatch, tmp_path):
    rows = np.zeros((2, 8), dtype=np.int64)
    table, note = pipeline.frequency_for("tiny-gpt2", _Facade("tiny-gpt2", 50257), rows)
    assert note == "exact training-token counts" and table.vocab_size == 50257
    with pytest.raises(BadInputError, match="vocabulary of 100514"):
        pipeline.frequency_for("tiny-gpt2", _Facade("tiny-gpt2", 2 * 50257), rows)
    monkeypatch.setattr(pipeline, "fixtures_dir", lambda: tmp_path)
    with pytest.raises(BadInputError, match="exact training-token counts were promised"):
        pipeline.frequency_for("tiny-gpt2", _Facade("tiny-gpt2", 50257), rows)


def test_proxy_frequencies_are_named_and_reported():
    rows = np.arange(64, dtype=np.int64).reshape(4, 16)
    _, note = pipeline.frequency_for("gpt2", _Facade("gpt2", 50257), rows)
    assert note.startswith("proxy frequencies")
    _, weak = pipeline.frequency_for("gpt2", _Facade("gpt2", 1234, "neox"), rows)
    assert weak.startswith("proxy frequencies (weak)")
    from harness.report.render import _caveats_block

    rec = {"model": "gpt2", "seed": 0, "settings": {"frequency": note},
           "result": {"verdict": "supported", "details": {}}}
    assert "proxy frequencies" in _caveats_block([rec])
