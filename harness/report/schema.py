"""results.json: the versioned, machine-readable record of one claim-suite run.

Why a schema module: the pytest plugin writes this file, `rarebench report` re-renders from it
and other tools read it, so its shape lives in one place (documented in docs/RESULTS_SCHEMA.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
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
    if m := re.fullmatch(r"(?:claim-?)?(\d+)", key):  # a later claim by its number
        by_number = {n: k for k, (n, _) in registered_claims().items()}
        return by_number.get(int(m.group(1)), key)
    return key


def registered_claims() -> dict[str, tuple[int, str]]:
    """{key: (number, title)}: the three original claims, then every claim file's ClaimSpec
    (harness.claimset), so a new claim file reaches the report without an entry here. Without
    a claims/ directory (a results file read elsewhere) only the original three."""
    out: dict[str, tuple[int, str]] = {}
    try:
        from harness.claimset import specs
        out.update({k: (s.number, s.title) for k, s in specs().items()})
    except Exception:  # noqa: BLE001 - no checkout, or a claim file that does not import
        pass
    return {**out, **CLAIMS}  # the original three keep the titles their reports used


def claim_sort_key(key: str) -> tuple[int, str]:
    return (registered_claims().get(key, (99, key))[0], key)


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
_OPTIONAL = (type(None),)
# the types render_report relies on: field -> allowed types (None allowed where listed)
_RECORD_TYPES = {"claim": (str,), "model": (str, *_OPTIONAL), "result": (dict,),
                 "nodeid": (str,), "settings": (dict, *_OPTIONAL),
                 "figures": (dict, *_OPTIONAL), "calibration": (dict, *_OPTIONAL)}
_RESULT_TYPES = {"verdict": (str,), "details": (dict, *_OPTIONAL)}
_DETAILS_TYPES = {"decision": (dict, *_OPTIONAL), "own_power": (dict, *_OPTIONAL)}
_ENTRY_TYPES = {"claim": (str,), "nodeid": (str,)}
_TOP_TYPES = {"settings": (dict, *_OPTIONAL), "manifest": (dict, *_OPTIONAL),
              "interrupted": (bool, *_OPTIONAL)}


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
    _check_types(data, _TOP_TYPES, source)
    for i, rec in enumerate(data["claims"]):
        missing = [k for k in _RECORD_REQUIRED if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise BadInputError(f"{source}: claims[{i}] lacks {', '.join(missing)}")
        where = f"{source}: claims[{i}]"
        _check_types(rec, _RECORD_TYPES, where)
        _check_types(rec["result"], _RESULT_TYPES, f"{where}.result", required=("verdict",))
        _check_types(rec["result"].get("details") or {}, _DETAILS_TYPES,
                     f"{where}.result.details")
        for name, rel in (rec.get("figures") or {}).items():
            _check_figure_path(rel, f"{where}.figures[{name!r}]")
    for key in ("skipped", "errors"):
        for i, entry in enumerate(data[key]):
            if not isinstance(entry, dict):
                raise BadInputError(f"{source}: {key}[{i}] must be an object")
            _check_types(entry, _ENTRY_TYPES, f"{source}: {key}[{i}]", required=("claim",))
    return data


def _check_types(obj: dict, types: dict[str, tuple], where: str,
                 required: tuple[str, ...] = ()) -> None:
    """BadInputError naming the first field of `obj` whose value has a type the report
    cannot use (a hand-edited or foreign file), instead of an AttributeError mid-render."""
    for key, kinds in types.items():
        if key not in obj and key not in required:
            continue
        value = obj.get(key)
        if not isinstance(value, kinds):
            names = " or ".join("null" if k is type(None) else _TYPE_NAMES.get(k, k.__name__)
                                for k in kinds)
            raise BadInputError(f"{where}: field {key!r} must be {names}, got "
                                f"{type(value).__name__} {_short(value)}")


_TYPE_NAMES = {dict: "an object", str: "a string", bool: "true/false"}


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_figure_path(rel: Any, where: str) -> None:
    """A figure path is relative to the run directory and stays inside it: `rarebench report
    --out DIR` copies it to DIR/<path>, which must never land outside DIR."""
    if not isinstance(rel, str) or not rel:
        raise BadInputError(f"{where}: a figure path must be a non-empty string")
    posix, windows = PurePosixPath(rel), PureWindowsPath(rel)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in windows.parts:
        raise BadInputError(f"{where} = {rel!r} points outside the run directory; figure "
                            "paths must be relative paths inside it")


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
