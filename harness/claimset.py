"""The registry of claims: every `claims/test_*.py` file, loaded as a module.

Why the claim files themselves: a claim's preregistration, its computation (`compute`), the
numbers its golden pins (`PINNED`) and the cases CI runs (`ci_cases`) live in one file, so
adding a claim is one claim file plus its analysis module; the golden generator and the
mutation tests iterate this registry instead of keeping their own list.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Iterator

from harness.errors import BadInputError
from harness.verdicts import DIRECTIONS, Sesoi


@dataclass(frozen=True)
class ClaimSpec:
    """What every runner (pytest, report, calibration, sweeps) needs to know of a claim.

    Each claims/test_*.py defines `SPEC = ClaimSpec(...)` next to its preregistration
    docstring, plus `compute(prep, rarity, seed, ...) -> TestResult | None` (the analysis
    call, None when the case cannot run), `PINNED` (detail values its goldens pin) and
    `ci_cases(prep, rarity, seed)` (the cases CI runs)."""

    key: str                 # 'dual-regimes'
    number: int              # 1, 2, 3, ...
    title: str               # 'Dual regimes'
    hypothesis: str          # one sentence, as preregistered
    direction: str           # 'exists' | 'absent' (harness.verdicts)
    effect: str              # the effect measure, with units
    sesoi: Sesoi             # smallest effect size of interest, with its justification

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise BadInputError(f"{self.key}: direction must be one of {DIRECTIONS}")

    @property
    def detect(self) -> str:
        """The verdict that means 'the planted effect was found' (own-data power)."""
        return "supported" if self.direction == "exists" else "refuted"


def claims_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "claims"


@lru_cache(maxsize=1)
def load_claims() -> dict[str, ModuleType]:
    """{claim key: module} for every claims/test_*.py that defines CLAIM and compute."""
    folder = claims_dir()
    if not folder.is_dir():
        raise BadInputError(f"no claims/ directory at {folder}; run from a rarebench checkout")
    out = {}
    for path in sorted(folder.glob("test_*.py")):
        name = f"rarebench_claim_{path.stem}"
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        if hasattr(module, "CLAIM") and hasattr(module, "compute"):
            out[module.CLAIM] = module
    return dict(sorted(out.items(), key=lambda kv: getattr(kv[1], "SPEC", None)
                       and kv[1].SPEC.number or 99))


def specs() -> dict[str, ClaimSpec]:
    """{claim key: ClaimSpec} of every registered claim that declares one."""
    return {k: m.SPEC for k, m in load_claims().items() if hasattr(m, "SPEC")}


CI_SEED = 0
CI_POWER_REPS = 8  # own-data power replicates in CI (README test command: --power-reps 8)
CI_QS = (15.0, 50.0)
CI_WHICH = ("target",)


def ci_rarities():
    """The rarity settings of `pytest claims` with its defaults (the CI settings)."""
    from harness.data.rarity import RaritySpec

    return [RaritySpec(q=q, which=w) for w in CI_WHICH for q in CI_QS]


def ci_prepared(model_name: str):
    """The Prepared object the claims' `prepared` fixture builds at the CI settings (memoised
    per process by harness.pipeline.prepare, so tests share it)."""
    from harness import pipeline
    from harness.claimkit import claim_eval_spec

    spec = claim_eval_spec(model_name, seed=CI_SEED, which=CI_WHICH, qs=CI_QS)
    return pipeline.prepare(model_name, spec)


def ci_golden_cases(models: list[str]) -> Iterator[tuple]:
    """(golden path, prep, compute, pinned paths) for every claim case CI runs on `models`."""
    from harness.claimkit import golden_path

    for model in models:
        prep = ci_prepared(model)
        for rarity in ci_rarities():
            for module in load_claims().values():
                for key, compute in module.ci_cases(prep, rarity, CI_SEED):
                    yield (golden_path(key, model, CI_SEED, rarity), prep, compute,
                           tuple(getattr(module, "PINNED", ())))
