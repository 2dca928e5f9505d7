"""Run a sweep's unfinished cells on Ray: one task per cell, Ray doing placement, retries
(`max_retries`, exceptions included) and failure reporting; no scheduler of our own.

Each task runs its cell in the worker process exactly as `rarebench run` does
(harness.api.run_claims), writes the result to the store and returns. A cell already in the
store under its key is not submitted (resume). A cell whose last retry failed, or whose
worker died each time, gets a failure record with its error and is in the sweep report.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.errors import MissingPackageError
from harness.sweep.cells import Cell, cell_key, expand
from harness.sweep.spec import SweepSpec
from harness.sweep.state import SweepStore

INSTALL = 'pip install "rarebench[sweep]" (or: pip install -c constraints.txt "ray[default]")'
ENV_PASSED = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", "HF_HOME",
              "HF_HUB_CACHE")
POLL_S = 1.0


class CellError(RuntimeError):
    """A cell's claim run raised or reported an error (retried by Ray)."""


@dataclass
class SweepOutcome:
    sweep_id: str
    spec: SweepSpec
    cells: list[dict] = field(default_factory=list)  # {cell, key, status, reused, error, ...}

    def count(self, status: str) -> int:
        return sum(c["status"] == status for c in self.cells)


def import_ray():
    try:
        import ray
    except ImportError:
        raise MissingPackageError(f"rarebench sweep needs Ray: {INSTALL}") from None
    return ray


def run_cell(cell: Cell, out_dir: Path, run_id: str, cache_dir: Path) -> dict:
    """One cell, as `rarebench run --models M --seeds S --rarity-which W --rarity-q Q -k CLAIM
    [options]` with the store's cache: its results.json content. CellError when a claim test
    errored or nothing ran."""
    import json

    from harness.api import run_claims

    which, q = cell.rarity.split("-q")
    df = run_claims(models=cell.model, claims=cell.claim, rarity_which=which, rarity_q=q,
                    seeds=cell.seed, out=out_dir, quick=cell.quick, run_id=run_id,
                    cache_dir=str(cache_dir), **dict(cell.options))
    results = json.loads(Path(df.attrs["results_path"]).read_text(encoding="utf-8"))
    if results["errors"] or df.attrs.get("exit_code", 0) != 0:
        msgs = [f"{e.get('nodeid', '')}: {e.get('reason') or e.get('message')}"
                for e in results["errors"]]
        raise CellError("; ".join(msgs) or f"rarebench run exited {df.attrs.get('exit_code')}")
    return results


def _cell_task(settings: dict, key: str, store_root: str, sweep_id: str,
               cell_fn: Callable | None) -> dict:
    """The Ray task of one cell (module level: workers import it by name)."""
    cell = Cell.from_settings(settings)
    store = SweepStore(store_root)
    if store.done(key):  # another sweep sharing the store finished it meanwhile
        return {"status": "done", "attempt": 0}
    attempt = store.start_attempt(key, sweep_id, cell.label)
    run_id = f"{key[:16]}-{sweep_id}-a{attempt}"
    out_dir = store.root / "runs"
    t0 = time.time()
    try:
        results = (cell_fn or run_cell)(cell, out_dir, run_id, store.root / "cache")
    except BaseException as exc:
        store.end_attempt(key, sweep_id, f"{type(exc).__name__}: {exc}")
        shutil.rmtree(out_dir / run_id, ignore_errors=True)
        raise
    if not results.get("claims"):  # e.g. weights absent: a stated skip, not a result
        reasons = "; ".join(str(s.get("reason")) for s in results.get("skipped", [])) \
            or "no claim result"
        store.end_attempt(key, sweep_id, f"skipped: {reasons}")
        return {"status": "skipped", "error": reasons, "attempt": attempt}
    store.save(key, settings, results, {"sweep_id": sweep_id, "run_dir": f"runs/{run_id}",
                                        "host": socket.gethostname(), "attempt": attempt,
                                        "wall_s": round(time.time() - t0, 3)})
    store.end_attempt(key, sweep_id, None)
    return {"status": "done", "attempt": attempt}


