"""`rarebench train`: train a preset on a corpus; re-running the same command resumes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.errors import BadInputError

CORPUS_FORMAT = ('JSON lines, one {"text": "..."} object per line (the docs.jsonl written by '
                 '`rarebench corpus build`)')


def _steps(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise BadInputError(f"--save-steps wants comma-separated integers, got {text!r}") from None


def check_corpus(path: Path) -> Path:
    """The corpus file, if every line is what the trainer reads, so a plain .txt or a CSV is
    refused in one line naming the format instead of a JSONDecodeError after start-up."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # as the trainer splits
    except UnicodeDecodeError:
        raise BadInputError(f"corpus {path} is not UTF-8 text; expected {CORPUS_FORMAT}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
            raise BadInputError(f"corpus {path} line {number} is not a {{\"text\": ...}} "
                                f"object; expected {CORPUS_FORMAT}")
    return path


def register(subparsers: argparse._SubParsersAction) -> None:
    from harness.train.presets import PRESETS

    p = subparsers.add_parser(
        "train", help="train a tiny causal LM (resumes from <out>/resume.pt if present)",
        description=__doc__)
    p.add_argument("--preset", required=True, choices=sorted(PRESETS))
    p.add_argument("--corpus", required=True,
                   help="docs.jsonl (one {\"text\": ...} JSON object per line) or its directory")
    p.add_argument("--out", required=True, help="model directory (step<N>/ checkpoints)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--min-lr-frac", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--save-steps", default="", help="e.g. 50,200,400 (default steps/8,/2,final)")
    p.add_argument("--eval-rows", type=int, default=64)
    p.add_argument("--heldout-mod", type=int, default=50)
    p.add_argument("--heldout-file", default=None, help="shared held-out token file (.npy)")
    p.add_argument("--resume-every", type=int, default=10)
    p.add_argument("--stop-after", type=int, default=None, help="pause at this step")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from harness.train.trainer import TrainConfig, corpus_file, train

    check_corpus(corpus_file(args.corpus))
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(preset=args.preset, corpus=args.corpus, out=args.out, seed=args.seed,
                      steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                      warmup=args.warmup, min_lr_frac=args.min_lr_frac,
                      weight_decay=args.weight_decay, save_steps=_steps(args.save_steps),
                      eval_rows=args.eval_rows, heldout_mod=args.heldout_mod,
                      heldout_file=args.heldout_file, resume_every=args.resume_every,
                      stop_after=args.stop_after, progress=not args.no_progress)
    result = train(cfg)
    print(result)
    if not result.finished:
        print(f"paused at step {result.step}; re-run without --stop-after to resume")
    return 0
