"""Were rare tokens learned at all? If not, no claim about how they are processed is testable.

Small models trained on little data predict rare targets worse than a uniform guess (ln V);
their "rare-token neurons" would be noise, so every claim's verdict becomes 'untestable'.

The check is made on the positions that match the rarity definition: for *target* rarity the
loss of predicting the rare x_{t+1} at its position t; for *current* rarity the loss of
predicting the rare x_t itself (at position t - 1) - not the loss at t, which is about the
next, usually common, token and passes for models that never learned their rare tokens.
With row ids the decision uses a row-bootstrap CI: learned iff the lower 95% bound of
(ln V - loss) lies above 0. Reported beside it: the CI of (unigram - loss) and the share of
rare types whose mean loss beats the uniform guess (geometric-mean p_model > 1/V).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from harness.errors import BadInputError
from harness.stats.bootstrap import grouped_sums, percentile_ci, resample_weights

N_BOOT = 1000


@dataclass(frozen=True)
class LearnedPrecondition:
    rare_loss: float
    uniform_loss: float
    unigram_loss: float | None
    ok: bool
    message: str
    margin_uniform: tuple[float, float, float] | None = None   # ln V - loss: est, lo, hi
    margin_unigram: tuple[float, float, float] | None = None   # unigram - loss: est, lo, hi
    share_types_learned: float | None = None
    n_types: int | None = None
    n_positions: int | None = None
    n_rows: int | None = None
    positions: str = "rare positions"

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        return asdict(self)


def _margin(values: np.ndarray, row: np.ndarray | None, rng: np.random.Generator
            ) -> tuple[float, float, float] | None:
    if row is None or values.size == 0:
        return None
    _, rows = np.unique(row, return_inverse=True)
    sums, counts = grouped_sums(values, rows)
    w = resample_weights(len(counts), N_BOOT, rng)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (w @ sums) / (w @ counts)
    lo, hi = percentile_ci(boot)
    return float(values.mean()), lo, hi


def check_learned(rare_loss: float | np.ndarray, vocab_size: int,
                  unigram_loss: float | np.ndarray | None = None, *,
                  row: np.ndarray | None = None, token: np.ndarray | None = None,
                  positions: str = "rare positions", seed: int = 0) -> LearnedPrecondition:
    """Rare tokens count as learned iff the clean CE at the rare positions beats the uniform
    guess ln V: with `row` (row id per position) iff the lower bound of the 95% row-bootstrap
    CI of (ln V - loss) > 0, without it iff the mean loss < ln V.

    `rare_loss`: per-position losses (or their mean); `unigram_loss`: the unigram model's CE at
    the same positions (per position or mean), the stronger baseline, reported; `token`: the
    predicted rare token per position, for the share of rare types learned; `positions` says
    which positions were used (see harness.pipeline.Prepared.precondition)."""
    loss = np.asarray(rare_loss, dtype=np.float64).reshape(-1)
    if loss.size == 0:
        raise BadInputError("no rare positions: lower the rarity threshold or evaluate more rows")
    if vocab_size < 2:
        raise BadInputError(f"vocab_size must be >= 2, got {vocab_size}")
    if not np.all(np.isfinite(loss)):
        raise BadInputError(f"{int((~np.isfinite(loss)).sum())} rare-position losses are NaN "
                            "or infinite: the model's forward pass is broken (check its weights)")
    rng = np.random.default_rng(seed)
    mean = float(loss.mean())
    uniform = math.log(vocab_size)
    row = None if row is None or loss.size != np.size(row) else np.asarray(row)
    m_uni = _margin(uniform - loss, row, rng)
    uni_arr = None if unigram_loss is None else np.asarray(unigram_loss, np.float64).reshape(-1)
    uni_mean = None if uni_arr is None else float(uni_arr.mean())
    m_unigram = (_margin(uni_arr - loss, row, rng)
                 if uni_arr is not None and uni_arr.size == loss.size else None)
    share = n_types = None
    if token is not None and np.size(token) == loss.size:
        types, inv = np.unique(np.asarray(token), return_inverse=True)
        per_type = np.bincount(inv, weights=loss) / np.bincount(inv)
        share, n_types = float(np.mean(per_type < uniform)), int(types.size)
    ok = bool(m_uni[1] > 0) if m_uni is not None else mean < uniform
    how = (f"95% row-bootstrap CI of ln V - loss [{m_uni[1]:.3f}, {m_uni[2]:.3f}]"
           if m_uni is not None else "mean only (no row ids)")
    uni = "" if uni_mean is None else f", unigram baseline {uni_mean:.3f}"
    types_txt = "" if share is None else f"; {share:.0%} of {n_types} rare types beat 1/V"
    if ok:
        msg = (f"rare tokens learned ({positions}): loss {mean:.3f} nats < uniform ln V = "
               f"{uniform:.3f}{uni}; {how}{types_txt}")
    else:
        msg = (f"untestable: rare tokens not learned ({positions}: loss {mean:.3f} nats vs "
               f"uniform ln V = {uniform:.3f}{uni}; {how} does not lie above 0{types_txt}); "
               "use a model that predicts rare tokens")
    return LearnedPrecondition(mean, uniform, uni_mean, ok, msg, m_uni, m_unigram, share,
                               n_types, int(loss.size), None if row is None else
                               int(np.unique(row).size), positions)
