"""``effsam2 eval``: score a folder of predicted masks against a VOS dataset (DAVIS J&F).

Prints the markdown table on stdout, notes on stderr, and optionally writes
``results.json`` / ``results.csv`` / ``results.md`` into ``--out`` and the summary to ``--json``.
"""

from __future__ import annotations

import argparse
import sys

from effsam2.errors import Effsam2Error
from effsam2.eval.datasets import open_dataset
from effsam2.eval.report import format_markdown, write_json, write_results
from effsam2.eval.scoring import score_dataset

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``eval`` subcommand."""
    parser = subparsers.add_parser(
        "eval",
        help="score predicted masks against DAVIS / SA-V ground truth (J, F, J&F)",
        description=(
            "Score predictions (<pred>/<seq>/<frame>.png label maps, or SA-V style "
            "<pred>/<seq>/<obj>/<frame>.png) with the DAVIS semi-supervised protocol: each object's "
            "first and last annotated frames are skipped; 'global' is the mean over all objects "
            "(the official number), 'mean of sequences' weighs sequences equally."
        ),
    )
    parser.add_argument("--dataset", required=True, metavar="DIR", help="dataset root or annotation folder")
    parser.add_argument(
        "--split",
        metavar="FILE_OR_NAME",
        help="split file or name (e.g. val, 2017/val); default: every sequence folder",
    )
    parser.add_argument("--sequences", metavar="A,B", help="comma-separated sequence names to score")
    parser.add_argument("--predictions", required=True, metavar="DIR", help="predictions folder")
    parser.add_argument("--out", metavar="DIR", help="write results.json, results.csv, results.md here")
    parser.add_argument("--json", metavar="PATH", help="write the summary JSON here")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the evaluation; user errors propagate as Effsam2Error (exit code 2 in the dispatcher)."""
    dataset = open_dataset(args.dataset)
    sequences = None
    if args.sequences:
        sequences = [name.strip() for name in args.sequences.split(",") if name.strip()]
    results = score_dataset(
        dataset,
        args.predictions,
        sequences=sequences,
        split=args.split,
        progress=True,
    )
    for note in results.notes:
        print(f"effsam2 eval: warning: {note}", file=sys.stderr)
    try:
        if args.out:
            write_results(results, args.out)
        if args.json:
            write_json(results.summary(), args.json)
    except OSError as err:
        raise Effsam2Error(
            f"cannot write results: {err.filename or ''} {err.strerror or err}".strip()
        ) from None
    sys.stdout.write(format_markdown(results))
    return 0
