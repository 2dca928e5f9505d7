"""The grid's cells and their store keys.

Why a key of settings + code: a rerun must skip exactly the cells whose numbers would not
change, whatever the file names, the machine or the order of the grid; and a code change
that can move a number must make every affected cell run again. The key is
ResultStore.key (settings, harness version, engine source digest, package versions) plus a
digest of the claim and statistics sources, which the engine digest does not cover.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.sweep.spec import SweepSpec

KEY_KIND = "sweep-cell/1"
# Beyond harness.store.ENGINE_SOURCES: what turns prepared arrays into a claim's numbers.
CLAIM_SOURCES = ("claims/*.py", "harness/analyses/*.py", "harness/stats/*.py",
                 "harness/verdicts.py", "harness/claimkit.py", "harness/claimset.py")


@dataclass(frozen=True)
class Cell:
    """One job: one claim on one model (checkpoint) at one seed and rarity setting, with the
    sweep's `rarebench run` options. Device is not part of it: it moves numbers only within
    the golden tolerance."""

    model: str
    seed: int
    rarity: str
    claim: str
    quick: bool
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        return f"{self.model} seed{self.seed} {self.rarity} {self.claim}"

    def settings(self) -> dict[str, Any]:
        d = asdict(self)
        d["options"] = dict(self.options)
        return d

    @classmethod
    def from_settings(cls, d: dict[str, Any]) -> "Cell":
        return cls(**{**d, "options": tuple(sorted(d.get("options", {}).items()))})


def expand(spec: SweepSpec) -> list[Cell]:
    """Every cell, models outermost (cells of one model run near each other in time)."""
    opts = tuple(sorted(spec.options.items()))
    return [Cell(m, s, r, c, spec.quick, opts) for m in spec.models for s in spec.seeds
            for r in spec.rarities for c in spec.claims]


@lru_cache(maxsize=1)
def claims_digest() -> str:
    from harness.store import source_digest

    return source_digest(Path(__file__).resolve().parents[2], CLAIM_SOURCES)


def cell_key(cell: Cell) -> str:
    from harness.store import ResultStore

    return ResultStore.key(kind=KEY_KIND, cell=cell.settings(), claims_code=claims_digest())
