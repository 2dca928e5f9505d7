"""Where evaluation/training text comes from: one iterator of plain-text documents for every
kind of source, so the pipeline does not care whether text is committed, local or remote."""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from harness.data.tokenizer import fixtures_dir
from harness.errors import BadInputError, MissingPackageError

C4_DATASET = "stas/c4-en-10k"
C4_DOCS = 500  # the original work used the first 500 documents


def iter_documents(source: str, limit: int | None = None) -> Iterator[str]:
    """Documents of `source`: 'fixtures' (committed sample), 'c4' (first 500 docs of
    stas/c4-en-10k), 'corpus:<dir>' or a path: a .txt file (one document), a .jsonl of
    {"text": ...}, a builder output directory (docs.jsonl) or a directory of .txt files."""
    return islice(_documents(source), limit)


def _documents(source: str) -> Iterator[str]:
    if source == "fixtures":
        sample = fixtures_dir() / "corpus" / "sample.jsonl"
        if not sample.is_file():
            raise BadInputError(f"committed corpus sample {sample} is missing; restore "
                                "fixtures/corpus from the repository")
        return _jsonl(sample)
    if source == "c4":
        return _c4()
    path = Path(source.removeprefix("corpus:")).expanduser()
    if path.is_dir():
        if (path / "docs.jsonl").is_file():
            return _jsonl(path / "docs.jsonl")
        txts = sorted(path.rglob("*.txt"))
        if not txts:
            raise BadInputError(f"{path} holds neither docs.jsonl nor .txt files")
        return (t.read_text("utf-8", "replace") for t in txts)
    if path.is_file():
        if path.suffix == ".jsonl":
            return _jsonl(path)
        return iter([path.read_text("utf-8", "replace")])
    raise BadInputError(f"unknown text source {source!r}: use 'fixtures', 'c4', 'corpus:<dir>', "
                        "or a path to a .txt / .jsonl file or a directory "
                        "(build one with `rarebench corpus build --out DIR`)")


def _jsonl(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (ValueError, KeyError, TypeError) as exc:
                raise BadInputError(f"{path}:{n}: expected a JSON object with a 'text' field") from exc
            if text:
                yield text


def _c4() -> Iterator[str]:
    try:
        import datasets
    except ImportError as exc:
        raise MissingPackageError("the 'c4' source needs the `datasets` package "
                                  "(pip install datasets), or use 'fixtures' / a local corpus") from exc
    try:
        ds = datasets.load_dataset(C4_DATASET, split="train")
    except Exception as exc:  # offline hub, missing cache: many exception types
        raise MissingPackageError(
            f"could not load {C4_DATASET} ({type(exc).__name__}: {str(exc)[:200]}); it needs the "
            "Hugging Face hub or a local datasets cache (unset HF_HUB_OFFLINE); offline, use "
            "'fixtures' or `rarebench corpus build`") from exc
    return (row["text"] for row in ds.select(range(min(C4_DOCS, len(ds)))))
