"""Four verdicts and the one rule that gives them, for every claim.

A claim is either that an effect *exists* (claim 1: rare tokens recruit a plateau) or that it
is *absent* (claims 2, 3: no module, no routing head). Each claim states its effect measure
and a smallest effect size of interest (SESOI) in advance, and the data then say one of:

- `supported`    the claim holds at the stated level;
- `refuted`      the data contradict it;
- `inconclusive` the data cannot decide (too little data, a failed validity gate such as an
                 unreliable ranking or a matched control that could not be matched);
- `untestable`   a precondition failed (the model never learned its rare tokens); the reason
                 and the numbers are kept.

exists: supported iff the one-sided test rejects "no effect" at alpha and every control
        passes; refuted iff the upper (1 - 2 alpha) bound of the effect lies below the SESOI;
        otherwise inconclusive.
absent: supported iff the equivalence test (TOST) puts the effect inside +-SESOI; refuted iff
        the effect is significant after the stated FDR correction and its estimate exceeds
        the SESOI; otherwise inconclusive.
A failed validity gate makes either direction inconclusive (it does not decide for or
against the claim); a failed precondition makes it untestable.

pytest outcome (claims/): supported = pass, refuted = fail, inconclusive and untestable =
xfail with the reason.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.errors import BadInputError

SUPPORTED, REFUTED, INCONCLUSIVE, UNTESTABLE = ("supported", "refuted", "inconclusive",
                                                "untestable")
VERDICTS = (SUPPORTED, REFUTED, INCONCLUSIVE, UNTESTABLE)
DIRECTIONS = ("exists", "absent")


@dataclass(frozen=True)
class Sesoi:
    """A smallest effect size of interest, fixed before the data are seen."""

    value: float
    measure: str
    why: str

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and self.value > 0):
            raise BadInputError(f"a SESOI must be a positive number, got {self.value}")

    def __str__(self) -> str:
        return f"SESOI {self.value:g} ({self.measure}): {self.why}"


@dataclass(frozen=True)
class Gate:
    """One condition of a decision: its value, the threshold and whether it passed."""

    name: str
    passed: bool
    value: float | None = None
    threshold: float | None = None
    reason: str = ""          # said when it fails

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    verdict: str
    reason: str
    direction: str
    sesoi: float
    gates: tuple[Gate, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reason": self.reason, "direction": self.direction,
                "sesoi": self.sesoi, "gates": {g.name: g.to_dict() for g in self.gates},
                "conditions": {g.name: g.passed for g in self.gates}}


def _failed(gates: tuple[Gate, ...]) -> list[str]:
    return [g.reason or g.name for g in gates if not g.passed]


def decide_exists(*, p_value: float, alpha: float, upper: float, sesoi: float,
                  validity: tuple[Gate, ...] = (), controls: tuple[Gate, ...] = ()) -> Decision:
    """Verdict for a claim that an effect exists.

    p_value: one-sided test of "no effect"; upper: the upper (1 - 2 alpha) bound of the effect
    (same scale as sesoi). validity gates (e.g. a reliable ranking, balanced matching): a
    failure makes the result inconclusive. controls (e.g. the effect is not explained by
    difficulty): all must pass for 'supported'."""
    gates = tuple(validity) + tuple(controls)
    sig = Gate("significant", bool(p_value < alpha), p_value, alpha,
               f"one-sided p = {p_value:.3g} >= alpha = {alpha:g}")
    below = Gate("upper_bound_below_sesoi", bool(upper < sesoi), upper, sesoi,
                 f"upper bound {upper:.3g} >= SESOI {sesoi:g}")
    gates += (sig, below)
    if bad := _failed(tuple(validity)):
        return Decision(INCONCLUSIVE, "; ".join(bad), "exists", sesoi, gates)
    if sig.passed and not _failed(tuple(controls)):
        return Decision(SUPPORTED, f"effect detected (p = {p_value:.3g} < {alpha:g}) and every "
                        "control passes", "exists", sesoi, gates)
    if below.passed:
        return Decision(REFUTED, f"the effect's upper bound {upper:.3g} lies below the SESOI "
                        f"{sesoi:g}" + (f" ({'; '.join(_failed(tuple(controls)))})"
                                        if _failed(tuple(controls)) else ""),
                        "exists", sesoi, gates)
    why = [sig.reason] if not sig.passed else _failed(tuple(controls))
    return Decision(INCONCLUSIVE, "; ".join(why) + f"; yet the upper bound {upper:.3g} does "
                    f"not exclude the SESOI {sesoi:g}", "exists", sesoi, gates)


def decide_absent(*, equivalent: bool, significant: bool, estimate: float, sesoi: float,
                  family: str, validity: tuple[Gate, ...] = (),
                  detail: str = "") -> Decision:
    """Verdict for a claim that an effect is absent.

    equivalent: the TOST puts the effect inside +-sesoi (for several effects - heads, groups -
    jointly); significant: the effect is significant after the FDR correction over `family`;
    estimate: the effect's point estimate (the largest over the family)."""
    gates = tuple(validity) + (
        Gate("equivalent", bool(equivalent), None, sesoi,
             f"equivalence within +-{sesoi:g} not shown"),
        Gate("significant", bool(significant), None, None, f"nothing significant ({family})"),
        Gate("estimate_exceeds_sesoi", bool(estimate > sesoi), estimate, sesoi,
             f"largest estimate {estimate:.3g} <= SESOI {sesoi:g}"))
    tail = f" ({detail})" if detail else ""
    if bad := _failed(tuple(validity)):
        return Decision(INCONCLUSIVE, "; ".join(bad) + tail, "absent", sesoi, gates)
    if significant and estimate > sesoi:
        return Decision(REFUTED, f"an effect beyond the SESOI {sesoi:g} is significant after "
                        f"{family} (estimate {estimate:.3g}){tail}", "absent", sesoi, gates)
    if equivalent:
        return Decision(SUPPORTED, f"equivalence within +-{sesoi:g} shown{tail}", "absent",
                        sesoi, gates)
    why = ("significant, but the estimate does not exceed the SESOI" if significant
           else "nothing significant") + f", and equivalence within +-{sesoi:g} is not shown"
    return Decision(INCONCLUSIVE, why + tail, "absent", sesoi, gates)


