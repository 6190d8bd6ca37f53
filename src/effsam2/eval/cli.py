"""``effsam2 eval``: score predicted masks against a VOS dataset (DAVIS J&F), or run a model and score it.

Prints the markdown table on stdout, notes on stderr, and optionally writes
``results.json`` / ``results.csv`` / ``results.md`` into ``--out`` and the summary to ``--json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    parser.add_argument("--predictions", metavar="DIR", help="predictions folder to score")
    model = parser.add_argument_group("run a model (instead of --predictions): first-frame ground truth as "
                                      "the prompt, propagate, score; predictions are kept in OUT/predictions")
    model.add_argument("--model", help="model name (see `effsam2 models`)")
    model.add_argument("--checkpoint", help="the model's checkpoint")
    model.add_argument("--accel", help="accelerations, e.g. dense, pool, smr, swr+smr (default: the model's "
                       "official setting, e.g. pool for efficienttam_*_1)")
    model.add_argument("--smr-sparsity", type=float, help="SMR sparsity")
    model.add_argument("--pool-window", type=int, help="pooled memory attention window: 1, 2 or 4")
    model.add_argument("--swr-shortcut", help="trained SWR shortcut (.safetensors)")
    model.add_argument("--image-size", type=int, help="model input size (default: the model's)")
    model.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--out", metavar="DIR", help="write results.json, results.csv, results.md here")
    parser.add_argument("--json", metavar="PATH", help="write the summary JSON here")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the evaluation; user errors propagate as Effsam2Error (exit code 2 in the dispatcher)."""
    if (args.predictions is None) == (args.model is None):
        raise Effsam2Error("give either --predictions DIR (score existing masks) or --model NAME (run a model)")
    dataset = open_dataset(args.dataset)
    sequences = None
    if args.sequences:
        sequences = [name.strip() for name in args.sequences.split(",") if name.strip()]
    predictions = args.predictions
    if args.model is not None:
        predictions = _run_model(args, dataset, sequences)
    results = score_dataset(
        dataset,
        predictions,
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


def _run_model(args: argparse.Namespace, dataset, sequences: list[str] | None) -> Path:
    """Validate the model options, build the model and write its predictions under ``--out``."""
    from effsam2.eval.run_model import predict_dataset
    from effsam2.model_args import build_model_from_args, check_model_args

    if not args.out:
        raise Effsam2Error("--model needs --out DIR (the predictions and results are written there)")
    check_model_args(args)  # model name, image size, checkpoint file, device, accelerations
    names = sequences or dataset.sequence_names(args.split)
    for name in names:
        dataset.sequence(name)  # unknown sequence names fail before the model runs
    model = build_model_from_args(args, "eval")
    return predict_dataset(model, dataset, names, Path(args.out) / "predictions")
