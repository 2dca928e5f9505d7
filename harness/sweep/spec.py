"""The sweep file: a TOML grid, checked in full before anything runs.

Why a file: the cells of a sweep must be the same on a rerun (resume), under `--status` and
on every machine of a cluster; the file is their one statement. Every problem is one
BadInputError line (exit 2). Format (examples/sweep-tiny.toml):

    name = "tiny"                       # report folder name
    seeds = [0, 1]                      # row-sampling seeds
    rarity = ["target-q50"]             # WHICH-qQ settings
    claims = ["dual-regimes"]           # claim keys or numbers, or "all"
    models = ["tiny-gpt2@step40", {name = "tiny-pythia", steps = [40, 320]},
              {name = "pythia-1b-deduped", steps = "pythia-log:10"}]
    [options]                           # `rarebench run` options for every cell
    eval_rows = 8
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import BadInputError

LOG_STEPS_DEFAULT = 10
# `rarebench run` options a cell may set (harness.api.run_argv names); device, cache and run
# id belong to the runner, the claim to the grid.
RUN_OPTIONS = ("groups", "eval_rows", "common_budget", "routing_layers", "routing_rows",
               "routing_modes", "routing_scope", "power_reps", "rarity_ties", "mu_over")
TOP_KEYS = {"name", "seeds", "rarity", "claims", "models", "options", "quick", "retries",
            "store", "out", "cpus_per_job", "gpus_per_job"}


@dataclass(frozen=True)
class SweepSpec:
    name: str
    models: tuple[str, ...]          # expanded: 'name' or 'name@stepN'
    seeds: tuple[int, ...]
    rarities: tuple[str, ...]        # canonical 'target-q50'
    claims: tuple[str, ...]          # claim keys
    options: dict[str, Any] = field(default_factory=dict)
    quick: bool = False
    retries: int = 2
    store: Path = Path("reports/sweep-store")
    out: Path = Path("reports/sweep")
    cpus_per_job: float = 1.0
    gpus_per_job: float = 1.0        # used only where the cluster has GPUs
    source: str = ""


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep file (module docstring)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"sweep spec {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"sweep spec {path} is not valid TOML ({exc})") from None
    return parse_spec(data, source=str(path))


def parse_spec(data: dict[str, Any], source: str = "sweep.toml") -> SweepSpec:
    where = f"sweep spec {source}"
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise BadInputError(f"{where}: unknown key(s) {', '.join(unknown)}; known: "
                            f"{', '.join(sorted(TOP_KEYS))}")
    name = str(data.get("name") or Path(source).stem or "sweep")
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise BadInputError(f"{where}: name {name!r}: use letters, digits, . _ -")
    models = _models(data.get("models"), where)
    seeds = _seeds(data.get("seeds", [0]), where)
    rarities = _rarities(data.get("rarity", ["target-q50"]), where)
    claims = _claims(data.get("claims", "all"), where)
    options = _options(data.get("options", {}), where)
    retries = data.get("retries", 2)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise BadInputError(f"{where}: retries = {retries!r}: use an integer >= 0")
    cpus, gpus = (_positive(data.get(k, 1), k, where) for k in ("cpus_per_job", "gpus_per_job"))
    return SweepSpec(name=name, models=models, seeds=seeds, rarities=rarities, claims=claims,
                     options=options, quick=bool(data.get("quick", False)), retries=retries,
                     store=Path(data.get("store", "reports/sweep-store")),
                     out=Path(data.get("out", f"reports/sweep-{name}")),
                     cpus_per_job=cpus, gpus_per_job=gpus, source=source)


def _list(value: Any, key: str, where: str) -> list:
    if isinstance(value, (str, int, dict)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise BadInputError(f"{where}: {key} must be a non-empty list")
    return value


def _models(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        raise BadInputError(f"{where}: no models; add models = [\"tiny-gpt2\", ...]")
    out: list[str] = []
    for item in _list(value, "models", where):
        if isinstance(item, str):
            out += [_checked_model(item.strip(), None, where)]
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            extra = sorted(set(item) - {"name", "steps"})
            if extra:
                raise BadInputError(f"{where}: model {item['name']!r}: unknown key(s) "
                                    f"{', '.join(extra)} (name, steps)")
            if "steps" not in item:
                out.append(_checked_model(item["name"], None, where))
                continue
            for step in expand_steps(item["name"], item["steps"], where):
                out.append(_checked_model(item["name"], step, where))
        else:
            raise BadInputError(f"{where}: models entry {item!r}: give a name ('gpt2', "
                                "'pythia-1b-deduped@step1000') or {name = ..., steps = ...}")
    dupes = sorted({m for m in out if out.count(m) > 1})
    if dupes:
        raise BadInputError(f"{where}: model(s) given twice: {', '.join(dupes)}")
    return tuple(out)


def _checked_model(name: str, step: int | None, where: str) -> str:
    from harness.models.registry import parse_name, resolve

    try:
        base, at = parse_name(name)
        if at is not None and step is not None:
            raise BadInputError(f"{name!r} has @step and steps; give one")
        resolve(base, step=at if step is None else step)
    except BadInputError as exc:
        raise BadInputError(f"{where}: {exc}") from None
    return name if step is None else f"{name}@step{step}"


def valid_steps(model: str) -> tuple[int, ...]:
    """The checkpoints a model has (CHECKPOINTS.json, or Pythia's 154 hub steps)."""
    from harness.emergence import listed_steps
    from harness.models.registry import pythia_steps

    listed, _ = listed_steps(model)
    return tuple(listed) if listed is not None else pythia_steps()


def log_spaced(valid: tuple[int, ...], n: int) -> list[int]:
    """n distinct checkpoints spread evenly in log(1 + step) from the first to the last (the
    nearest unused one to each target): 'pythia-log:10' on Pythia is 0, 2, 16, 64, 256,
    1000, 3000, 10000, 38000, 143000."""
    valid = sorted(valid)
    n = min(n, len(valid))
    lo, hi = math.log1p(valid[0]), math.log1p(valid[-1])
    chosen: list[int] = []
    for i in range(n):
        target = lo + (hi - lo) * i / max(n - 1, 1)
        best = min((s for s in valid if s not in chosen),
                   key=lambda s: (abs(math.log1p(s) - target), s))
        chosen.append(best)
    return sorted(chosen)


def expand_steps(model: str, steps: Any, where: str) -> list[int]:
    """[0, 40] / '0,40' / 'all' / 'pythia-log' / 'pythia-log:N' -> checked sorted steps."""
    from harness.emergence import parse_steps

    try:
        valid = valid_steps(model)
        if isinstance(steps, str) and steps.strip() == "all":
            return list(valid)
        if isinstance(steps, str) and steps.strip().startswith("pythia-log"):
            _, _, n = steps.strip().partition(":")
            if n and not (n.isdigit() and int(n) >= 1):
                raise BadInputError(f"steps = {steps!r}: write pythia-log or pythia-log:N")
            return log_spaced(valid, int(n) if n else LOG_STEPS_DEFAULT)
        chosen = parse_steps(steps if isinstance(steps, (str, list)) else str(steps))
        bad = [s for s in chosen if s not in valid]
        if bad:
            raise BadInputError(f"{model} has no checkpoint step {', '.join(map(str, bad))}")
        return chosen
    except BadInputError as exc:
        raise BadInputError(f"{where}: model {model!r}: {exc}") from None


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    seeds = _list(value, "seeds", where)
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise BadInputError(f"{where}: seeds = {value!r}: use integers >= 0")
    if len(set(seeds)) < len(seeds):
        raise BadInputError(f"{where}: seeds = {value!r}: a seed is given twice")
    return tuple(seeds)


def _rarities(value: Any, where: str) -> tuple[str, ...]:
    from harness.emergence import parse_rarity

    out = []
    for text in _list(value, "rarity", where):
        try:
            which, q = parse_rarity(str(text))
        except BadInputError as exc:
            raise BadInputError(f"{where}: rarity {exc.args[0].removeprefix('--rarity ')}") \
                from None
        out.append(f"{which}-q{q:g}")
    if len(set(out)) < len(out):
        raise BadInputError(f"{where}: rarity = {value!r}: a setting is given twice")
    return tuple(out)


def _claims(value: Any, where: str) -> tuple[str, ...]:
    from harness.api import list_claims
    from harness.report.schema import claim_key

    known = list(list_claims(as_frame=False))
    if value == "all":
        return tuple(known)
    names = [str(c).strip() for c in _list(value, "claims", where)]
    keys = [claim_key(n) for n in names]
    bad = [n for n, k in zip(names, keys) if k not in known]
    if bad:
        raise BadInputError(f"{where}: unknown claim(s) {', '.join(bad)}; known: "
                            f"{', '.join(known)}")
    return tuple(dict.fromkeys(keys))


def _options(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadInputError(f"{where}: [options] must be a table")
    bad = sorted(set(value) - set(RUN_OPTIONS))
    if bad:
        raise BadInputError(f"{where}: unknown option(s) {', '.join(bad)}; known: "
                            f"{', '.join(RUN_OPTIONS)}")
    for k, v in value.items():
        if isinstance(v, (dict, float)) or isinstance(v, bool):
            raise BadInputError(f"{where}: option {k} = {v!r}: use an integer or a string")
    return dict(sorted(value.items()))


def _positive(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise BadInputError(f"{where}: {key} = {value!r}: use a positive number")
    return float(value)
