"""Were rare tokens learned at all? If not, no claim about how they are processed is testable.

Small models trained on little data predict rare targets worse than a uniform guess (ln V);
their "rare-token neurons" would be noise, so every claim's verdict becomes 'untestable'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from harness.errors import BadInputError


@dataclass(frozen=True)
class LearnedPrecondition:
    rare_loss: float
    uniform_loss: float
    unigram_loss: float | None
    ok: bool
    message: str

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        return {"rare_loss": self.rare_loss, "uniform_loss": self.uniform_loss,
                "unigram_loss": self.unigram_loss, "ok": self.ok, "message": self.message}


def check_learned(rare_loss: float | np.ndarray, vocab_size: int,
                  unigram_loss: float | None = None) -> LearnedPrecondition:
    """Rare tokens count as learned iff mean clean CE at rare positions < ln V (uniform guess).

    `rare_loss` is the mean or the per-position losses; `unigram_loss` (mean CE of the unigram
    model at the same positions) is reported beside it as the stronger baseline.
    """
    loss = np.asarray(rare_loss, dtype=np.float64)
    if loss.size == 0:
        raise BadInputError("no rare positions: lower the rarity threshold or evaluate more rows")
    if vocab_size < 2:
        raise BadInputError(f"vocab_size must be >= 2, got {vocab_size}")
    mean = float(np.nanmean(loss))
    uniform = math.log(vocab_size)
    ok = mean < uniform
    uni = "" if unigram_loss is None else f", unigram baseline {unigram_loss:.3f}"
    if ok:
        msg = (f"rare tokens learned: rare-position loss {mean:.3f} nats < uniform ln V = "
               f"{uniform:.3f}{uni}")
    else:
        msg = (f"untestable: rare tokens not learned (rare-position loss {mean:.3f} nats >= "
               f"uniform ln V = {uniform:.3f}{uni}); use a model that predicts rare tokens")
    return LearnedPrecondition(mean, uniform, None if unigram_loss is None else float(unigram_loss),
                               ok, msg)
