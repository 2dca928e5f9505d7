"""`rarebench sweep SPEC.toml`: a grid of models x checkpoints x seeds x rarity x claims on
Ray, resumable by cell key, with one report (harness.sweep)."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  rarebench sweep examples/sweep-tiny.toml              # a local Ray instance
  rarebench sweep examples/sweep-gpt2-pythia.toml --address auto   # a running cluster
  rarebench sweep examples/sweep-tiny.toml --status     # done / running / failed

A rerun skips every cell already in the store (by key: settings + code version) and retries
the failed ones. Needs Ray: pip install "rarebench[sweep]".

Exit codes: 0 every cell finished; 1 a cell failed after its retries (its error is in the
sweep report and --status); 2 bad input (the spec)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep", help="a grid of models, checkpoints, seeds, rarity and claims on Ray",
        description="Run every cell of a sweep spec (TOML) as one Ray job (one GPU per job "
                    "where the cluster has GPUs, else CPU), store each cell's results under "
                    "a key of its settings and code version, and write one report: the "
                    "claims report (BH-FDR across the whole sweep per claim), forest plots "
                    "across models and checkpoints, and results.csv.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="the sweep spec, a TOML file (see examples/sweep-tiny.toml)")
    p.add_argument("--status", action="store_true",
                   help="say which cells are done, running, failed or pending; run nothing")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (auto, ray://HOST:10001, HOST:6379); default: "
                        "a new local Ray instance")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--store", default=None, help="result store (default: the spec's store)")
    p.add_argument("--out", default=None, help="report directory (default: the spec's out)")
    p.add_argument("--retries", type=int, default=None,
                   help="retries of a failed or killed job (default: the spec's, else 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=sweep_command)


def _spec(args: argparse.Namespace):
    from dataclasses import replace
    from pathlib import Path

    from harness.errors import BadInputError
    from harness.sweep.spec import load_spec

    spec = load_spec(args.spec)
    if args.retries is not None and args.retries < 0:
        raise BadInputError(f"--retries {args.retries}: use an integer >= 0")
    return replace(spec, store=Path(args.store or spec.store), out=Path(args.out or spec.out),
                   retries=spec.retries if args.retries is None else args.retries)


def sweep_command(args: argparse.Namespace) -> int:
    spec = _spec(args)
    if args.status:
        print(status_text(spec))
        return 0
    from harness.sweep.report import write_report
    from harness.sweep.runner import run_sweep

    outcome = run_sweep(spec, address=args.address, num_cpus=args.num_cpus,
                        progress=not args.no_progress)
    paths = write_report(spec)
    reused = sum(bool(c.get("reused")) for c in outcome.cells)
    failed = [c for c in outcome.cells if c["status"] != "done"]
    print(f"sweep {spec.name}: {len(outcome.cells)} cells, {reused} already in the store, "
          f"{outcome.count('done') - reused} run now, {len(failed)} not finished")
    for c in failed:
        print(f"  {c['status']}: {c['cell'].label}: {c.get('error')}")
    print(f"sweep report (html): {paths['sweep_html']}")
    print(f"sweep report: {paths['sweep']}")
    print(f"results table: {paths['csv']}")
    return 1 if failed else 0


def status_text(spec) -> str:
    """One line per state count, then one line per cell that is not done."""
    from harness.sweep.cells import cell_key, expand
    from harness.sweep.state import SweepStore

    store = SweepStore(spec.store)
    cells = [(c, cell_key(c)) for c in expand(spec)]
    state = store.status([k for _, k in cells])
    order = ("done", "running", "stale", "failed", "pending")
    lines = [f"sweep {spec.name}: {len(cells)} cells: " + ", ".join(
        f"{sum(s == o for s in state.values())} {o}" for o in order
        if any(s == o for s in state.values())) + f" (store {store.root})"]
    for cell, key in cells:
        s = state[key]
        if s == "done":
            continue
        if s in ("running", "stale"):
            run = store.running(key) or {}
            note = f"{run.get('host')} pid {run.get('pid')}" + (
                " (its job died; a rerun retries it)" if s == "stale" else "")
        elif s == "failed":
            f = store.failure(key) or {}
            note = f"after {f.get('attempts')} attempt(s): {f.get('error')}"
        else:
            note = ""
        lines.append(f"  {s:8s} {cell.label}" + (f": {note}" if note else ""))
    return "\n".join(lines)
