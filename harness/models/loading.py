"""`load_model`: a registry name (or spec, or local dir) -> a ready ModelFacade.

Every source ends in the same two objects, an HF causal LM and a tokenizer loaded with
`AutoTokenizer.from_pretrained(dir_or_id)` (TransformerBridge reads its `name_or_path`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness.errors import BadInputError, MissingPackageError, MissingWeightsError
from harness.models.facade import ModelFacade, Processing
from harness.models.registry import ModelSpec, availability, resolve


def _local_dir(spec: ModelSpec) -> Path:
    """The checkpoint dir; a fixture's step 0 is rebuilt from its preset (not stored in git)."""
    path = Path(spec.local_path)
    root = path.parent
    if spec.step == 0 and not path.is_dir() and (root / "CHECKPOINTS.json").is_file():
        from harness.train.init import checkpoint_dir

        return checkpoint_dir(root, 0)
    return path


def _tokenizer(source: str | Path, spec: ModelSpec, **kwargs: Any) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(source), **kwargs)
    except (OSError, ValueError) as exc:
        if spec.family != "gpt2":
            raise MissingWeightsError(f"{spec.name}: no tokenizer at {source} ({exc}); "
                                      "save one there with tokenizer.save_pretrained") from None
    from harness.data.tokenizer import gpt2_tokenizer  # GPT-2 BPE is committed in fixtures/

    return gpt2_tokenizer()


def _check_recorded_sha(spec: ModelSpec, path: Path) -> None:
    """A committed fixture's checkpoint must match the sha256 its CHECKPOINTS.json records:
    a bit flip in the weights is an error, not a silently different model."""
    import json

    meta_path = path.parent / "CHECKPOINTS.json"
    if spec.step is None or not meta_path.is_file():
        return
    want = (json.loads(meta_path.read_text()).get("sha256") or {}).get(str(spec.step))
    if not want:
        return
    from harness.train.init import weights_sha256

    try:
        got = weights_sha256(path)
    except Exception as exc:  # safetensors cannot even parse it
        raise BadInputError(f"{spec.name}@step{spec.step}: unreadable weights in {path} "
                            f"({str(exc).splitlines()[0][:200]}); restore them from git") from None
    if got != want:
        raise BadInputError(f"{spec.name}@step{spec.step}: weights in {path} do not match the "
                            f"sha256 recorded in {meta_path} (corrupted or edited); restore "
                            "them from git")


def _check_finite(model: Any, name: str) -> None:
    """NaN or infinite weights make every number downstream meaningless: refuse them."""
    for pname, p in model.named_parameters():
        if not torch.isfinite(p).all():
            bad = int((~torch.isfinite(p)).sum())
            raise BadInputError(f"{name}: {bad} NaN/Inf values in weight {pname}; the model "
                                "is broken (check the checkpoint)")


def _load_hf(spec: ModelSpec, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM

    if spec.gguf_package or spec.local_gguf:
        from harness.models.gguf import assemble_parts, gguf_path, load_gguf

        if spec.gguf_parts:
            path = assemble_parts(spec.gguf_package, spec.gguf_parts, spec.gguf_file)
        elif spec.gguf_package:
            path = gguf_path(spec.gguf_package, spec.gguf_file)
        else:
            path = Path(spec.local_path)
        if path is None:
            raise MissingPackageError(availability(spec)[1])
        model, tokenizer, _ = load_gguf(spec.gguf_package, path, dtype)
        return model, tokenizer
    if spec.local_path:
        path = _local_dir(spec)
        _check_recorded_sha(spec, path)
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except (OSError, ValueError, RuntimeError) as exc:  # truncated or corrupt weights
            raise BadInputError(f"{spec.name}: cannot load the weights in {path} "
                                f"({str(exc).splitlines()[0][:200]})") from None
        from harness.train.init import checkpoint_tokenizer_dir

        # Checkpoints of a corpus-BPE model carry no tokenizer: they share the one named in
        # the model dir's CHECKPOINTS.json (step 0 is rebuilt elsewhere, so ask the dir).
        shared = checkpoint_tokenizer_dir(Path(spec.local_path).parent)
        return model, _tokenizer(shared or path, spec)
    model = AutoModelForCausalLM.from_pretrained(spec.hf_id, revision=spec.revision, dtype=dtype)
    return model, _tokenizer(spec.hf_id, spec, revision=spec.revision)


def load_model(name_or_spec: str | ModelSpec, device: str = "cpu",
               dtype: torch.dtype | None = torch.float32, step: int | None = None,
               processing: Processing = "raw") -> ModelFacade:
    """Load weights (HF cache / local dir / GGUF package) and wrap them in a ModelFacade.

    `dtype=None` uses the spec's dtype (the original work's: fp16 above 410M parameters).
    """
    if isinstance(name_or_spec, ModelSpec):
        if step is not None and step != name_or_spec.step:
            raise BadInputError(f"spec {name_or_spec} is step {name_or_spec.step}, not {step}; "
                                "resolve(name, step) first")
        spec = name_or_spec
    else:
        spec = resolve(name_or_spec, step)
    ok, reason = availability(spec)
    if not ok:
        error = MissingPackageError if spec.gguf_package else MissingWeightsError
        raise error(f"cannot load {spec.name}: {reason}")
    dtype = getattr(torch, spec.dtype) if dtype is None else dtype
    model, tokenizer = _load_hf(spec, dtype)
    _check_finite(model, spec.name)
    return ModelFacade.from_hf(model, tokenizer, name=spec.name, revision=spec.revision,
                               step=spec.step, processing=processing, device=device)
