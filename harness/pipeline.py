"""The glue every claim test shares: model -> evaluation rows -> frequencies -> influence.

Why one module: the three claims must see the *same* rows, kept positions, rarity and
influence for a (model, seed), and the expensive part (the all-neuron ablation) is computed
once per process (memo) and once per machine (ResultStore), whatever the rarity spec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from harness.data.frequency import FrequencyTable, count_tokens
from harness.data.packing import keep_mask, pack_rows, special_ids_for
from harness.data.rarity import RaritySpec, position_masks, rare_vocab
from harness.data.sources import iter_documents
from harness.data.tokenizer import fixtures_dir
from harness.errors import BadInputError


@dataclass(frozen=True)
class EvalSpec:
    """Which text and how much of it. `seed` shuffles the packed rows (the paper used 42), so
    different seeds evaluate different row samples of the same text."""

    text: str = "fixtures"
    n_rows: int = 48
    seq_len: int = 256
    seed: int = 42
    max_docs: int | None = None

    def __post_init__(self) -> None:
        if self.n_rows < 4:
            raise BadInputError(f"n_rows must be >= 4 (split-half needs rows), got {self.n_rows}")
        if self.seq_len < 8:
            raise BadInputError(f"seq_len must be >= 8, got {self.seq_len}")


@dataclass(eq=False)
class Prepared:
    """One model on one evaluation set: everything the claims need, positions row-major."""

    model_name: str
    facade: Any
    spec: EvalSpec
    rows: np.ndarray  # int64 [n_rows, T]
    keep: np.ndarray  # bool [n_rows, T]
    freq: FrequencyTable
    freq_note: str
    influence: Any  # harness.ablation.neuron.NeuronInfluence
    store_root: str | None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n_pos(self) -> int:
        return int(self.influence.delta.shape[0])

    def masks(self, rarity: RaritySpec) -> tuple[np.ndarray, np.ndarray]:
        """(rare, common) bool [n_pos] aligned with the influence rows."""
        vocab = rare_vocab(self.freq, rarity)
        rare, common = position_masks(self.rows, self.keep, vocab, rarity.which)
        inf = self.influence
        return rare[inf.row, inf.pos], common[inf.row, inf.pos]

    def unigram_loss(self, mask: np.ndarray) -> float:
        """Mean CE of the unigram model (the smoothed frequency table) at masked positions."""
        p = self.freq.probs
        return float(-np.log(p[self.influence.target[mask]]).mean()) if mask.any() else math.nan

    def info(self) -> dict[str, Any]:
        return {"model": self.facade.info(), "eval": self.spec.__dict__, "n_pos": self.n_pos,
                "n_rows": int(self.rows.shape[0]), "frequency": self.freq_note}


def frequency_for(model_name: str, facade: Any, rows: np.ndarray) -> tuple[FrequencyTable, str]:
    """Training-token frequencies: exact counts for the committed fixtures, a committed
    offline-corpus proxy for tokenizers we have one for, else the evaluation rows themselves
    (a weak proxy, named as such in every report)."""
    name = model_name.split("@")[0]
    exact = fixtures_dir() / "models" / name / "train_counts"
    if exact.with_suffix(".npy").is_file():
        return FrequencyTable.load(exact), "exact training-token counts"
    proxy = fixtures_dir() / "frequency" / _tokenizer_key(facade)
    if proxy.with_suffix(".npy").is_file():
        table = FrequencyTable.load(proxy)
        if table.vocab_size == facade.d_vocab:
            return table, f"proxy: {table.source}"
    counts = count_tokens(rows, facade.d_vocab)
    return FrequencyTable(counts, "evaluation rows"), "weak proxy: counts of the evaluation rows"


def _tokenizer_key(facade: Any) -> str:
    if facade.family == "gpt2" or (facade.d_vocab == 50257 and facade.family != "llama"):
        return "gpt2-bpe"
    return facade.name.split("@")[0]


def build_rows(facade: Any, spec: EvalSpec) -> tuple[np.ndarray, np.ndarray]:
    tok = facade.tokenizer
    docs = (tok.encode(d, add_special_tokens=False) for d in iter_documents(spec.text, spec.max_docs))
    bos = facade.bos_token_id if facade.bos_token_id is not None else facade.eos_token_id
    eos = facade.eos_token_id if facade.eos_token_id is not None else bos
    rows = pack_rows(docs, spec.seq_len, bos_id=bos, eos_id=eos, seed=spec.seed,
                     max_rows=spec.n_rows)
    if len(rows) < spec.n_rows:
        raise BadInputError(f"text source {spec.text!r} gives only {len(rows)} rows of "
                            f"{spec.seq_len} tokens; ask for fewer rows or more text")
    special = special_ids_for(tok, facade.family)
    return rows, keep_mask(rows, special)


@lru_cache(maxsize=4)
def load_facade(model_name: str, device: str = "cpu") -> Any:
    from harness.models.loading import load_model

    return load_model(model_name, device=device)


def prepare(model_name: str, spec: EvalSpec = EvalSpec(), *, device: str = "cpu",
            store_root: str | None = None, batch_size: int = 8) -> Prepared:
    """Memoised per process: every claim test of a (model, spec) shares one computation."""
    return _prepare(model_name, spec, device, store_root, batch_size)


@lru_cache(maxsize=8)
def _prepare(model_name: str, spec: EvalSpec, device: str, store_root: str | None,
             batch_size: int) -> Prepared:
    from harness.ablation.neuron import neuron_influence
    from harness.store import ResultStore

    facade = load_facade(model_name, device)
    rows, keep = build_rows(facade, spec)
    freq, note = frequency_for(model_name, facade, rows)
    store = ResultStore(store_root) if store_root else None
    influence = neuron_influence(facade, rows, keep, values="mean", batch_size=batch_size,
                                 store=store)
    return Prepared(model_name, facade, spec, rows, keep, freq, note, influence, store_root)


def final_activations(prep: Prepared, batch_size: int = 8) -> np.ndarray:
    """float32 [n_pos, d_mlp] final-layer MLP activations at the kept positions (row-major,
    aligned with the influence rows). Memoised on the Prepared object."""
    if "acts" not in prep.extras:
        import torch

        parts = []
        for start in range(0, len(prep.rows), batch_size):
            sl = slice(start, start + batch_size)
            with torch.no_grad():
                post = prep.facade.forward_final(torch.from_numpy(prep.rows[sl])).post
            mask = torch.from_numpy(prep.keep[sl])
            parts.append(post[mask].float().cpu().numpy())
        prep.extras["acts"] = np.concatenate(parts).astype(np.float32)
    return prep.extras["acts"]


def default_spec_for(model_name: str, quick: bool = False) -> EvalSpec:
    """CI-sized defaults: tiny fixtures evaluate on their held-out sample; real models on more
    rows when not in quick mode."""
    if model_name.startswith("tiny-"):
        return EvalSpec(n_rows=32 if quick else 48)
    return EvalSpec(n_rows=16 if quick else 64)


def reports_root() -> Path:
    return Path(__file__).resolve().parents[1] / "reports"
