"""The ``effsam2`` command line.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` (which registers the
subcommand and sets ``func``) so this file only dispatches. User errors (``Effsam2Error``) are
printed as one line on stderr with exit code 2; they never surface as a traceback. Ctrl-C exits with 130
and SIGTERM with 143, each with one line, after the command has removed what the run created.
"""

from __future__ import annotations

import argparse
import importlib
import re
import signal
import sys
import threading

from effsam2.accel.plugins import load_declared_accelerations
from effsam2.errors import Effsam2Error

# Modules that provide a subcommand, in the order `effsam2 --help` lists them.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "effsam2.cli.track",
    "effsam2.cli.demo",
    "effsam2.cli.app",
    "effsam2.cli.models",
    "effsam2.cli.eval",
    "effsam2.cli.train",
    "effsam2.cli.train_shortcut",
    "effsam2.cli.bench",
)


# options whose value may start with a minus sign (a click left of or above the frame: --point -5,250)
NEGATIVE_VALUE_OPTIONS = ("--point", "--box")
_NUMBER_LIST = re.compile(r"^-[0-9.]")


class Terminated(KeyboardInterrupt):
    """SIGTERM (service managers, ``timeout``): handled like Ctrl-C, so a run cleans up what it created."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def join_negative_values(argv: list[str]) -> list[str]:
    """``--point -5,250`` -> ``--point=-5,250``: argparse would take ``-5,250`` for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in NEGATIVE_VALUE_OPTIONS and i + 1 < len(argv) and _NUMBER_LIST.match(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="effsam2", description="Fast promptable video object segmentation (SAM 2 family)."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        load_declared_accelerations()  # installed packages' own accelerations, for --accel
    except Effsam2Error as err:
        print(f"effsam2: error: {err}", file=sys.stderr)
        return 2
    parser = build_parser()
    argv = join_negative_values(list(sys.argv[1:] if argv is None else argv))
    try:
        args = parser.parse_args(argv)
    except Effsam2Error as err:  # raised by option parsers that check values (e.g. --point X,Y)
        print(f"effsam2: error: {err}", file=sys.stderr)
        return 2
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    in_main_thread = threading.current_thread() is threading.main_thread()  # signals need the main thread
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return int(args.func(args) or 0)
    except Effsam2Error as err:
        print(f"effsam2 {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"effsam2 {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"effsam2 {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
