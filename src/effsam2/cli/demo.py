"""``effsam2 demo``: track the bundled sample clip with the default model (no download, no checkpoint).

It runs exactly ``effsam2 track <sample clip> --prompts <stored prompt> --out DIR`` and writes the same
outputs: ``masks/`` (palette PNGs), ``masks.json`` (COCO RLE) and ``overlay.mp4``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from effsam2.cli import track as track_cli

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SAMPLE_VIDEO = SAMPLES / "dog.mp4"
SAMPLE_PROMPTS = SAMPLES / "dog.json"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="track the bundled sample clip with the default model",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", default="default", help="model name (default: effsam2's own model)")
    p.add_argument("--max-frames", type=int, help="track at most this many frames after the first")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out whole")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def track_argv(args: argparse.Namespace) -> list[str]:
    """The ``effsam2 track`` command line the demo runs."""
    argv = ["track", str(SAMPLE_VIDEO), "--prompts", str(SAMPLE_PROMPTS), "--out", str(args.out),
            "--model", args.model, "--device", args.device]
    if args.max_frames is not None:
        argv += ["--max-frames", str(args.max_frames)]
    if args.no_progress:
        argv.append("--no-progress")
    if args.overwrite:
        argv.append("--overwrite")
    return argv


def run(args: argparse.Namespace) -> int:
    parser = argparse.ArgumentParser(prog="effsam2")
    track_cli.add_parser(parser.add_subparsers())
    return track_cli.run(parser.parse_args(track_argv(args)))
