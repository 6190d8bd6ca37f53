"""``effsam2 train``: train (or fine-tune) a tracker on DAVIS-style folders with SAM 2's video recipe.

    effsam2 train --data ../shared/data/davis2016-train --out runs/lite0 --steps 600 \\
        --export src/effsam2/weights/effsam2_lite0.safetensors

An interrupted run resumes when the same command is run again; --fresh starts over.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from effsam2.checkpoint import SAFETENSORS_SUFFIX
from effsam2.cli.adapt_args import trunk_blocks_arg
from effsam2.cli.devices import check_device
from effsam2.dtypes import DTYPE_CHOICES
from effsam2.errors import CheckpointError, DatasetError, Effsam2Error

# held out from training by default: their validation J picks the best checkpoint of a run
DEFAULT_VAL_SEQUENCES = ("dance-jump", "kite-walk", "motorbike")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train or fine-tune a tracker on annotated videos (SAM 2's video training recipe)",
        description="Train a model on DAVIS-style folders (JPEGImages/ + Annotations/ + ImageSets/): 8-frame "
                    "clips with augmentation and synthetic clips from single frames, the first frame prompted "
                    "by a mask, a box or clicks, corrective clicks, focal+dice / IoU / object-score losses. "
                    "Never train on the sequences you evaluate on.",
        epilog="The run folder (--out) holds last.safetensors, best.safetensors (best held-out J), "
               "train-state.pt, loss.csv and loss.png. Running the same command again resumes.")
    p.add_argument("--model", default="default", help="model to train (default: effsam2's own model)")
    p.add_argument("--checkpoint", default=None,
                   help="start from these weights (an official checkpoint to fine-tune; default: the model's "
                        "initialisation, i.e. the ImageNet trunk and fresh heads for effsam2's own model)")
    p.add_argument("--data", required=True, help="training data folder (DAVIS layout)")
    p.add_argument("--split", default=None, help="split file or name (default: ImageSets/train.txt, else all)")
    p.add_argument("--val-sequences", default=",".join(DEFAULT_VAL_SEQUENCES),
                   help="comma list of training sequences held out for validation ('' for none; "
                        f"default {','.join(DEFAULT_VAL_SEQUENCES)})")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--steps", type=int, default=600, help="optimisation steps (default 600)")
    p.add_argument("--batch-size", type=int, default=4, help="clips per step (default 4)")
    p.add_argument("--frames", type=int, default=8, help="frames per clip (default 8)")
    p.add_argument("--distractor-prob", type=float, default=0.5,
                   help="share of clips with another object pasted beside the target (default 0.5; the shipped "
                        "model was trained with 0, see docs/models.md)")
    p.add_argument("--twin-prob", type=float, default=0.0,
                   help="share of the distractors that are the target's own twin (its pixels shifted sideways, "
                        "moving as it moves; default 0)")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW peak learning rate (default 3e-4)")
    p.add_argument("--trunk-lr", type=float, default=0.0,
                   help="learning rate of the image trunk (default 0: frozen); e.g. 3e-6 when fine-tuning an "
                        "official model. For effsam2's own model the run's weights then hold the trained trunk "
                        "too, instead of taking it from the ImageNet package")
    p.add_argument("--trunk-blocks", type=trunk_blocks_arg, default=None, metavar="N|all",
                   help="with --trunk-lr: train only the trunk's last N blocks (default all: the whole trunk; "
                        "an EfficientNet-Lite trunk keeps its ImageNet batch-norm statistics either way)")
    p.add_argument("--memory-mask-loss", type=float, default=0.0, metavar="WEIGHT",
                   help="add this weight times a loss asking each frame's memory to read out the mask encoded "
                        "into it (channel 0, BCE; ours, not SAM 2's; default 0: off; measured in docs/models.md)")
    p.add_argument("--image-size", type=int, default=None, help="input size (default: the model's)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                   help="autocast dtype (auto: bf16 on CUDA and CPUs with native bf16, else fp32)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the initial weights (without --checkpoint) and each step's clips and prompts "
                        "(default 0)")
    p.add_argument("--val-every", type=int, default=100, help="validate every N steps (default 100)")
    p.add_argument("--save-every", type=int, default=25, help="save the run every N steps (default 25)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="draw the training clips ahead in N worker processes (default 0: in the training "
                        "process); the same clips and weights as 0, faster when the model trains on a GPU")
    p.add_argument("--max-minutes", type=float, default=None, metavar="M",
                   help="stop after the first training step that ends past M minutes from this command's start "
                        "(the run is saved, and validated only where it would be anyway; the same command again "
                        "resumes it; the learning-rate schedule stays that of --steps)")
    p.add_argument("--export", default=None, metavar="FILE.safetensors",
                   help="at the end, write the best weights here in fp16 (the file effsam2 ships)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", default=None, help="require an existing run to resume")
    group.add_argument("--fresh", action="store_true", help="discard an existing run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    started = time.monotonic()  # --max-minutes counts from here

    import torch

    from effsam2.build import build_model
    from effsam2.dtypes import resolve_dtype
    from effsam2.registry import get_config
    from effsam2.train.adapt import trunk_tail
    from effsam2.train.clip_sampler import ClipSettings
    from effsam2.train.export import export_weights
    from effsam2.train.vos_data import load_videos, sequence_names
    from effsam2.train.vos_trainer import TrainSettings, state_file, train

    if args.lr <= 0 or args.trunk_lr < 0:
        raise Effsam2Error("--lr must be positive and --trunk-lr at least 0")
    for name in ("steps", "batch_size", "val_every", "save_every"):
        if getattr(args, name) < 1:
            raise Effsam2Error(f"--{name.replace('_', '-')} must be at least 1")
    if args.workers < 0:
        raise Effsam2Error(f"--workers must be at least 0, got {args.workers}")
    if args.max_minutes is not None and not args.max_minutes >= 0:
        raise Effsam2Error(f"--max-minutes must be at least 0, got {args.max_minutes}")
    if not 0 <= args.distractor_prob <= 1:
        raise Effsam2Error(f"--distractor-prob must be in [0, 1], got {args.distractor_prob}")
    if not 0 <= args.twin_prob <= 1:
        raise Effsam2Error(f"--twin-prob must be in [0, 1], got {args.twin_prob}")
    if args.trunk_blocks is not None and (args.trunk_lr == 0 or args.trunk_blocks < 1):
        raise Effsam2Error("--trunk-blocks needs a positive number of blocks (or all) and a --trunk-lr above 0")
    if args.memory_mask_loss < 0:
        raise Effsam2Error(f"--memory-mask-loss must be at least 0, got {args.memory_mask_loss}")
    if args.frames < 2:
        raise Effsam2Error("--frames must be at least 2 (the first frame is the prompt)")
    if args.export is not None and Path(args.export).suffix != SAFETENSORS_SUFFIX:
        raise Effsam2Error(f"--export must be a {SAFETENSORS_SUFFIX} file, got {args.export}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise Effsam2Error(f"--out {args.out} is a file, not a folder")
    config = get_config(args.model, args.image_size)
    device = check_device(args.device)
    if args.checkpoint is not None and not Path(args.checkpoint).exists():
        raise CheckpointError(f"checkpoint not found: {args.checkpoint}")
    if args.resume and not state_file(Path(args.out)).exists():
        raise Effsam2Error(f"nothing to resume: no {state_file(Path(args.out))}")
    names = sequence_names(args.data, args.split)
    val = tuple(v for v in args.val_sequences.split(",") if v)
    unknown = [v for v in val if v not in names]
    if unknown:
        raise DatasetError(f"--val-sequences: {', '.join(unknown)} not in {args.data}")
    train_names = tuple(n for n in names if n not in val)
    if not train_names:
        raise DatasetError(f"no training sequences left in {args.data} after holding out {', '.join(val)}")
    videos = load_videos(args.data, list(train_names), config.image_size)
    val_videos = load_videos(args.data, list(val), config.image_size)
    # no --checkpoint: the model's initialisation, never its shipped weights (what the model card's command trains
    # from), drawn from --seed: torch seeds each process at random, so an unseeded initialisation never repeats
    torch.manual_seed(args.seed)
    model = build_model(config.name, args.checkpoint, device=device, image_size=config.image_size, shipped=False)
    trunk_tail(model, args.trunk_blocks if args.trunk_lr > 0 else 0)  # a one-line error past the trunk's depth
    dtype = resolve_dtype(args.dtype, device)
    settings = TrainSettings(
        model=config.name, image_size=config.image_size, data=str(Path(args.data).resolve()),
        train_sequences=train_names, val_sequences=val, steps=args.steps, batch_size=args.batch_size,
        lr=args.lr, trunk_lr=args.trunk_lr, trunk_blocks=args.trunk_blocks, seed=args.seed, dtype=dtype, val_every=args.val_every,
        memory_mask_loss=args.memory_mask_loss,
        clips=ClipSettings(frames=args.frames, distractor_prob=args.distractor_prob,
                           twin_prob=args.twin_prob))
    print(f"effsam2 train: {config.name} at {config.image_size}px, {len(videos)} training sequences "
          f"({sum(v.num_frames for v in videos)} frames), {len(val_videos)} held out, {dtype}, {device}")
    resume = False if args.fresh else args.resume
    deadline = None if args.max_minutes is None else started + 60 * args.max_minutes
    history = train(model, videos, val_videos, settings, args.out, resume=resume, save_every=args.save_every,
                    progress=not args.quiet, workers=args.workers, deadline=deadline)
    best = [r["val_j"] for r in history if r.get("val_j") is not None]
    done = history[-1]["step"] + 1
    stopped = f" (stopped by --max-minutes at step {done} of {args.steps}; run it again to go on)" \
        if done < args.steps else ""
    print(f"effsam2 train: {done} steps, last loss {history[-1]['loss']:.4f}"
          + (f", best held-out J {max(best):.4f}" if best else "") + f"; run in {args.out}{stopped}")
    if args.export is not None:
        source = Path(args.out) / ("best.safetensors" if best else "last.safetensors")
        export_weights(source, args.export, config.name)
        print(f"effsam2 train: wrote {args.export} (fp16) from {source.name}")
    return 0