def ensure_ray(address: str | None, num_cpus: int | None):
    """The Ray instance to use: one already initialised (kept), `address` (a cluster), or a
    new local one. True when this call started it (so the caller shuts it down)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    env = {k: v for k, v in os.environ.items() if k in ENV_PASSED or k.startswith("RAREBENCH_")}
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": True}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)
    return ray, True


def error_text(exc: BaseException) -> str:
    """One line for the report: the cell's own exception, not Ray's wrapper traceback."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        text = f"{type(cause).__name__}: {cause}"
    else:
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        text = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
    return " ".join(text.split())[:500]


def run_sweep(spec: SweepSpec, *, address: str | None = None, num_cpus: int | None = None,
              cell_fn: Callable | None = None, progress: bool = True,
              sweep_id: str | None = None) -> SweepOutcome:
    """Run every cell of `spec` not yet in its store; the outcome of every cell."""
    from harness.report.runinfo import new_run_id

    store = SweepStore(spec.store)
    sweep_id = sweep_id or new_run_id()
    outcome = SweepOutcome(sweep_id, spec)
    todo = []
    for cell in expand(spec):
        key = cell_key(cell)
        if store.done(key):
            outcome.cells.append({"cell": cell, "key": key, "status": "done", "reused": True})
        else:
            todo.append((cell, key))
    if not todo:
        return outcome
    ray, started = ensure_ray(address, num_cpus)
    try:
        _submit_and_wait(ray, spec, store, sweep_id, todo, outcome, cell_fn, progress)
    finally:
        if started:
            ray.shutdown()
    return outcome


def _submit_and_wait(ray, spec, store, sweep_id, todo, outcome, cell_fn, progress) -> None:
    from tqdm import tqdm

    gpus = spec.gpus_per_job if ray.cluster_resources().get("GPU", 0) > 0 else 0
    task = ray.remote(_cell_task)
    refs = {}
    for cell, key in todo:
        ref = task.options(num_cpus=spec.cpus_per_job, num_gpus=gpus,
                           max_retries=spec.retries, retry_exceptions=True,
                           name=cell.label[:120]).remote(cell.settings(), key, str(store.root),
                                                         sweep_id, cell_fn)
        refs[ref] = (cell, key)
    bar = tqdm(total=len(outcome.cells) + len(todo), initial=len(outcome.cells), unit="cell",
               desc=f"sweep {spec.name}", disable=not progress, dynamic_ncols=True)
    seen: dict[str, int] = {}
    pending = list(refs)
    postfix = ""
    while pending:
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
        _announce(store, sweep_id, [refs[r] for r in pending], seen, bar)
        for ref in ready:
            cell, key = refs[ref]
            entry = {"cell": cell, "key": key, "reused": False}
            try:
                entry.update(ray.get(ref))
            except Exception as exc:  # the last retry failed, or the worker died each time
                entry.update(status="failed", error=error_text(exc))
            entry["attempts"] = sum(a["event"] == "start"
                                    for a in store.attempts(key, sweep_id))
            if entry["status"] != "done":
                store.record_failure(key, {"sweep": sweep_id, "label": cell.label,
                                           "status": entry["status"], "error": entry["error"],
                                           "attempts": entry["attempts"],
                                           "time": time.time()})
                bar.write(f"{entry['status'].upper()} {cell.label} after {entry['attempts']} "
                          f"attempt(s): {entry['error']}")
            else:
                bar.write(f"done    {cell.label} (attempt {entry['attempts']})")
            outcome.cells.append(entry)
            bar.update(1)
        running = sum(1 for _, k in (refs[r] for r in pending) if store.running(k))
        if f"{len(pending)} left, {running} running" != postfix:
            postfix = f"{len(pending)} left, {running} running"
            bar.set_postfix_str(postfix)
    bar.close()


def _announce(store, sweep_id, cells, seen, bar) -> None:
    """A line when a cell's attempt starts (its own progress lines follow, from Ray)."""
    for cell, key in cells:
        n = sum(a["event"] == "start" for a in store.attempts(key, sweep_id))
        if n > seen.get(key, 0):
            seen[key] = n
            run = store.running(key) or {}
            bar.write(f"start   {cell.label} (attempt {n}, {run.get('host', '?')} "
                      f"pid {run.get('pid', '?')})")
