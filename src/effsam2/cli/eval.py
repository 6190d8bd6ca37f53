"""``effsam2 eval``: score predicted masks against a VOS dataset (DAVIS J&F), or run a model and score it.

Prints the markdown table on stdout, notes on stderr, and optionally writes
``results.json`` / ``results.csv`` / ``results.md`` into ``--out`` and the summary to ``--json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

from effsam2.cli.adapt_args import adapt_progress, adapt_settings, add_adapt_options, describe_trunk_blocks
from effsam2.cli.model_args import add_model_options
from effsam2.cli.tta_args import add_tta_option
from effsam2.errors import Effsam2Error
from effsam2.eval.prompts import PROMPT_KINDS
from effsam2.eval.report import format_markdown, write_json, write_results
from effsam2.eval.scoring import score_dataset
from effsam2.io.datasets import open_dataset
from effsam2.io.output import check_output_folder, fresh_staging_folder, staging_folder, swap_in
from effsam2.train.adapt import adapt_to_sequence

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``eval`` subcommand."""
    parser = subparsers.add_parser(
        "eval",
        help="score predicted masks against DAVIS / SA-V ground truth (J, F, J&F)",
        description=(
            "Score predictions (<pred>/<seq>/<frame>.png label maps, effsam2 track results "
            "<pred>/<seq>/masks/<frame>.png, or SA-V style <pred>/<seq>/<obj>/<frame>.png) with the DAVIS "
            "semi-supervised protocol: each object's "
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
    add_model_options(model, model_default=None, accel_list=True)
    model.add_argument("--prompt", choices=PROMPT_KINDS, default="mask",
                       help="first-frame prompt from the ground truth: mask (the semi-supervised protocol, "
                            "default), box (its bounding box) or click (one click at its deepest point)")
    add_adapt_options(model, "the first-frame prompt and its mask (needs --prompt mask)")
    add_tta_option(model)
    parser.add_argument("--out", metavar="DIR", help="write results.json, results.csv, results.md (and with "
                        "--model the predictions) here; the folder is written whole when the run completes")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out whole")
    parser.add_argument("--json", metavar="PATH", help="write the summary JSON here")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the evaluation; user errors propagate as Effsam2Error (exit code 2 in the dispatcher)."""
    if (args.predictions is None) == (args.model is None):
        raise Effsam2Error("give either --predictions DIR (score existing masks) or --model NAME (run a model)")
    if args.model is not None:
        adapt_settings(args)  # checked before anything is read or written
        if args.adapt_steps and args.prompt != "mask":
            raise Effsam2Error(f"--adapt-steps adapts the model to the first-frame mask: it needs --prompt mask, "
                               f"not --prompt {args.prompt}")
    if args.out:
        check_output_folder(args.out, args.overwrite)
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise Effsam2Error(f"--json {args.json}: folder {Path(args.json).parent} does not exist")
    dataset = open_dataset(args.dataset)
    sequences = None
    if args.sequences:
        sequences = [name.strip() for name in args.sequences.split(",") if name.strip()]
    # the whole --out is staged beside it and swapped in at the end: two runs never mix in one folder
    staging = staging_folder(Path(args.out)) if args.out else None
    if args.model is not None and len(_accel_list(args)) > 1:
        return _run_grid(args, dataset, sequences, staging)
    try:
        if staging is not None:
            fresh_staging_folder(Path(args.out))
        predictions = args.predictions
        if args.model is not None:
            predictions = _run_model(args, dataset, sequences, staging)
        results = score_dataset(dataset, predictions, sequences=sequences, split=args.split, progress=True)
        if args.model is not None:  # where the predictions will be once swapped in, not the staging folder
            results = dataclasses.replace(results, predictions=str(Path(args.out) / "predictions"))
        for note in results.notes:
            print(f"effsam2 eval: warning: {note}", file=sys.stderr)
        try:
            if staging is not None:
                write_results(results, staging)
                swap_in(staging, Path(args.out))
            if args.json:
                write_json(results.summary(), args.json)
        except OSError as err:
            raise Effsam2Error(
                f"cannot write results: {err.filename or ''} {err.strerror or err}".strip()
            ) from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    sys.stdout.write(format_markdown(results))
    return 0


def _prepare(args: argparse.Namespace, model):
    """What eval hands its run for each sequence: none, or first-frame adaptation (``--adapt-steps``)."""
    if not args.adapt_steps:
        return None
    settings = adapt_settings(args, model)  # a trunk too shallow fails here, before any sequence is run

    def adapted(unadapted, seq):
        with adapt_progress(settings.total_steps, f"adapting to {seq.name}", leave=False) as on_step:
            return adapt_to_sequence(unadapted, seq, settings, on_step=on_step)

    return adapted


def _accel_list(args: argparse.Namespace) -> list[str]:
    return [t.strip() for t in (args.accel or "").split(",") if t.strip()]


def _run_grid(args: argparse.Namespace, dataset, sequences: list[str] | None, staging: Path | None) -> int:
    """Every configuration of the --accel list on the same sequences; one table (see effsam2.eval.grid)."""
    from effsam2.cli.model_args import build_model_from_args, check_model_args, describe_dtype
    from effsam2.eval.grid import folder_name, format_grid, grid_rows, ordered_specs, write_grid
    from effsam2.eval.run_model import predict_dataset

    if staging is None:
        raise Effsam2Error("--model needs --out DIR (the predictions and results are written there)")
    specs = ordered_specs(_accel_list(args), smr_sparsity=args.smr_sparsity, pool_window=args.pool_window,
                          smr_policy=args.smr_policy, swr_shortcut=args.swr_shortcut)
    per_spec = [argparse.Namespace(**(vars(args) | {"accel": spec.description})) for spec in specs]
    for spec_args in per_spec:
        config = check_model_args(spec_args)  # every configuration is checked before the first one runs
    names = sequences or dataset.sequence_names(args.split)
    for name in names:
        dataset.sequence(name)
    print(f"effsam2 eval: {config.name} at {config.image_size}px on {args.device}, {describe_dtype(args, config)}",
          file=sys.stderr)
    frames = sum(len(dataset.sequence(n).frames) for n in names)
    runs = []
    try:
        fresh_staging_folder(Path(args.out))
        for spec, spec_args in zip(specs, per_spec):
            model = build_model_from_args(spec_args, "eval")
            folder = staging / folder_name(spec)
            print(f"effsam2 eval: {spec.description}", file=sys.stderr)
            start = time.perf_counter()
            predict_dataset(model, dataset, names, folder / "predictions", prompt=args.prompt,
                            prepare=_prepare(args, model), tta=args.tta)
            seconds = time.perf_counter() - start
            results = score_dataset(dataset, folder / "predictions", sequences=names, progress=False)
            results = dataclasses.replace(results, predictions=str(Path(args.out) / folder.name / "predictions"))
            runs.append((spec, results, seconds, frames))
        rows = grid_rows(runs)
        title = (f"{args.model} on {Path(args.dataset).name} ({len(names)} sequences, prompt: {args.prompt}, "
                 f"{args.device}, {model.autocast_dtype})")
        write_grid(rows, runs, staging, title)
        swap_in(staging, Path(args.out))
        if args.json:
            write_json({"title": title, "rows": [dataclasses.asdict(r) for r in rows]}, args.json)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    sys.stdout.write(format_grid(rows, title, runs))
    return 0


def _run_model(args: argparse.Namespace, dataset, sequences: list[str] | None, staging: Path | None) -> Path:
    """Validate the model options, build the model and write its predictions under ``staging``
    (what becomes ``--out``); they are scored from there."""
    from effsam2.cli.model_args import build_model_from_args, check_model_args, describe_dtype
    from effsam2.eval.run_model import predict_dataset

    if not args.out:
        raise Effsam2Error("--model needs --out DIR (the predictions and results are written there)")
    config = check_model_args(args)  # model name, image size, checkpoint file, device, accelerations
    names = sequences or dataset.sequence_names(args.split)
    for name in names:
        dataset.sequence(name)  # unknown sequence names fail before the model runs
    print(f"effsam2 eval: {config.name} at {config.image_size}px on {args.device}, {describe_dtype(args, config)}",
          file=sys.stderr)
    model = build_model_from_args(args, "eval")
    if args.adapt_steps:
        print(f"effsam2 eval: adapting to each sequence's first-frame masks, {args.adapt_steps} steps at lr "
              f"{args.adapt_lr:g}, {describe_trunk_blocks(args.adapt_trunk_blocks)}, at "
              f"{args.adapt_image_size or config.image_size}px"
              + (f", the mean of {args.adapt_seeds} seeds' weights" if args.adapt_seeds > 1 else ""), file=sys.stderr)
    if args.tta != "none":
        print(f"effsam2 eval: test-time augmentation: {args.tta}", file=sys.stderr)
    return predict_dataset(model, dataset, names, staging / "predictions", prompt=args.prompt,
                           prepare=_prepare(args, model), tta=args.tta)