def untestable(reason: str, would_be: Decision | None, sesoi: float,
               direction: str) -> Decision:
    """A failed precondition: 'untestable', keeping what the rule would have said."""
    text = reason + (f"; without the precondition the verdict would be {would_be.verdict!r} "
                     f"({would_be.reason})" if would_be is not None else "")
    gates = would_be.gates if would_be is not None else ()
    return Decision(UNTESTABLE, text, direction, sesoi, gates)


def pytest_outcome(verdict: str) -> str:
    """'pass' | 'fail' | 'xfail' for a claim test (documented in the claims' conftest)."""
    if verdict not in VERDICTS:
        raise BadInputError(f"unknown verdict {verdict!r}; one of {', '.join(VERDICTS)}")
    return {SUPPORTED: "pass", REFUTED: "fail"}.get(verdict, "xfail")


def from_v1(verdict: str, details: dict | None) -> str:
    """A results.json version-1 verdict in today's words: 'not supported' was used both for
    'the data contradict the claim' and, with details['inconclusive'], for 'cannot decide'.
    Version 1 had no refutation rule, so a v1 'not supported' without the inconclusive flag
    reads 'refuted' only where it meant a detected effect against an absence claim
    (details['clustered'] or a routing head); everything else reads 'inconclusive'."""
    if verdict in VERDICTS:
        return verdict
    if verdict != "not supported":
        raise BadInputError(f"unknown version-1 verdict {verdict!r}")
    d = details or {}
    if d.get("inconclusive"):
        return INCONCLUSIVE
    if d.get("clustered") or d.get("routing_heads"):
        return REFUTED
    return INCONCLUSIVE
