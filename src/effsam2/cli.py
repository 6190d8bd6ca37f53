"""The ``effsam2`` command line.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` (which registers the
subcommand and sets ``func``) so this file only dispatches. User errors (``Effsam2Error``) are
printed as one line on stderr with exit code 2; they never surface as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from effsam2.errors import Effsam2Error

# Modules that provide a subcommand, in the order `effsam2 --help` lists them.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "effsam2.predictor.cli",
    "effsam2.model_cli",
    "effsam2.eval.cli",
    "effsam2.train.cli",
    "effsam2.bench.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="effsam2", description="Fast promptable video object segmentation (SAM 2 family)."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except Effsam2Error as err:  # raised by option parsers that check values (e.g. --point X,Y)
        print(f"effsam2: error: {err}", file=sys.stderr)
        return 2
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Effsam2Error as err:
        print(f"effsam2 {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"effsam2 {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
