"""``effsam2 train-shortcut``: train the SWR shortcut of a model on unlabeled video clips.

    effsam2 train-shortcut --model sam2.1_hiera_b+ --checkpoint sam2.1_hiera_base_plus.pt \\
        --videos clips/ --clips 30 --epochs 3 --out b+_shortcut.safetensors

Interrupted runs resume when the same command is run again (or with --resume); --fresh starts over.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from effsam2.checkpoint import SAFETENSORS_SUFFIX
from effsam2.cli.devices import check_device
from effsam2.errors import CheckpointError, Effsam2Error


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train-shortcut", help="train the sparse-window-routing shortcut (SWR)",
        description="Train the SWR shortcut of a SAM 2 / 2.1 model on unlabeled video clips. The model stays "
                    "frozen; each clip is tracked densely from a click at the centre of its first frame, and "
                    "the shortcut learns to make routed features match the dense memory-conditioned features.",
        epilog="An interrupted run resumes when the same command is run again (state in "
               "<out stem>.train-state.pt, saved every --save-every clips); --fresh starts over.")
    p.add_argument("--model", required=True, help="model name, e.g. sam2.1_hiera_b+")
    p.add_argument("--checkpoint", required=True, help="the model's official checkpoint (.pt or .safetensors)")
    p.add_argument("--videos", required=True, nargs="+", metavar="DIR_OR_FILE",
                   help="video files, folders of videos, or folders of frames")
    p.add_argument("--clips", type=int, required=True, help="number of training clips")
    p.add_argument("--epochs", type=int, default=1, help="passes over the clips (default 1)")
    p.add_argument("--out", required=True, help="output shortcut file (.safetensors)")
    p.add_argument("--image-size", type=int, default=None, help="model input size (default: the model's)")
    p.add_argument("--frames-per-clip", type=int, default=8, help="frames per clip (default 8)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4, as officially)")
    p.add_argument("--save-every", type=int, default=1, help="checkpoint every N clips (default 1)")
    p.add_argument("--seed", type=int, default=0)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", default=None,
                       help="require an existing training state (default: resume if one exists)")
    group.add_argument("--fresh", action="store_true", help="discard an existing training state")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from effsam2.accel.window_routing import supports_window_routing
    from effsam2.build import build_model
    from effsam2.registry import get_config
    from effsam2.train.clips import find_videos, plan_clips
    from effsam2.train.shortcut import TrainSettings, mean_loss, state_path, train_shortcut

    for name in ("clips", "epochs", "save_every"):
        if getattr(args, name) < 1:
            raise Effsam2Error(f"--{name.replace('_', '-')} must be at least 1")
    if args.frames_per_clip < 2:
        raise Effsam2Error("--frames-per-clip must be at least 2 (the first frame is the prompt)")
    if Path(args.out).suffix != SAFETENSORS_SUFFIX:
        raise Effsam2Error(f"--out must be a {SAFETENSORS_SUFFIX} file, got {args.out}")
    config = get_config(args.model, args.image_size)  # bad sizes raise ConfigError, a one-line Effsam2Error
    if not supports_window_routing(config):
        raise Effsam2Error(f"{args.model} has no Hiera trunk; window routing needs a sam2 / sam2.1 model")
    if args.resume and not state_path(args.out).exists():
        raise Effsam2Error(f"nothing to resume: no training state at {state_path(args.out)}")
    check_device(args.device)
    videos = find_videos(args.videos)
    if not Path(args.checkpoint).exists():  # before planning clips, which opens every video
        raise CheckpointError(f"checkpoint not found: {args.checkpoint}")
    clips = plan_clips(videos, args.clips, args.frames_per_clip)
    model = build_model(args.model, args.checkpoint, device=args.device, image_size=config.image_size)
    settings = TrainSettings(args.model, config.image_size, clips, args.epochs, lr=args.lr,
                             save_every=args.save_every, seed=args.seed)
    resume = False if args.fresh else args.resume
    history = train_shortcut(model, settings, args.out, resume=resume, progress=not args.quiet)
    print(f"wrote {args.out} ({settings.total_steps} steps, mean loss {mean_loss(history):.4g})")
    return 0
