"""Monte-Carlo calibration of a test: power on planted effects, false-positive rate on nulls.

Every 'not supported' verdict in rarebench is read against these numbers; the tables in
reports/calibration/ are written by the same helpers so all claims report alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.errors import BadInputError

HEADER = ("| test | setting | kind | n_reps | rate | MC s.e. | target | pass |\n"
          "|---|---|---|---:|---:|---:|---|---|")


def mc_rate(n_reject: int, n: int) -> tuple[float, float]:
    """Rejection rate and its binomial Monte-Carlo standard error."""
    if n <= 0:
        raise BadInputError("need at least one Monte-Carlo replicate")
    if not 0 <= n_reject <= n:
        raise BadInputError(f"n_reject must lie in [0, {n}], got {n_reject}")
    rate = n_reject / n
    return rate, math.sqrt(rate * (1 - rate) / n)


@dataclass(frozen=True)
class CalibrationRow:
    """kind 'fpr': pass iff rate <= alpha + 2 s.e.(alpha); kind 'power': pass iff rate >= target.

    The FPR margin uses the s.e. under the nominal rate alpha (not the observed rate, which is
    0 when no replicate rejects and would make the margin vanish).
    """

    name: str
    setting: str
    kind: str
    n_reps: int
    rejections: int
    target: float

    @property
    def rate(self) -> float:
        return mc_rate(self.rejections, self.n_reps)[0]

    @property
    def mc_se(self) -> float:
        return mc_rate(self.rejections, self.n_reps)[1]

    @property
    def bound(self) -> float:
        if self.kind == "fpr":
            return self.target + 2 * math.sqrt(self.target * (1 - self.target) / self.n_reps)
        return self.target

    @property
    def passed(self) -> bool:
        return self.rate <= self.bound if self.kind == "fpr" else self.rate >= self.bound

    def markdown(self) -> str:
        rel = "<=" if self.kind == "fpr" else ">="
        return (f"| {self.name} | {self.setting} | {self.kind} | {self.n_reps} | {self.rate:.3f} | "
                f"{self.mc_se:.3f} | {rel} {self.bound:.3f} | {'yes' if self.passed else 'NO'} |")

    def __str__(self) -> str:
        return self.markdown()

    def to_dict(self) -> dict:
        return {"name": self.name, "setting": self.setting, "kind": self.kind,
                "n_reps": self.n_reps, "rejections": self.rejections, "rate": self.rate,
                "mc_se": self.mc_se, "target": self.target, "bound": self.bound,
                "passed": self.passed}


def calibration_row(name: str, setting: str, n_reps: int, rejections: int, alpha: float = 0.05,
                    kind: str = "fpr", power_target: float = 0.8) -> CalibrationRow:
    """One table row; `alpha` is the nominal level (fpr), `power_target` the required power."""
    if kind not in ("fpr", "power"):
        raise BadInputError(f"kind must be 'fpr' or 'power', got {kind!r}")
    mc_rate(rejections, n_reps)  # validates
    return CalibrationRow(name, setting, kind, n_reps, rejections,
                          alpha if kind == "fpr" else power_target)


def calibration_table(rows: list[CalibrationRow]) -> str:
    return "\n".join([HEADER, *(r.markdown() for r in rows)])


# ---------------------------------------------------------------- generated calibration files

def calibration_record(claim: str, rows: list[CalibrationRow], settings: dict,
                       code_files: tuple[str, ...]) -> dict:
    """The JSON beside reports/CALIBRATION.md for one claim: every row, the settings that made
    it and a digest of the code that computed it (so a stale file is detectable)."""
    import hashlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for rel in sorted(code_files):
        h.update(rel.encode())
        h.update((root / rel).read_bytes())
    return {"schema": 1, "claim": claim, "settings": settings, "code_files": sorted(code_files),
            "code_sha256": h.hexdigest(), "rows": [r.to_dict() for r in rows]}


def agrees(committed: CalibrationRow | dict, fresh: CalibrationRow | dict, z: float = 3.0) -> bool:
    """Do two Monte-Carlo rates agree within `z` combined standard errors (each s.e. taken at
    the pooled rate, so two zero rates agree and a 0 vs 0.3 difference does not)?"""
    a = committed if isinstance(committed, dict) else committed.to_dict()
    b = fresh if isinstance(fresh, dict) else fresh.to_dict()
    na, nb = a["n_reps"], b["n_reps"]
    pooled = (a["rate"] * na + b["rate"] * nb) / (na + nb)
    se = math.sqrt(max(pooled * (1 - pooled), 1.0 / (na + nb)) * (1 / na + 1 / nb))
    return abs(a["rate"] - b["rate"]) <= z * se
