"""Content-addressed result cache: arrays (.npz) + JSON manifest, atomic and checksummed.

Why: influence runs on large models take hours; a key built from everything that determines
the numbers (model, weights, data, rarity, ablation, code version) lets a re-run reuse them,
per-chunk entries let an interrupted run resume, and a checksum turns a truncated file into a
recomputation instead of silently wrong results.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import platform
import subprocess
import tempfile
import time
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.errors import CorruptCacheError

log = logging.getLogger(__name__)
_PACKAGES = ("torch", "numpy", "transformers", "transformer-lens")


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, numpy scalars/arrays as lists: equal specs -> equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@lru_cache(maxsize=1)
def _environment() -> dict[str, Any]:
    return _collect_environment()


def environment() -> dict[str, Any]:
    """Package versions, python, platform and the git sha of the checkout (cached)."""
    return json.loads(json.dumps(_environment()))


def _collect_environment() -> dict[str, Any]:
    """Package versions, python, platform and the git sha of the checkout (when there is one)."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    from harness import __version__

    versions["harness"] = __version__
    return {"packages": versions, "python": platform.python_version(),
            "platform": platform.platform(), "git_sha": _git_sha()}


# Source files whose content decides the numbers a store entry holds.
ENGINE_SOURCES = ("ablation/*.py", "models/*.py", "data/*.py", "pipeline.py", "store.py")


def source_digest(root: Path, patterns: tuple[str, ...]) -> str:
    """sha256 over the files matching `patterns` under root (relative path, then content)."""
    h = hashlib.sha256()
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


@lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 over the engine's source files (ENGINE_SOURCES, by relative path)."""
    return source_digest(Path(__file__).resolve().parent, ENGINE_SOURCES)


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


class ResultStore:
    """`root/<key>.npz` + `root/<key>.json`; the manifest is written last and marks completion."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ResultStore({str(self.root)!r})"

    # ---- keys ----------------------------------------------------------------------------
    @staticmethod
    def key(**spec: Any) -> str:
        """sha256 of the canonical JSON of the spec parts (model, revision, weights hash, data,
        rarity, ablation, ...) plus what can change a number without changing the spec: the
        versions of torch / transformers / numpy / transformer-lens and a digest of the
        source of the engine that computes stored arrays (derived, never hand-bumped).
        Order of keyword arguments does not matter."""
        from harness import __version__

        return _sha256(canonical_json({"spec": spec, "harness": __version__,
                                       "code": code_digest(),
                                       "packages": environment()["packages"]}).encode())

    @staticmethod
    def child(key: str, name: str) -> str:
        """Key of a part of a larger result (a batch, the means): resumable runs."""
        return f"{key}-{name}"

    def _paths(self, key: str) -> tuple[Path, Path]:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"bad store key {key!r}")
        return self.root / f"{key}.npz", self.root / f"{key}.json"

    # ---- read / write --------------------------------------------------------------------
    def save(self, key: str, arrays: dict[str, np.ndarray], manifest: dict[str, Any] | None = None,
             ) -> Path:
        data_path, man_path = self._paths(key)
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        payload = buf.getvalue()
        _atomic_write(data_path, payload)
        full = {
            "key": key,
            "sha256": _sha256(payload),
            "bytes": len(payload),
            "arrays": {k: {"dtype": str(np.asarray(v).dtype), "shape": list(np.shape(v))}
                       for k, v in arrays.items()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "environment": environment(),
            **(manifest or {}),
        }
        _atomic_write(man_path, canonical_json(full).encode())
        return data_path

    def manifest(self, key: str) -> dict[str, Any]:
        _, man_path = self._paths(key)
        try:
            return json.loads(man_path.read_text())
        except FileNotFoundError:
            raise KeyError(key) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptCacheError(f"manifest {man_path} is unreadable ({exc}); delete it or "
                                    "re-run to recompute") from exc

    def has(self, key: str) -> bool:
        """True when a complete entry exists (the manifest is written after the data)."""
        return self._paths(key)[1].is_file()

    def load(self, key: str) -> dict[str, np.ndarray]:
        """Arrays of an entry after verifying the checksum; CorruptCacheError when it fails."""
        data_path, _ = self._paths(key)
        man = self.manifest(key)
        try:
            payload = data_path.read_bytes()
        except FileNotFoundError:
            raise CorruptCacheError(f"{data_path} is missing but its manifest exists; "
                                    "re-run to recompute") from None
        if _sha256(payload) != man.get("sha256"):
            raise CorruptCacheError(f"{data_path} does not match its sha256 (truncated or "
                                    "corrupted); re-run to recompute")
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def delete(self, key: str) -> None:
        data_path, man_path = self._paths(key)
        man_path.unlink(missing_ok=True)  # manifest first: a half-deleted entry reads as absent
        data_path.unlink(missing_ok=True)

    def load_or_none(self, key: str, required: tuple[str, ...] = ()
                     ) -> dict[str, np.ndarray] | None:
        """Stored arrays for `key`, or None when absent or corrupt - unreadable, failing its
        checksum, or lacking one of the `required` arrays (a corrupt entry is logged and
        removed, so the caller recomputes it)."""
        if not self.has(key):
            return None
        try:
            arrays = self.load(key)
            missing = [k for k in required if k not in arrays]
            if missing:
                raise CorruptCacheError(f"entry lacks arrays {missing}")
            return arrays
        except CorruptCacheError as exc:
            log.warning("recomputing %s: %s", key, exc)
            self.delete(key)
            return None

    def get_or_compute(self, key: str, fn: Callable[[], dict[str, np.ndarray]],
                       manifest: dict[str, Any] | None = None,
                       required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        """Stored arrays for `key`, or `fn()` saved under it. A corrupt entry (or one lacking
        a `required` array) is logged, removed and recomputed."""
        stored = self.load_or_none(key, required)
        if stored is not None:
            return stored
        arrays = fn()
        self.save(key, arrays, manifest)
        return arrays
