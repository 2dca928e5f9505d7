"""`rarebench emergence`: every claim across one model's training checkpoints, with a trend
test of each effect against log step (harness.emergence)."""

from __future__ import annotations

import argparse

from harness.emergence import DEFAULT_POWER_REPS, DEFAULT_RARITY

EPILOG = """\
examples:
  rarebench emergence --model tiny-pythia --claims dual-regimes --quick
  rarebench emergence --model pythia-70m-deduped --steps 0,1,4,16,64,256,512,1000,8000,143000

Writes OUT/RUN-ID/ (the claims' REPORT.md and results.json over all checkpoints) and
OUT/RUN-ID/emergence/ (EMERGENCE.md, REPORT.html, emergence.json, emergence.png). The
bootstrap is paired across checkpoints (RAREBENCH_SHARED_BOOTSTRAP is set for the run):
replicate b resamples the same evaluation rows at every step."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "emergence", help="claims across training checkpoints, with a trend test over steps",
        description="Run the claims at every checkpoint of one model (MODEL@stepN) on the same "
                    "evaluation rows and test whether each claim's effect trends with log "
                    "training step (Spearman rho with a paired row-bootstrap CI); writes a "
                    "table per checkpoint, the trend per claim and a figure.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="a model with checkpoints: tiny-pythia-learned, tiny-gpt2, tiny-pythia, "
                        "pythia-*-deduped "
                        "(hub steps in the HF cache), or a local dir with CHECKPOINTS.json")
    p.add_argument("--steps", default=None,
                   help="comma list of training steps (default: every checkpoint the model "
                        "lists; required for Pythia's hub checkpoints); at least 3")
    p.add_argument("--claims", default=None,
                   help="comma list of claim keys or numbers (default: all)")
    p.add_argument("--rarity", default=DEFAULT_RARITY,
                   help=f"one rarity setting, WHICH-qQ (default {DEFAULT_RARITY})")
    p.add_argument("--out", default="reports", help="report directory (default reports)")
    p.add_argument("--run-id", default=None, help="run id (default: timestamp + random)")
    p.add_argument("--quick", action="store_true",
                   help="fewer permutations and bootstrap draws per checkpoint")
    p.add_argument("--power-reps", type=int, default=DEFAULT_POWER_REPS,
                   help="own-data power replicates per claim and checkpoint (default "
                        f"{DEFAULT_POWER_REPS}, as rarebench run; reported, not used by the trend)")
    p.add_argument("--seed", type=int, default=0, help="row-sampling seed (default 0)")
    p.add_argument("--bootstrap-seed", type=int, default=0,
                   help="seed of the shared (paired) bootstrap (default 0)")
    p.add_argument("--eval-rows", default=None, help="evaluation rows per checkpoint")
    p.add_argument("--common-budget", default=None,
                   help="sampled common positions per checkpoint")
    p.add_argument("--routing-modes", default=None,
                   help="claim 3 head-ablation modes, comma list of bos, zero, mean")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--cache-dir", default=None, help="result store directory")
    p.set_defaults(func=emergence_command)


def emergence_command(args: argparse.Namespace) -> int:
    from harness.emergence import run_emergence

    em = run_emergence(args.model, steps=args.steps, claims=args.claims, rarity=args.rarity,
                       quick=args.quick, power_reps=args.power_reps, out=args.out,
                       seed=args.seed, bootstrap_seed=args.bootstrap_seed, run_id=args.run_id,
                       eval_rows=args.eval_rows, common_budget=args.common_budget,
                       routing_modes=args.routing_modes, device=args.device,
                       cache_dir=args.cache_dir)
    for s in em["series"]:
        print(f"{s['claim']}{' ' + s['variant'] if s['variant'] else ''}: {s['trend_text']}")
    print(f"emergence (html): {em['paths']['report_html']}")
    print(f"emergence: {em['paths']['markdown']}")
    return em["exit_code"]
