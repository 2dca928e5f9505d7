"""results.json: the versioned, machine-readable record of one claim-suite run.

Why a schema module: the pytest plugin writes this file, `rarebench report` re-renders from it
and other tools read it, so its shape lives in one place (documented in docs/RESULTS_SCHEMA.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path, PurePath
from typing import Any

from harness.errors import BadInputError

SCHEMA_NAME = "rarebench.results"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: three verdicts ('not supported'); read, upgraded

# Canonical claim keys -> (number, title). Other claim names are kept as given.
CLAIMS: dict[str, tuple[int, str]] = {
    "dual-regimes": (1, "Dual regimes"),
    "no-clustering": (2, "No clustering"),
    "no-routing": (3, "No routing"),
}
_CLAIM_PATTERNS = (
    ("dual-regimes", re.compile(r"regime|claim-?1\b|^1$")),
    ("no-clustering", re.compile(r"cluster|claim-?2\b|^2$")),
    ("no-routing", re.compile(r"rout|claim-?3\b|^3$")),
)


def claim_key(name: str) -> str:
    """'test_dual_regimes', 'claim1', 'Dual regimes' -> 'dual-regimes' (unknown names kebab-cased)."""
    key = re.sub(r"[\s_]+", "-", str(name).strip().lower())
    key = re.sub(r"^test-", "", key)
    for canonical, pattern in _CLAIM_PATTERNS:
        if pattern.search(key):
            return canonical
    return key


def claim_sort_key(key: str) -> tuple[int, str]:
    return (CLAIMS.get(key, (99, key))[0], key)


def to_jsonable(obj: Any) -> Any:
    """Plain JSON values: dataclasses -> dicts, numpy -> Python, paths -> str, NaN/inf -> None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays and scalars
        return to_jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return str(obj)


def empty_results(run_id: str, settings: dict, manifest: dict) -> dict[str, Any]:
    return {
        "schema": SCHEMA_NAME,
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "started_utc": None,
        "finished_utc": None,
        "settings": to_jsonable(settings),
        "manifest": to_jsonable(manifest),
        "claims": [],
        "skipped": [],
        "errors": [],
    }


_REQUIRED = {"schema_version": int, "run_id": str, "claims": list, "skipped": list,
             "errors": list}
_RECORD_REQUIRED = ("claim", "model", "result")


def validate(data: Any, source: str = "results") -> dict[str, Any]:
    """Check the shape `render_report` relies on; BadInputError names the first problem."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_NAME:
        raise BadInputError(f"{source} is not a rarebench results file (no \"schema\": "
                            f"\"{SCHEMA_NAME}\"); pass the results.json written by `rarebench run`")
    version = data.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise BadInputError(f"{source} has schema_version {version!r}; this rarebench reads "
                            f"versions {READABLE_VERSIONS} (re-run `rarebench run` to "
                            "regenerate it)")
    for key, kind in _REQUIRED.items():
        if not isinstance(data.get(key), kind):
            raise BadInputError(f"{source}: field {key!r} must be a {kind.__name__}")
    for i, rec in enumerate(data["claims"]):
        missing = [k for k in _RECORD_REQUIRED if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise BadInputError(f"{source}: claims[{i}] lacks {', '.join(missing)}")
    return data


def upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 results dict in version-2 terms: each record's verdict in the four words
    (harness.verdicts.from_v1; the original word is kept as details['verdict_v1'])."""
    if data.get("schema_version") != 1:
        return data
    from harness.verdicts import from_v1

    out = {**data, "schema_version": SCHEMA_VERSION, "upgraded_from": 1, "claims": []}
    for rec in data["claims"]:
        result = dict(rec.get("result") or {})
        details = dict(result.get("details") or {})
        if result.get("verdict") is not None:
            details.setdefault("verdict_v1", result["verdict"])
            result["verdict"] = from_v1(result["verdict"], details)
        result["details"] = details
        out["claims"].append({**rec, "result": result})
    return out


def load_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"results file {path} does not exist; pass the results.json of a "
                            "run (reports/<run-id>/results.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"results file {path} is not valid JSON ({exc})") from None
    return upgrade(validate(data, source=str(path)))


def write_results(results: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(to_jsonable(results), indent=2, allow_nan=False) + "\n",
                   encoding="utf-8")
    tmp.replace(path)
    return path
