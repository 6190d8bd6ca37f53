"""The model options of the subcommands that run a model (``track``, ``eval --model``).

``check_model_args`` checks everything that can be checked without building the model (name, image size,
checkpoint file, device, accelerations), so a command fails before any slow work; ``build_model_from_args``
then builds it. The options are read from an argparse namespace with the attributes ``model``,
``checkpoint``, ``image_size``, ``accel``, ``pool_window``, ``smr_sparsity``, ``swr_shortcut`` and ``device``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from effsam2.accel.spec import SMR_POLICIES, AccelSpec
from effsam2.accel.window_routing import WindowGrid
from effsam2.build import build_model
from effsam2.cli.devices import check_device
from effsam2.configs import ModelConfig
from effsam2.dtypes import DTYPE_CHOICES, explain_dtype
from effsam2.errors import CheckpointError
from effsam2.modeling.sam2_model import SAM2Model
from effsam2.registry import get_config, shipped_weights

__all__ = ["CHECKPOINT_HELP", "accel_from_args", "add_accel_setting_options", "add_device_option",
           "add_model_list_options", "add_model_options", "build_model_from_args", "check_model_args",
           "describe_dtype"]

CHECKPOINT_HELP = ("official checkpoints are not bundled: download them from the SAM 2 / SAM 2.1 release "
                   "(https://github.com/facebookresearch/sam2#download-checkpoints) or EfficientTAM "
                   "(https://github.com/yformer/EfficientTAM), e.g. with scripts/download_checkpoints.sh, "
                   "then pass --checkpoint PATH")


# help texts of the model options, one each: the single-model commands and the bench's lists share them
MODEL_HELP = "model name (see `effsam2 models`)"
DEFAULT_MODEL_HELP = "default: effsam2's own model, whose weights ship with effsam2"
CHECKPOINT_OPTION_HELP = ("the model's official checkpoint (.pt) or a .safetensors file (not needed for a model "
                          "whose weights ship with effsam2)")
IMAGE_SIZE_HELP = ("model input size, a multiple of 32 (default: the model's, e.g. 1024); smaller is faster and "
                   "less accurate")
ACCEL_HELP = ("accelerations, e.g. dense, pool, pool-sdpa, smr, swr+smr, pool@4, smr@0.9:random (default: the "
              "model's official setting, e.g. pool for efficienttam_*_1; see `effsam2 models`)")
DTYPE_AUTO_HELP = "bf16 on CUDA and on CPUs with native bf16, AMX or AVX512-BF16"


def add_model_options(parser, *, model_default: str | None = "default", accel_list: bool = False) -> None:
    """Declare the model options (``--model --checkpoint --image-size --accel --smr-sparsity --smr-policy
    --pool-window --swr-shortcut --device --dtype``) on a parser or argument group: the one place their
    names, defaults and help texts live. ``accel_list``: ``--accel`` takes a comma list (``eval``'s grid)."""
    model_help = MODEL_HELP + (f"; {DEFAULT_MODEL_HELP}" if model_default == "default" else "")
    parser.add_argument("--model", default=model_default, help=model_help)
    parser.add_argument("--checkpoint", help=CHECKPOINT_OPTION_HELP)
    parser.add_argument("--image-size", type=int, help=IMAGE_SIZE_HELP)
    accel_help = ACCEL_HELP
    if accel_list:
        accel_help += ("; a comma list (e.g. dense,pool@4,smr@0.9,smr@0.95:random,pool+smr) evaluates each on "
                       "the same data and writes one table, OUT/grid.{json,md,png}, dense first")
    parser.add_argument("--accel", default=None, help=accel_help)
    add_accel_setting_options(parser)
    add_device_option(parser)
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                        help=f"autocast dtype: auto ({DTYPE_AUTO_HELP}, unless bf16 was measured to cost the model "
                             "accuracy or speed there), fp32 or bf16 (default auto)")


