"""``build_model``: a named config -> a ready model (optionally with official weights and accelerations)."""

from __future__ import annotations

import functools
import os

import torch

from effsam2.accel.spec import AccelSpec, make_memory_backend
from effsam2.checkpoint import load_into, read_state_dict
from effsam2.configs import HieraConfig, ModelConfig, get_config, list_models
from effsam2.modeling.hiera import Hiera
from effsam2.modeling.image_encoder import FpnNeck, ImageEncoder
from effsam2.modeling.sam2_model import SAM2Model


def build_image_encoder(config: ModelConfig) -> ImageEncoder:
    trunk_cfg = config.trunk
    if isinstance(trunk_cfg, HieraConfig):
        trunk = Hiera(trunk_cfg.embed_dim, trunk_cfg.num_heads, trunk_cfg.stages, trunk_cfg.global_att_blocks,
                      trunk_cfg.window_spec, trunk_cfg.window_pos_embed_bkg_spatial_size)
        neck = FpnNeck(config.d_model, trunk.channel_list, fpn_top_down_levels=[2, 3])
        return ImageEncoder(trunk, neck, scalp=1)
    from effsam2.modeling.vit import build_vit_encoder

    return build_vit_encoder(config)


def build_from_config(config: ModelConfig, accel: AccelSpec | None = None) -> SAM2Model:
    """An untrained model of ``config`` (official default initialisation) in train mode on the CPU.

    Without ``accel`` the model runs the accelerations its official config uses (dense for SAM 2).
    """
    accel = accel if accel is not None else AccelSpec.parse(config.memory_attention)
    return SAM2Model(config, build_image_encoder(config), make_memory_backend(accel), accel)


def build_model(name: str, checkpoint: str | os.PathLike | None = None, *, device: str | torch.device = "cpu",
                image_size: int | None = None, accel: AccelSpec | str | None = None, **accel_options) -> SAM2Model:
    """Build a named model in eval mode, loading an official checkpoint if given.

    ``image_size`` builds a reduced-resolution variant (e.g. 512 for fast tests or faster, less accurate
    tracking). ``accel`` chooses accelerations (``"pool"``, ``"smr"``, ``"swr+smr"``..., see
    :class:`effsam2.accel.spec.AccelSpec`); ``accel_options`` set their parameters (e.g. smr_sparsity=0.9).
    """
    config = get_config(name, image_size)
    if isinstance(accel, str) or (accel is None and accel_options):
        accel = AccelSpec.parse(accel or config.memory_attention, **accel_options)
    model = build_from_config(config, accel)
    if checkpoint is not None:
        load_into(model, read_state_dict(checkpoint), name, str(checkpoint), matching_models)
    return model.to(device).eval()


@functools.cache
def model_schema(name: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The state-dict layout of a named model, computed on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = build_from_config(get_config(name))
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def matching_models(found: dict[str, tuple[int, ...]]) -> list[str]:
    """Names of known models whose state-dict layout equals ``found``."""
    return [name for name in list_models() if dict(model_schema(name)) == found]
