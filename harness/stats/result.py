"""One small result object for every claim and every statistical test (scipy.stats style).

Why one type: the report, results.json and the pytest recorder treat all claims alike, and a
researcher reading a failure message sees the same fields everywhere.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.verdicts import VERDICTS, from_v1


@dataclass(frozen=True)
class TestResult:
    """statistic, p-value, effect size with its CI, and a verdict on the claim.

    `details` holds everything else worth reporting (JSON-serialisable: numbers, strings,
    lists, dicts), e.g. power/false-positive rate from calibration, controls, reliability.
    """

    __test__ = False  # not a pytest test class

    name: str
    statistic: float
    p_value: float
    effect: float
    ci_low: float
    ci_high: float
    verdict: str
    effect_name: str = "effect"
    alpha: float = 0.05
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict == "not supported":  # a version-1 word: read it in today's terms
            object.__setattr__(self, "verdict", from_v1(self.verdict, self.details))
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    @property
    def supported(self) -> bool:
        return self.verdict == "supported"

    @property
    def decision(self) -> dict[str, Any]:
        """The decision record (harness.verdicts.Decision.to_dict()), {} if none."""
        return self.details.get("decision") or {}

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TestResult":
        return cls(**data)

    def __str__(self) -> str:
        return (
            f"{self.name}: {self.verdict} | statistic={_fmt(self.statistic)} "
            f"p={_fmt(self.p_value)} {self.effect_name}={_fmt(self.effect)} "
            f"[{_fmt(self.ci_low)}, {_fmt(self.ci_high)}] (alpha={self.alpha})"
        )


def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    return f"{x:.4g}"


def _jsonable(obj: Any) -> Any:
    """numpy scalars/arrays -> plain Python; NaN/inf -> None (strict JSON)."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if np is not None and isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if np is not None and isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
