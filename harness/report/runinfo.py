"""Run identity and manifest: what a reader needs to reproduce a report (versions, commit,
hardware). Collected once per run, at the edges; nothing here affects results."""

from __future__ import annotations

import platform
import secrets
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from harness.errors import BadInputError

# Distributions whose versions change numbers in the report.
PACKAGES = ("torch", "transformers", "transformer-lens", "numpy", "scipy", "statsmodels",
            "networkx", "leidenalg", "igraph", "matplotlib")


RARITY_WHICH = ("target", "current")

# Measured seconds of a `rarebench run` with its defaults on 2 shared CPU cores (README): the
# progress lines' prior for a (model, claim) case or a model preparation not yet seen in a
# run. Only their ratios matter: ClaimProgress scales them by how fast the run has been so
# far. A claim-3 case includes the head ablation of its mode.
CASE_SECONDS: dict[tuple[str, str], float] = {
    ("tiny-gpt2", "dual-regimes"): 12.0, ("tiny-pythia", "dual-regimes"): 20.0,
    ("smollm2-135m", "dual-regimes"): 9.0, ("tiny-pythia-learned", "dual-regimes"): 11.0,
    ("tiny-gpt2", "no-clustering"): 24.0, ("tiny-pythia", "no-clustering"): 22.0,
    ("smollm2-135m", "no-clustering"): 140.0, ("tiny-pythia-learned", "no-clustering"): 6.0,
    ("tiny-gpt2", "no-routing"): 85.0, ("tiny-pythia", "no-routing"): 85.0,
    ("smollm2-135m", "no-routing"): 280.0, ("tiny-pythia-learned", "no-routing"): 16.0,
    ("tiny-gpt2", "coordination"): 7.5, ("tiny-pythia", "coordination"): 7.0,
    ("smollm2-135m", "coordination"): 57.0, ("tiny-pythia-learned", "coordination"): 3.4,
}
PREPARE_SECONDS: dict[str, float] = {"tiny-gpt2": 273.0, "tiny-pythia": 223.0,
                                     "tiny-pythia-learned": 33.0, "smollm2-135m": 890.0}


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id() -> str:
    """UTC timestamp + 6 hex chars: sorts by time, unique across parallel runs."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision(repo: Path) -> dict[str, str | bool | None]:
    """HEAD sha and whether the work tree had uncommitted changes (None outside a checkout)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                                 text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if sha else None
    return {"sha": sha, "dirty": None if status is None else bool(status)}


def device_info(requested: str) -> dict[str, str | None]:
    """Resolve 'auto' only if torch is already imported (a report must not pay torch's import)."""
    torch = sys.modules.get("torch")
    resolved = requested
    name = None
    if torch is not None:
        cuda = torch.cuda.is_available()
        if requested == "auto":
            resolved = "cuda" if cuda else "cpu"
        if resolved.startswith("cuda") and cuda:
            name = torch.cuda.get_device_name(torch.device(resolved))
    return {"requested": requested, "resolved": resolved, "name": name}


def collect_manifest(repo: Path, device: str) -> dict:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "git": git_revision(repo),
        "device": device_info(device),
    }


def parse_rarity_which(value: str) -> list[str]:
    """Comma list of target, current; 'both' is target,current (what help texts offer)."""
    which = [w for v in _split_csv(value) for w in (RARITY_WHICH if v == "both" else (v,))]
    if not which or any(w not in RARITY_WHICH for w in which):
        raise BadInputError(f"rarity 'which' takes a comma list of {', '.join(RARITY_WHICH)} "
                            f"(or both), got {value!r}")
    return list(dict.fromkeys(which))


def parse_rarity_q(value: str) -> list[float]:
    try:
        qs = [float(q) for q in _split_csv(value)]
    except ValueError:
        qs = []
    if not qs or not all(0 < q < 100 for q in qs):
        raise BadInputError(f"rarity q takes a comma list of percentiles in (0, 100), e.g. "
                            f"15,50; got {value!r}")
    return qs


def _split_csv(value: str) -> list[str]:
    return [v.strip() for v in str(value).split(",") if v.strip()]
