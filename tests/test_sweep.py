"""Sweeps on Ray (issue 18): the spec and its checks, cell keys, the store's done / failed /
running states and resume, then on a local Ray instance: a failing cell retried and reported,
and the CI grid (examples/sweep-tiny.toml) compared cell by cell with a plain sequential
`rarebench run` of the same cells, and its report."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.sweep import cells as cells_mod
from harness.sweep import runner
from harness.sweep.cells import Cell, cell_key, expand
from harness.sweep.spec import load_spec, log_spaced, parse_spec
from harness.sweep.state import SweepStore

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "examples" / "sweep-tiny.toml"
FAMILY = REPO / "examples" / "sweep-gpt2-pythia.toml"
RAY_REASON = ('Ray is not installed: it is the optional `sweep` extra, '
              'pip install -c constraints.txt -e ".[sweep]"')


def _spec(tmp_path, **changes):
    spec = load_spec(TINY)
    return replace(spec, store=tmp_path / "store", out=tmp_path / "report", **changes)


# ------------------------------------------------------------------ the spec

def test_example_specs_expand_to_their_grids():
    tiny = load_spec(TINY)
    assert tiny.models == ("tiny-gpt2@step40", "tiny-gpt2@step320",
                           "tiny-pythia-learned@step0", "tiny-pythia-learned@step2048")
    assert (tiny.seeds, tiny.rarities, tiny.claims) == ((0, 1), ("target-q50",),
                                                        ("dual-regimes",))
    assert len(expand(tiny)) == 8 and tiny.retries == 2
    family = load_spec(FAMILY)
    assert family.models[:4] == ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
    assert [m.split("@step")[1] for m in family.models[4:]] == [
        "0", "2", "16", "64", "256", "1000", "3000", "10000", "38000", "143000"]
    from harness.api import list_claims

    assert family.claims == tuple(list_claims(as_frame=False))  # claims = "all"
    assert len(expand(family)) == 14 * 3 * 2 * len(family.claims)


def test_log_spaced_steps():
    from harness.models.registry import pythia_steps

    assert log_spaced(pythia_steps(), 10) == [0, 2, 16, 64, 256, 1000, 3000, 10000, 38000,
                                              143000]
    assert log_spaced((0, 40, 120, 320), 2) == [0, 320]
    assert log_spaced((0, 40, 120, 320), 9) == [0, 40, 120, 320]  # no more than it has
    spec = parse_spec({"models": [{"name": "tiny-pythia-learned", "steps": "pythia-log:3"},
                                  "tiny-gpt2@step120", {"name": "tiny-pythia", "steps": "all"}]})
    assert spec.models == ("tiny-pythia-learned@step0", "tiny-pythia-learned@step64",
                           "tiny-pythia-learned@step2048", "tiny-gpt2@step120",
                           "tiny-pythia@step0", "tiny-pythia@step40", "tiny-pythia@step120",
                           "tiny-pythia@step320")


BAD_SPECS = [
    ('models = ["tiny-gpt2"]\ncolour = "red"\n', "unknown key(s) colour"),
    ('models = ["no-such-model"]\n', "unknown model 'no-such-model'"),
    ('models = [{name = "tiny-gpt2", steps = [40, 50]}]\n', "no checkpoint step 50"),
    ('models = [{name = "tiny-gpt2", steps = "pythia-log:x"}]\n', "pythia-log:N"),
    ('models = ["tiny-gpt2@step40", "tiny-gpt2@step40"]\n', "given twice"),
    ('models = ["gpt2@step40"]\n', "has no training checkpoints"),
    ('models = ["tiny-gpt2"]\nrarity = ["rare"]\n', "rarity 'rare'"),
    ('models = ["tiny-gpt2"]\nclaims = ["no-such-claim"]\n', "unknown claim(s) no-such-claim"),
    ('models = ["tiny-gpt2"]\nseeds = [0, 0]\n', "a seed is given twice"),
    ('models = ["tiny-gpt2"]\nseeds = [-1]\n', "integers >= 0"),
    ('models = ["tiny-gpt2"]\nretries = -1\n', "retries"),
    ('models = ["tiny-gpt2"]\n[options]\ndevice = "cuda"\n', "unknown option(s) device"),
    ('seeds = [0]\n', "no models"),
    ('models = [tiny-gpt2\n', "not valid TOML"),
]


@pytest.mark.parametrize("text, needle", BAD_SPECS)
def test_bad_spec_is_one_line_exit_2(text, needle, tmp_path, capsys):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    for argv in (["sweep", str(path)], ["sweep", str(path), "--status"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("rarebench: error: ") and len(err.splitlines()) == 1, err
        assert needle in err, err
    assert main(["sweep", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------ keys

def test_cell_key_is_settings_plus_code(monkeypatch):
    cell = Cell("tiny-gpt2@step40", 0, "target-q50", "dual-regimes", True,
                (("eval_rows", 8), ("power_reps", 2)))
    key = cell_key(cell)
    assert len(key) == 64 and key == cell_key(Cell.from_settings(cell.settings()))
    # the order a spec lists its options or grid in does not matter
    a = parse_spec({"models": ["tiny-gpt2@step40", "tiny-gpt2@step320"], "seeds": [0, 1],
                    "options": {"eval_rows": 8, "power_reps": 2}})
    b = parse_spec({"models": ["tiny-gpt2@step320", "tiny-gpt2@step40"], "seeds": [1, 0],
                    "options": {"power_reps": 2, "eval_rows": 8}})
    assert {cell_key(c) for c in expand(a)} == {cell_key(c) for c in expand(b)}
    assert len({cell_key(c) for c in expand(a)}) == len(expand(a)) == 2 * 2 * len(a.claims)
    others = [replace(cell, seed=1), replace(cell, rarity="target-q15"),
              replace(cell, model="tiny-gpt2@step320"), replace(cell, quick=False),
              replace(cell, claim="no-routing"), replace(cell, options=(("eval_rows", 8),))]
    assert len({key, *map(cell_key, others)}) == 1 + len(others)
    # a change to the claims' code (not covered by the engine digest) changes every key
    monkeypatch.setattr(cells_mod, "claims_digest", lambda: "0" * 64)
    assert cell_key(cell) != key


# ------------------------------------------------------------------ store, status, resume

def _fake_results(cell: Cell, effect: float = 0.25, p: float = 0.04) -> dict:
    which, q = cell.rarity.split("-q")
    return {"claims": [{
        "nodeid": f"claims/test_x.py::test[{cell.label}]", "claim": cell.claim,
        "model": cell.model, "seed": cell.seed,
        "settings": {"rarity": {"which": which, "q": float(q)}},
        "result": {"verdict": "supported", "effect": effect, "ci_low": effect - 0.1,
                   "ci_high": effect + 0.1, "p_value": p, "statistic": effect,
                   "details": {}}, "figures": {}}], "skipped": [], "errors": []}


def test_rerun_skips_finished_cells_by_key(tmp_path, monkeypatch, capsys):
    spec = _spec(tmp_path)
    store = SweepStore(spec.store)
    cells = expand(spec)
    for cell in cells[:5]:
        store.save(cell_key(cell), cell.settings(), _fake_results(cell), {"run_dir": "runs/x"})
    store.start_attempt(cell_key(cells[5]), "s1", cells[5].label)   # its job still runs
    store.record_failure(cell_key(cells[6]), {"error": "RuntimeError: boom", "attempts": 3})

    def no_ray(*_a, **_k):
        raise AssertionError("Ray started")

    monkeypatch.setattr(runner, "ensure_ray", no_ray)
    done = replace(spec, models=spec.models[:2], seeds=(0, 1))  # = the first 4 cells
    assert [c for c in expand(done)] == cells[:4]
    out = runner.run_sweep(done, progress=False)
    assert [c["status"] for c in out.cells] == ["done"] * 4 and all(c["reused"]
                                                                     for c in out.cells)
    # file names play no part: the cells' report folders can go
    (spec.store / "runs").mkdir(parents=True, exist_ok=True)
    assert runner.run_sweep(done, progress=False).count("done") == 4
    # anything that changes the key (here an option) makes the cells run again
    with pytest.raises(AssertionError, match="Ray started"):
        runner.run_sweep(replace(done, options={**done.options, "power_reps": 3}),
                         progress=False)
    # --status: one line of counts, one line per cell not done
    assert main(["sweep", str(TINY), "--status", "--store", str(spec.store)]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith("sweep tiny: 8 cells: 5 done, 1 running, 1 failed, 1 pending")
    assert any(cells[5].label in ln and ln.split()[0] == "running" for ln in text)
    assert any(cells[6].label in ln and "after 3 attempt(s): RuntimeError: boom" in ln
               for ln in text)
    assert any(cells[7].label in ln and ln.split()[0] == "pending" for ln in text)


def test_a_dead_jobs_running_mark_reads_as_stale(tmp_path):
    store = SweepStore(tmp_path)
    key = "a" * 64
    store.start_attempt(key, "s1", "label")
    assert store.status([key]) == {key: "running"}  # this process is alive
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    mark = json.loads((tmp_path / "state" / f"{key}.running.json").read_text())
    mark["pid"] = int(proc.stdout)
    (tmp_path / "state" / f"{key}.running.json").write_text(json.dumps(mark))
    assert store.status([key]) == {key: "stale"}


def _writer(root: str, n: int, tag: int) -> None:
    store = SweepStore(root)
    cell = Cell("tiny-gpt2@step40", 0, "target-q50", "dual-regimes", True)
    for i in range(n):
        store.save("k" * 64, cell.settings(), _fake_results(cell), {"run_dir": "runs/x"})
        store.start_attempt("k" * 64, f"sweep{tag}", cell.label)
        store.end_attempt("k" * 64, f"sweep{tag}", None)


def test_two_sweeps_writing_one_store_do_not_corrupt_it(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), 40, t)) for t in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = SweepStore(tmp_path)
    assert store.results.load("k" * 64)["n_records"] == 1  # checksum verified on load
    assert store.load("k" * 64)["results"]["claims"][0]["result"]["effect"] == 0.25
    events = store.attempts("k" * 64)
    assert len(events) == 2 * 40 * 2 and {e["sweep"] for e in events} == {"sweep0", "sweep1"}
    assert not list(tmp_path.glob("*.tmp"))


def test_without_ray_the_error_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    spec = _spec(tmp_path)
    assert main(["sweep", str(TINY), "--store", str(spec.store), "--out", str(spec.out)]) == 2
    err = capsys.readouterr().err
    assert 'rarebench sweep needs Ray: pip install "rarebench[sweep]"' in err
    assert main(["sweep", str(TINY), "--status", "--store", str(spec.store)]) == 0  # no Ray
    assert "8 cells: 8 pending" in capsys.readouterr().out


# ------------------------------------------------------------------ on Ray

@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason=RAY_REASON)
    _, started = runner.ensure_ray(None, 2)
    yield ray
    if started:
        ray.shutdown()


def _flaky_cell(cell, out_dir, run_id, cache_dir):
    """Seed 0 always raises; seed 1 is killed on its first attempt, raises on its second and
    succeeds on its third. Counts its own calls beside the store."""
    import os as _os
    from pathlib import Path as _Path

    count = _Path(cache_dir).parent / f"calls-seed{cell.seed}"
    with open(count, "a") as fh:
        fh.write("x")
    n = len(count.read_text())
    if cell.seed == 0:
        raise RuntimeError(f"planted failure seed 0 (call {n})")
    if n == 1:
        _os._exit(3)  # the worker dies, as a killed job does
    if n == 2:
        raise RuntimeError("planted transient failure")
    return _fake_results(cell)


def test_failing_cell_is_retried_then_reported(ray_local, tmp_path, capsys, monkeypatch):
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    spec_path = tmp_path / "flaky.toml"
    spec_path.write_text(f'name = "flaky"\nmodels = ["tiny-gpt2@step40"]\nseeds = [0, 1]\n'
                         f'claims = ["dual-regimes"]\nretries = 2\n'
                         f'store = "{tmp_path / "store"}"\nout = "{tmp_path / "report"}"\n')
    real = runner.run_sweep
    outcomes = []

    def flaky_sweep(spec, **kw):
        outcomes.append(real(spec, cell_fn=_flaky_cell, **kw))
        return outcomes[-1]

    monkeypatch.setattr(runner, "run_sweep", flaky_sweep)
    assert main(["sweep", str(spec_path), "--no-progress"]) == 1  # a cell failed
    printed = capsys.readouterr().out
    assert "2 cells, 0 already in the store, 1 run now, 1 not finished" in printed
    assert ("failed: tiny-gpt2@step40 seed0 target-q50 dual-regimes: RuntimeError: planted "
            "failure seed 0 (call 3)") in printed
    by_seed = {c["cell"].seed: c for c in outcomes[0].cells}
    failed, ok = by_seed[0], by_seed[1]
    assert failed["status"] == "failed" and failed["attempts"] == 3  # 1 + retries
    assert ok["status"] == "done" and ok["attempts"] == 3
    assert (tmp_path / "store" / "calls-seed0").read_text() == "xxx"
    store = SweepStore(tmp_path / "store")
    assert store.failure(failed["key"])["attempts"] == 3
    assert [e.get("error") for e in store.attempts(ok["key"]) if e["event"] == "end"] == [
        "RuntimeError: planted transient failure", None]  # the killed attempt never ended
    # reported, not dropped: --status, SWEEP.md and results.csv name it with its error
    assert main(["sweep", str(spec_path), "--status"]) == 0
    status = capsys.readouterr().out
    assert status.startswith("sweep flaky: 2 cells: 1 done, 1 failed")
    assert "after 3 attempt(s): RuntimeError: planted failure seed 0" in status
    table = pd.read_csv(tmp_path / "report" / "results.csv")
    row = table[table.cell_seed == 0].iloc[0]
    assert row.status == "failed" and "planted failure seed 0" in row.error
    assert np.isnan(row.effect)
    assert table[table.cell_seed == 1].iloc[0].verdict == "supported"
    assert "planted failure seed 0" in (tmp_path / "report" / "SWEEP.md").read_text()
    # a rerun retries the failed cell only
    assert main(["sweep", str(spec_path), "--no-progress"]) == 1
    assert (tmp_path / "store" / "calls-seed0").read_text() == "xxxxxx"
    assert (tmp_path / "store" / "calls-seed1").read_text() == "xxx"


def _golden_of(rec: dict) -> dict:
    """The golden rule applied to the sequential run's own numbers: with no noise variant
    the tolerance is its floor, ABS_FLOOR + REL_FLOOR x |value|."""
    from harness.claimset import load_claims
    from harness.goldens import golden_record

    paths = tuple(getattr(load_claims()[rec["claim"]], "PINNED", ()))
    return golden_record(_as_result(rec), paths, {}, {})


def _as_result(rec: dict):
    return SimpleNamespace(**{k: rec["result"].get(k) for k in
                              ("verdict", "statistic", "p_value", "effect", "ci_low",
                               "ci_high")}, details=rec["result"].get("details") or {})


def _case(rec: dict) -> tuple:
    from harness.report.render import _rarity, _variant

    s = rec.get("settings") or {}
    return rec["claim"], rec["model"], rec["seed"], _rarity(s), _variant(s)


@pytest.mark.tiny
def test_sweep_equals_sequential_run_and_reports(ray_local, tmp_path, capsys):
    from harness.goldens import mismatches
    from harness.stats.multiple import bh_fdr

    spec = _spec(tmp_path)
    which, q = spec.rarities[0].split("-q")
    opts = [f"--{k.replace('_', '-')}={v}" for k, v in spec.options.items()]
    # the sequential run works beside the sweep (its one thread would leave a core idle)
    seq_log = tmp_path / "seq.log"
    with seq_log.open("w") as log_fh:
        seq_run = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "run", "--models", ",".join(spec.models),
             "--seeds", "0,1", "--rarity-which", which, "--rarity-q", q, "-k",
             "test_dual_regimes", "--quick", *opts, "--out", str(tmp_path / "seq"),
             "--run-id", "seq", "--cache-dir", str(tmp_path / "seq-cache")],
            cwd=REPO, stdout=log_fh, stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            out = runner.run_sweep(spec, progress=False)
        finally:
            seq_run.wait(timeout=900)
    assert seq_run.returncode == 0, seq_log.read_text()[-2000:]
    assert [c["status"] for c in out.cells] == ["done"] * 8, out.cells
    seq = json.loads((tmp_path / "seq" / "seq" / "results.json").read_text())["claims"]
    assert len(seq) == 8
    want = {_case(r): r for r in seq}
    store = SweepStore(spec.store)
    got = [r for c in out.cells for r in store.load(c["key"])["results"]["claims"]]
    assert sorted(map(_case, got)) == sorted(want)  # every cell, each once
    for rec in got:
        golden = _golden_of(want[_case(rec)])
        assert mismatches(_as_result(rec), golden) == [], _case(rec)
    assert any(r["result"]["verdict"] == "inconclusive" for r in got)

    # the command on the finished grid: all 8 cells reused (no Ray job), one report with
    # per-claim tables, forest plots, sweep-wide BH and a table pandas reads
    assert main(["sweep", str(TINY), "--store", str(spec.store), "--out", str(spec.out),
                 "--no-progress"]) == 0
    assert "8 cells, 8 already in the store, 0 run now, 0 not finished" in \
        capsys.readouterr().out
    paths = {"csv": spec.out / "results.csv", "sweep": spec.out / "SWEEP.md",
             "report": spec.out / "REPORT.md"}
    table = pd.read_csv(paths["csv"])
    assert len(table) == 8 and set(table.status) == {"done"}
    assert sorted(table.step.unique()) == [0, 40, 320, 2048]
    _, qv = bh_fdr(table.p.to_numpy())
    np.testing.assert_allclose(table.q.to_numpy(), qv)
    merged = {(r["model"], r["seed"]): r for r in got}
    for row in table.itertuples():
        assert row.effect == pytest.approx(merged[(row.model, row.seed)]["result"]["effect"],
                                           abs=0)
    sweep_md = Path(paths["sweep"]).read_text()
    assert "across the whole sweep, one family per claim" in sweep_md
    assert "dual-regimes 8" in sweep_md
    report = Path(paths["report"]).read_text()
    assert "## Claim 1" in report and report.count("tiny-pythia-learned@step2048") >= 2
    for name in ("forest_models.png", "forest_checkpoints.png", "SWEEP.html", "REPORT.html"):
        assert (spec.out / name).stat().st_size > 1000, name
