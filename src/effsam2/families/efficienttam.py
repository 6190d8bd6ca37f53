"""EfficientTAM model configurations (plain ViT trunk, single-level neck, SAM 2.0-style tracker).

The official EfficientTAM model is the SAM 2.1 code base with three differences that matter here:
no high-resolution features for the mask decoder (no ``conv_s0``/``conv_s1``), the SAM 2.0 object-pointer
settings (no temporal encoding of pointers, identity ``obj_ptr_tpos_proj``, no ``no_obj_embed_spatial``),
and, for the ``_1`` / ``_2`` variants, pooled memory cross-attention. Names and checkpoint files follow the
official release (``checkpoints/download_checkpoints.sh`` downloads ``<name>.pt``).

``memory_attention`` is the acceleration spec the official model runs with: ``"pool"`` (the exact form,
EfficientRoPEAttention1) for ``_1`` and ``"pool-sdpa"`` (EfficientRoPEAttention2) for ``_2``, both with
2x2 windows (the ``AccelSpec`` default). Any model can be built with another spec via ``build_model(accel=...)``.
"""

from __future__ import annotations

from effsam2.configs import SAM2_0_TRACKER, ModelConfig, ViTConfig
from effsam2.modeling.vit import build_vit_encoder
from effsam2.registry import ModelFamily, register_family

# Plain ViT trunks: patch 16, depth 12, 14x14 windows in all blocks except 2, 5, 8, 11 (global).
VIT_TI = ViTConfig(embed_dim=192, num_heads=3)
VIT_S = ViTConfig(embed_dim=384, num_heads=6)

# (suffix, image size, memory-attention spec)
_VARIANTS = (
    ("", 1024, "dense"),
    ("_1", 1024, "pool"),
    ("_2", 1024, "pool-sdpa"),
    ("_512x512", 512, "dense"),
)


def efficienttam_configs() -> tuple[ModelConfig, ...]:
    """The 8 official EfficientTAM configs (efficienttam_ti, efficienttam_s_1, ...)."""
    models = {}
    for size, trunk in (("ti", VIT_TI), ("s", VIT_S)):
        for suffix, image_size, memory_attention in _VARIANTS:
            name = f"efficienttam_{size}{suffix}"
            models[name] = ModelConfig(
                name=name, family="efficienttam", trunk=trunk, checkpoint_file=f"{name}.pt",
                image_size=image_size, use_high_res_features=False, tracker=SAM2_0_TRACKER,
                memory_attention=memory_attention)
    return tuple(models.values())


register_family(ModelFamily("efficienttam", efficienttam_configs(), build_vit_encoder,
                            description="EfficientTAM (official checkpoints)"))
