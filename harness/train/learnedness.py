"""Did a trained fixture learn its rare tokens? The precondition every claim applies
(harness.stats.precondition), measured at the CI settings (held-out evaluation rows, target
rarity q = 15 and 50) and written into the model's TRAINING.md, so the record states the
numbers the claims will see:

    python -m harness.train.learnedness tiny-pythia-learned

The section sits between two markers and is replaced on every run; tests compare it with a
fresh computation.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

BEGIN, END = "<!-- learnedness:begin -->", "<!-- learnedness:end -->"


def measure(model: str) -> list[dict]:
    """One row per CI rarity: rare-target loss, ln V, unigram, both margins with 95% CIs."""
    from harness.claimset import ci_prepared, ci_rarities

    prep = ci_prepared(model)
    rows = []
    for rarity in ci_rarities():
        pre = prep.precondition(rarity)
        rows.append({"q": rarity.q, "n_positions": pre.n_positions, "n_rows": pre.n_rows,
                     "rare_loss": pre.rare_loss, "uniform": pre.uniform_loss,
                     "unigram": pre.unigram_loss, "margin_uniform": pre.margin_uniform,
                     "margin_unigram": pre.margin_unigram, "share": pre.share_types_learned,
                     "n_types": pre.n_types, "ok": pre.ok})
    return rows


def _ci(m) -> str:
    return "-" if m is None else f"{m[0]:.3f} [{m[1]:.3f}, {m[2]:.3f}]"


def render(model: str, rows: list[dict]) -> str:
    lines = [BEGIN, "## Rare-token learnedness (the claims' precondition)", "",
             f"Measured by `python -m harness.train.learnedness {model}` on the claims' CI "
             "evaluation set (the committed held-out sample text, never trained on or counted), "
             "target rarity under the exact training counts; CIs are 95% row bootstraps "
             "(harness.stats.precondition).", "",
             "| rarity | rare positions (rows) | rare-target loss | ln V | unigram | "
             "ln V - loss | unigram - loss | rare types beating 1/V | learned |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        share = "-" if r["share"] is None else f"{r['share']:.0%} of {r['n_types']}"
        lines.append(f"| target q{r['q']:g} | {r['n_positions']} ({r['n_rows']}) | "
                     f"{r['rare_loss']:.3f} | {r['uniform']:.3f} | {r['unigram']:.3f} | "
                     f"{_ci(r['margin_uniform'])} | {_ci(r['margin_unigram'])} | {share} | "
                     f"{'yes' if r['ok'] else 'no'} |")
    lines += ["", END]
    return "\n".join(lines)


def write_section(model_dir: Path, section: str) -> Path:
    path = Path(model_dir) / "TRAINING.md"
    text = path.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else (
        text.rstrip("\n") + "\n\n" + section + "\n")
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    from harness.data.tokenizer import fixtures_dir

    ap = argparse.ArgumentParser(prog="python -m harness.train.learnedness",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a committed fixture, e.g. tiny-pythia-learned")
    args = ap.parse_args(argv)
    rows = measure(args.model)
    section = render(args.model, rows)
    print(section)
    write_section(fixtures_dir() / "models" / args.model, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
