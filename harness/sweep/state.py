"""What the sweep store holds of each cell: done, running, failed, pending.

Layout under the store root (shared by any number of sweeps):
    <key>.npz / <key>.json   the finished cell (harness.store.ResultStore; its manifest holds
                             the cell's settings and its results.json content)
    state/<key>.running.json an attempt in progress (host, pid, start)
    state/<key>.attempts     one JSON line per attempt start and end (O_APPEND)
    state/<key>.failed.json  the last sweep's final error, until the cell succeeds
    runs/<run-id>/           each finished attempt's own claims report
    cache/                   the claims' influence / ablation store, shared by the cells
Why this is safe for two sweeps at once: every whole-file write is temp + os.replace, the
manifest (written last) is the only 'done' mark, equal keys hold equal content, and attempt
lines are single small appends.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.store import ResultStore, _atomic_write, canonical_json


class SweepStore:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()
        self.results = ResultStore(self.root)
        self.state = self.root / "state"

    def _path(self, key: str, suffix: str) -> Path:
        return self.state / f"{key}.{suffix}"

    # ---- finished cells ------------------------------------------------------------------
    def done(self, key: str) -> bool:
        return self.results.has(key)

    def save(self, key: str, settings: dict, results: dict, meta: dict) -> None:
        self.results.save(key, {"n_records": np.asarray(len(results["claims"]))},
                          {"sweep_cell": settings, "results": results, **meta})
        self._path(key, "failed.json").unlink(missing_ok=True)

    def load(self, key: str) -> dict[str, Any]:
        return self.results.manifest(key)

    # ---- attempts ------------------------------------------------------------------------
    def start_attempt(self, key: str, sweep_id: str, label: str) -> int:
        """Log an attempt start and mark the cell running; the attempt number in this sweep."""
        info = {"event": "start", "sweep": sweep_id, "label": label, "host": socket.gethostname(),
                "pid": os.getpid(), "time": time.time()}
        self._append(key, info)
        _atomic_write(self._path(key, "running.json"), canonical_json(info).encode())
        return sum(a["event"] == "start" for a in self.attempts(key, sweep_id))

    def end_attempt(self, key: str, sweep_id: str, error: str | None) -> None:
        self._append(key, {"event": "end", "sweep": sweep_id, "error": error,
                           "time": time.time()})
        self._path(key, "running.json").unlink(missing_ok=True)

    def _append(self, key: str, info: dict) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path(key, "attempts"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (canonical_json(info) + "\n").encode())
        finally:
            os.close(fd)

    def attempts(self, key: str, sweep_id: str | None = None) -> list[dict]:
        try:
            lines = self._path(key, "attempts").read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash: not an attempt
                continue
            if sweep_id is None or rec.get("sweep") == sweep_id:
                out.append(rec)
        return out

    def running(self, key: str) -> dict | None:
        try:
            return json.loads(self._path(key, "running.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    # ---- failures ------------------------------------------------------------------------
    def record_failure(self, key: str, info: dict) -> None:
        _atomic_write(self._path(key, "failed.json"), canonical_json(info).encode())
        self._path(key, "running.json").unlink(missing_ok=True)

    def failure(self, key: str) -> dict | None:
        try:
            return json.loads(self._path(key, "failed.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    # ---- the status of a grid ------------------------------------------------------------
    def status(self, keys: list[str]) -> dict[str, str]:
        """key -> done | running | stale (its job died without a word) | failed | pending."""
        host = socket.gethostname()
        out = {}
        for key in keys:
            run = self.running(key)
            if self.done(key):
                out[key] = "done"
            elif run is not None:
                out[key] = "stale" if run.get("host") == host and not _alive(run["pid"]) \
                    else "running"
            elif self.failure(key) is not None:
                out[key] = "failed"
            else:
                out[key] = "pending"
        return out


def _alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return True
    return True
