"""``--adapt-steps`` / ``--adapt-lr`` / ``--adapt-trunk-blocks`` / ``--adapt-image-size`` / ``--adapt-seeds``: first-frame adaptation options shared by ``effsam2 eval`` and
``effsam2 track`` (the work itself is :mod:`effsam2.train.adapt`)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator

from tqdm import tqdm

from effsam2.dtypes import resolve_dtype
from effsam2.train.adapt import AdaptSettings, trunk_tail


def add_adapt_options(group, what: str) -> None:
    """Add the five options; ``what`` names the mask the model is adapted to (for the help text)."""
    group.add_argument("--adapt-steps", type=int, default=0, metavar="N",
                       help=f"first-frame adaptation: before tracking, fine-tune a copy of the model for "
                            f"N steps on synthetic clips made from {what} (default 0: the model as "
                            f"it is; {AdaptSettings.steps} is the setting chosen in docs/models.md, about 2 s a step "
                            "at 384 px on a 2-core CPU)")
    group.add_argument("--adapt-lr", type=float, default=AdaptSettings.lr, metavar="LR",
                       help=f"learning rate of --adapt-steps (default {AdaptSettings.lr:g})")
    group.add_argument("--adapt-trunk-blocks", type=trunk_blocks_arg, default=AdaptSettings.trunk_blocks,
                       metavar="N|all", help="the image trunk's blocks --adapt-steps fine-tunes too: the last N "
                                             "(default 0: the trunk stays frozen) or all (its stem stays frozen); "
                                             "adapting the trunk scored lower on DAVIS-2016 val, see docs/models.md")
    group.add_argument("--adapt-image-size", type=int, metavar="N",
                       help="the input size --adapt-steps adapts at (default: the tracking size, --image-size or "
                            "the model's); the adapted weights then track at the tracking size, e.g. --image-size "
                            "448 --adapt-image-size 384")
    group.add_argument("--adapt-seeds", type=int, default=AdaptSettings.seeds, metavar="N",
                       help="adapt N copies, each on clips drawn from its own seed, and track with the mean of "
                            "their weights (default 1; N times the adaptation time, the same tracking time)")


def trunk_blocks_arg(text: str) -> int | None:
    """``all`` -> None (every trunk block), else the integer N."""
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of blocks or 'all', got {text!r}") from None


def describe_trunk_blocks(n: int | None) -> str:
    """Which trunk blocks are adapted, in words."""
    return {None: "every trunk block too", 0: "the trunk frozen"}.get(n, f"the last {n} trunk blocks too")


def adapt_settings(args: argparse.Namespace, model=None) -> AdaptSettings:
    """The settings the options ask for, checked (one-line errors). With the built ``model``, adaptation runs
    in bf16 wherever its device has it, whatever dtype the model tracks in, and ``--adapt-trunk-blocks`` and
    ``--adapt-image-size`` are checked against it (before any progress bar opens); without one, fp32 and no trunk check."""
    dtype = "fp32" if model is None else resolve_dtype("auto", model.device)
    settings = AdaptSettings(steps=args.adapt_steps, lr=args.adapt_lr, dtype=dtype,
                             trunk_blocks=args.adapt_trunk_blocks, image_size=args.adapt_image_size,
                             seeds=args.adapt_seeds)
    settings.check()
    if model is not None:
        trunk_tail(model, settings.trunk_blocks)
        if settings.image_size is not None:
            model.config.with_image_size(settings.image_size)  # a size the model cannot take: one line here
    return settings


@contextlib.contextmanager
def adapt_progress(steps: int, label: str = "adapting", disable: bool = False,
                   leave: bool = True) -> Iterator[Callable[[int, float], None]]:
    """A progress bar over the adaptation steps; yields the ``on_step(step, loss)`` that advances it and
    shows the running loss."""
    with tqdm(total=steps, desc=label, unit="step", disable=disable, leave=leave, file=sys.stderr) as bar:
        def on_step(step: int, loss: float) -> None:
            bar.set_postfix(loss=f"{loss:.3f}")
            bar.update(1)

        yield on_step
