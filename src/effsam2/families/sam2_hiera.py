"""SAM 2 and SAM 2.1 (Hiera trunk t / s / b+ / l, FPN neck): the official configs and their image encoder."""

from __future__ import annotations

from effsam2.configs import SAM2_0_TRACKER, HieraConfig, ModelConfig, TrackerConfig
from effsam2.modeling.hiera import Hiera
from effsam2.modeling.image_encoder import FpnNeck, ImageEncoder
from effsam2.registry import ModelFamily, register_family

HIERA_TRUNKS = {
    "t": ("tiny", HieraConfig(96, 1, (1, 2, 7, 2), (5, 7, 9), window_pos_embed_bkg_spatial_size=(7, 7))),
    "s": ("small", HieraConfig(96, 1, (1, 2, 11, 2), (7, 10, 13), window_pos_embed_bkg_spatial_size=(7, 7))),
    "b+": ("base_plus", HieraConfig(112, 2, (2, 3, 16, 3), (12, 16, 20))),
    "l": ("large", HieraConfig(144, 2, (2, 6, 36, 4), (23, 33, 43), window_spec=(8, 4, 16, 8),
                               window_pos_embed_bkg_spatial_size=(7, 7))),
}


def hiera_configs(prefix: str, tracker: TrackerConfig) -> tuple[ModelConfig, ...]:
    """``<prefix>_hiera_{t,s,b+,l}`` with the official checkpoint file names."""
    return tuple(
        ModelConfig(name=f"{prefix}_hiera_{size}", family=prefix, trunk=trunk,
                    checkpoint_file=f"{prefix}_hiera_{long}.pt", tracker=tracker)
        for size, (long, trunk) in HIERA_TRUNKS.items())


def build_hiera_encoder(config: ModelConfig) -> ImageEncoder:
    """Hiera trunk + FPN neck (top-down on levels 2 and 3), the stride-32 level dropped (``scalp=1``)."""
    t = config.trunk
    trunk = Hiera(t.embed_dim, t.num_heads, t.stages, t.global_att_blocks, t.window_spec,
                  t.window_pos_embed_bkg_spatial_size)
    neck = FpnNeck(config.d_model, trunk.channel_list, fpn_top_down_levels=[2, 3])
    return ImageEncoder(trunk, neck, scalp=1)


register_family(ModelFamily("sam2.1", hiera_configs("sam2.1", TrackerConfig()), build_hiera_encoder,
                            description="SAM 2.1 (official checkpoints)"))
register_family(ModelFamily("sam2", hiera_configs("sam2", SAM2_0_TRACKER), build_hiera_encoder,
                            description="SAM 2.0 (official checkpoints)"))
