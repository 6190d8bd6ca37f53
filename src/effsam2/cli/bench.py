"""``effsam2 bench``: time models x accelerations x image sizes x object counts on real frames.

Every option is checked before anything is measured; a bad value exits with code 2 and one line.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from effsam2.accel.spec import AccelSpec
from effsam2.accel.window_routing import supports_window_routing
from effsam2.bench.frames import default_video
from effsam2.bench.official import official_available
from effsam2.bench.report import check_plotting, markdown_table, write_json, write_markdown, write_plot
from effsam2.bench.runner import DTYPES, BenchOptions, Runner
from effsam2.cli.devices import check_device
from effsam2.cli.model_args import add_model_list_options
from effsam2.dtypes import resolve_dtype
from effsam2.errors import CheckpointError, Effsam2Error, VideoError
from effsam2.registry import get_config, resolve_name

DEFAULT_MODEL = "sam2.1_hiera_t"
LOOPS = ("steps", "predictor")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="measure speed and memory of models and accelerations side by side",
        description="Track objects through the first frames of a real clip and time each component per "
                    "frame, for every model x acceleration x image size x object count, with the dense model "
                    "as the baseline of each row.")
    add_model_list_options(p, default_model=DEFAULT_MODEL, dtypes=DTYPES)
    p.add_argument("--swr-fraction", type=float,
                   help="benchmark only: route this fraction of stage-3 windows on every frame")
    p.add_argument("--objects", action="append", default=[], help="object counts, comma list (default 1)")
    p.add_argument("--frames", type=int, default=8, help="frames per pass, frame 0 is prompted (default 8)")
    p.add_argument("--warmup", type=int, default=1, help="first frames of each pass not measured (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="passes per row, the median is kept (default 3)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the components (slow to compile, minutes on a CPU; raise --warmup)")
    p.add_argument("--video", help="video file or frame folder (default: a clip from ../shared/data/videos)")
    p.add_argument("--against-official", action="store_true",
                   help="add a row running the official sam2 package, same weights (SAM 2 / 2.1 only)")
    p.add_argument("--loop", action="append", default=[],
                   help="comma list: steps (the model functions in the benchmark's own loop, as the official "
                        "row; default) and/or predictor (the VideoPredictor API, with frame preprocessing "
                        "and mask upsampling)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", dest="json_path", help="write the records as JSON")
    p.add_argument("--markdown", help="write a markdown table")
    p.add_argument("--plot", help="write a PNG of time per component per configuration (needs matplotlib)")
    p.set_defaults(func=run)


def _split(values: list[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _ints(values: list[str], what: str, minimum: int) -> list[int]:
    out = []
    for item in _split(values):
        try:
            n = int(item)
        except ValueError:
            raise Effsam2Error(f"{what} must be whole numbers, got {item!r}") from None
        if n < minimum:
            raise Effsam2Error(f"{what} must be at least {minimum}, got {n}")
        out.append(n)
    return list(dict.fromkeys(out))


def _checkpoints(values: list[str], models: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            if len(models) != 1:
                raise Effsam2Error("with several --model, give each checkpoint as MODEL=PATH")
            name, path = models[0], value
        if name not in models:
            raise Effsam2Error(f"checkpoint for {name!r}, which is not a benchmarked --model")
        if not Path(path).is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
        out[name] = path
    return out


def _check_shortcut(path: str, models: list[str]) -> None:
    """The SWR shortcut exists and fits every benchmarked Hiera model (SWR rows of ViT models are skipped)."""
    from effsam2.accel.shortcut import load_shortcut

    if not Path(path).is_file():
        raise CheckpointError(f"SWR shortcut not found: {path}")
    for name in models:
        config = get_config(name)
        if supports_window_routing(config):
            load_shortcut(path, config)  # CheckpointError naming the mismatch


def _check_output(path: str | None, option: str) -> None:
    if path and not Path(path).parent.is_dir():
        raise Effsam2Error(f"{option} {path}: folder {Path(path).parent} does not exist")


def write_together(records, outputs: list[tuple[str, object]]) -> None:
    """Write every output file or none: each goes to a temporary file beside it, all are renamed at the end,
    so a failure (or Ctrl-C) never leaves new JSON next to an old table or plot."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, write in outputs:
            target = Path(path)
            tmp = target.with_name(f".{target.stem}.effsam2-partial-{os.getpid()}{target.suffix}")
            staged.append((tmp, target))
            write(records, tmp)
        for tmp, target in staged:
            os.replace(tmp, target)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """Validate every option (raising Effsam2Error with one line) and build the run's options."""
    models = list(dict.fromkeys(resolve_name(m) for m in _split(args.model or [DEFAULT_MODEL])))
    sizes: list[int | None] = _ints(args.image_size, "image sizes", 32) or [None]
    for name in models:
        for size in sizes:
            get_config(name, size)  # UnknownModelError / ConfigError (bad size), one line each
    spec_options = {"smr_sparsity": args.smr_sparsity, "pool_window": args.pool_window,
                    "smr_policy": args.smr_policy,
                    "swr_shortcut": args.swr_shortcut, "swr_fraction": args.swr_fraction}
    accels = [AccelSpec.parse(text, **spec_options) for text in (_split(args.accel) or ["dense"])]
    if args.frames < 1 or args.repeats < 1:
        raise Effsam2Error("--frames and --repeats must be at least 1")
    if not 0 <= args.warmup < args.frames:
        raise Effsam2Error(f"--warmup must be in [0, --frames), so a frame is measured, got {args.warmup}")
    device = args.device
    check_device(device)
    video = Path(args.video) if args.video else default_video()
    if not video.exists():
        raise VideoError(f"video not found: {video}")
    for path, option in ((args.json_path, "--json"), (args.markdown, "--markdown"), (args.plot, "--plot")):
        _check_output(path, option)
    if args.plot:
        check_plotting()
    if args.swr_shortcut and any(spec.swr for spec in accels):
        _check_shortcut(args.swr_shortcut, models)
    if args.against_official and (why := official_available()):
        raise Effsam2Error(f"--against-official: {why}")
    loops = list(dict.fromkeys(_split(args.loop) or ["steps"]))
    if unknown := [loop for loop in loops if loop not in LOOPS]:
        raise Effsam2Error(f"unknown loop {unknown[0]!r}; choose from {', '.join(LOOPS)}")
    if "predictor" in loops and args.dtype == "fp16":
        raise Effsam2Error("--loop predictor runs fp32 or bf16 (the predictors' dtypes), not fp16")
    if args.threads is not None and args.threads < 1:
        raise Effsam2Error("--threads must be at least 1")
    return BenchOptions(models=models, video=video, image_sizes=sizes, accels=accels,
                        objects=_ints(args.objects, "object counts", 1) or [1], frames=args.frames,
                        warmup=args.warmup, repeats=args.repeats,
                        dtype=resolve_dtype(args.dtype, device) if args.dtype == "auto" else args.dtype,
                        compile=args.compile,
                        device=device, checkpoints=_checkpoints(args.checkpoint, models),
                        against_official=args.against_official, seed=args.seed, loops=loops)


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if options.compile and options.device == "cpu":
        print("effsam2 bench: warning: --compile on a CPU takes minutes per configuration (in each row's "
              "warm-up pass; the memory attention recompiles for each memory length, up to 7 frames)",
              file=sys.stderr)
    records = Runner(options).run()
    print(markdown_table(records), end="")  # first, so the results are seen even if a file cannot be written
    outputs = [(path, write) for path, write in ((args.json_path, write_json), (args.markdown, write_markdown),
                                                 (args.plot, write_plot)) if path]
    write_together(records, outputs)
    return 0
