"""`rarebench` console script. Each stage registers its own sub-command; errors the user can
fix are printed as one line and exit with code 2 (no traceback)."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

# (sub-command module, function that adds its parser). Imported lazily so `rarebench --help`
# stays fast and one broken stage does not take the others down.
_COMMANDS = [
    ("harness.report.cli", "register_run"),
    ("harness.report.cli", "register_report"),
    ("harness.data.cli", "register"),
    ("harness.train.cli", "register"),
    ("harness.ablation.bench", "register"),
    ("harness.emergence_cli", "register"),
    ("harness.sweep_cli", "register"),
]


DESCRIPTION = """\
Tests preregistered claims about how transformer language models process rare tokens and
writes a report of verdicts with effect sizes, CIs and power. Start with `rarebench run`."""


class Parser(argparse.ArgumentParser):
    """No prefix matching: `--model gpt2-xl` must not silently mean `--models gpt2-xl`.
    Sub-parsers inherit the class (argparse uses the parent's type), so this covers all."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="rarebench", description=DESCRIPTION,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module, func in _COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:  # a stage not built yet, or missing optional dependency
            if exc.name and exc.name.startswith("harness"):
                continue
            raise
        getattr(mod, func)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from harness.errors import RarebenchError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except RarebenchError as exc:
        print(f"rarebench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM under `rarebench run`
        print("rarebench: interrupted; completed stages are cached and resume on re-run",
              file=sys.stderr)
        return 128 + int(getattr(exc, "signum", signal.SIGINT))
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