def add_model_list_options(parser, *, default_model: str, dtypes: tuple[str, ...]) -> None:
    """The same options as :func:`add_model_options`, each taking several values (repeatable or comma lists),
    for ``bench``, which measures every model x image size x acceleration; ``--dtype`` defaults to fp32 there,
    so that rows compare like with like, and ``auto`` applies to every row whatever a model's own choice."""
    parser.add_argument("--model", action="append", help=f"{MODEL_HELP}; repeatable (default {default_model})")
    parser.add_argument("--checkpoint", action="append", default=[],
                        help=f"{CHECKPOINT_OPTION_HELP}, as PATH (one model) or MODEL=PATH, repeatable; default: "
                             "shipped weights, else random weights made to track (timings need no trained weights)")
    parser.add_argument("--image-size", action="append", default=[],
                        help=f"{IMAGE_SIZE_HELP}; repeatable or a comma list")
    parser.add_argument("--accel", action="append", default=[],
                        help=f"{ACCEL_HELP}; a comma list, repeatable; dense is always measured as the baseline")
    add_accel_setting_options(parser)
    add_device_option(parser)
    parser.add_argument("--dtype", choices=["auto", *dtypes], default="fp32",
                        help=f"autocast dtype of every row: auto ({DTYPE_AUTO_HELP}, whatever a model's own choice "
                             f"for `track --dtype auto`) or one of {', '.join(dtypes)} (default fp32, so that rows "
                             "compare like with like)")


def add_accel_setting_options(parser) -> None:
    """The settings of the built-in accelerations (``--smr-sparsity --smr-policy --pool-window
    --swr-shortcut``), shared by every command that runs a model, ``bench`` included."""
    parser.add_argument("--smr-sparsity", type=float, help="SMR sparsity: the fraction of memory tokens dropped "
                        "(default 0.95)")
    parser.add_argument("--smr-policy", choices=SMR_POLICIES, help="SMR token selection (default topk)")
    parser.add_argument("--pool-window", type=int, help="pooled memory attention window: 1, 2 (default) or 4")
    parser.add_argument("--swr-shortcut", help="trained SWR shortcut (.safetensors), needed with --accel swr")


def add_device_option(parser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")


def describe_dtype(args: argparse.Namespace, config: ModelConfig) -> str:
    """E.g. 'bf16 (auto: the CPU has native bf16 ...)': what a command says in its first line."""
    dtype, why = explain_dtype(getattr(args, "dtype", "fp32"), args.device, config.bf16_auto)
    return f"{dtype} ({why})"


def accel_from_args(args: argparse.Namespace, config: ModelConfig) -> AccelSpec:
    """``--accel``, or without it the accelerations of the model's official config (pooled memory attention
    for ``efficienttam_*_1``, dense for SAM 2); ``--pool-window``/``--smr-sparsity``/``--swr-shortcut`` apply
    either way."""
    return AccelSpec.parse(args.accel or config.memory_attention, smr_sparsity=args.smr_sparsity,
                           swr_shortcut=args.swr_shortcut, pool_window=args.pool_window,
                           smr_policy=getattr(args, "smr_policy", None))


def check_model_args(args: argparse.Namespace) -> ModelConfig:
    """Check the model options without building anything; returns the model's config.

    ``Effsam2Error`` subclasses with one-line messages: unknown model, bad image size, missing checkpoint,
    unusable device, unknown acceleration or setting.
    """
    config = get_config(args.model, args.image_size)
    if args.checkpoint is None and shipped_weights(config) is not None:
        pass  # the weights that ship with effsam2
    elif args.checkpoint is None:
        raise CheckpointError(f"no --checkpoint given: --model {args.model} needs --checkpoint PATH ({CHECKPOINT_HELP})")
    elif not Path(args.checkpoint).exists():
        raise CheckpointError(f"checkpoint not found: {args.checkpoint} ({CHECKPOINT_HELP})")
    check_device(args.device)
    if accel_from_args(args, config).swr:
        WindowGrid.for_config(config)  # ConfigError for models without a Hiera trunk
    return config


def build_model_from_args(args: argparse.Namespace, command: str) -> SAM2Model:
    """The model the options ask for, built and loaded (``command`` names the subcommand in warnings)."""
    config = get_config(args.model, args.image_size)
    accel = accel_from_args(args, config)
    if accel.swr and accel.swr_shortcut is None:
        print(f"effsam2 {command}: warning: --accel swr without --swr-shortcut: skipped windows get no trained "
              "shortcut (lower accuracy); train one with `effsam2 train-shortcut`", file=sys.stderr)
    return build_model(args.model, args.checkpoint, device=args.device, image_size=args.image_size, accel=accel,
                       dtype=getattr(args, "dtype", "fp32"))
