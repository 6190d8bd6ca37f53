"""Named model configurations as plain dataclasses (no YAML, no Hydra).

Values are the official SAM 2 / SAM 2.1 (and, via ``effsam2.configs_efficienttam``, EfficientTAM) settings.
``ModelConfig.with_image_size`` derives a reduced-resolution variant: nothing in the state dict depends on
the image size (RoPE tables and position embeddings follow the feature grid at run time).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from effsam2.errors import ConfigError, UnknownModelError


@dataclass(frozen=True)
class HieraConfig:
    """Hiera trunk: width/heads of stage 1, blocks per stage, global-attention blocks, window sizes."""

    embed_dim: int
    num_heads: int
    stages: tuple[int, ...]
    global_att_blocks: tuple[int, ...]
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)

    @property
    def channel_list(self) -> list[int]:
        """Output channels per stage, lowest resolution first (the FPN neck's order)."""
        return [self.embed_dim * 2**i for i in range(len(self.stages))][::-1]


@dataclass(frozen=True)
class ViTConfig:
    """Plain ViT trunk (EfficientTAM): patch 16, windowed blocks, absolute position table with a cls slot."""

    embed_dim: int
    num_heads: int
    depth: int = 12
    patch_size: int = 16
    window_size: int = 14
    window_block_indexes: tuple[int, ...] = (0, 1, 3, 4, 6, 7, 9, 10)
    pretrain_img_size: int = 224


@dataclass(frozen=True)
class TrackerConfig:
    """Behaviour of the tracking step (official SAM 2.1 values unless a model overrides them)."""

    num_maskmem: int = 7
    max_obj_ptrs_in_encoder: int = 16
    max_cond_frames_in_attn: int = -1  # -1: attend to every conditioning frame
    memory_temporal_stride: int = 1
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    binarize_mask_from_pts_for_mem_enc: bool = True
    use_mask_input_as_output_without_sam: bool = True
    directly_add_no_mem_embed: bool = True
    multimask_output_in_sam: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    multimask_output_for_tracking: bool = True
    use_multimask_token_for_obj_ptr: bool = True
    iou_prediction_use_sigmoid: bool = True
    only_obj_ptrs_in_the_past_for_eval: bool = True
    no_obj_embed_spatial: bool = True
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = True
    use_signed_tpos_enc_to_obj_ptrs: bool = True
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98


SAM2_0_TRACKER = TrackerConfig(
    no_obj_embed_spatial=False,
    add_tpos_enc_to_obj_ptrs=False,
    proj_tpos_enc_in_obj_ptrs=False,
    use_signed_tpos_enc_to_obj_ptrs=False,
)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    family: str  # "sam2", "sam2.1" or "efficienttam"
    trunk: HieraConfig | ViTConfig
    checkpoint_file: str  # the official file name, to tell users what to download
    image_size: int = 1024
    d_model: int = 256
    mem_dim: int = 64
    memory_layers: int = 4
    memory_ffn_dim: int = 2048
    rope_theta: float = 10000.0
    backbone_stride: int = 16
    use_high_res_features: bool = True
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    # the memory-attention backend the official model uses ("dense", or e.g. "pooled-2" for efficienttam_ti_1)
    memory_attention: str = "dense"

    def with_image_size(self, image_size: int) -> ModelConfig:
        """The same model at another input resolution (must be a multiple of 32 for Hiera, 16 for ViT)."""
        step = 32 if isinstance(self.trunk, HieraConfig) else self.trunk.patch_size
        if image_size <= 0 or image_size % step:
            raise ConfigError(f"image_size must be a positive multiple of {step} for {self.name}, got {image_size}")
        return replace(self, image_size=image_size)

    @property
    def feature_grid(self) -> tuple[int, int]:
        """(h, w) of the stride-16 map the tracker works on."""
        side = self.image_size // self.backbone_stride
        return side, side


def _hiera_family(prefix: str, family: str, tracker: TrackerConfig, file_prefix: str) -> dict[str, ModelConfig]:
    trunks = {
        "t": ("tiny", HieraConfig(96, 1, (1, 2, 7, 2), (5, 7, 9), window_pos_embed_bkg_spatial_size=(7, 7))),
        "s": ("small", HieraConfig(96, 1, (1, 2, 11, 2), (7, 10, 13), window_pos_embed_bkg_spatial_size=(7, 7))),
        "b+": ("base_plus", HieraConfig(112, 2, (2, 3, 16, 3), (12, 16, 20))),
        "l": ("large", HieraConfig(144, 2, (2, 6, 36, 4), (23, 33, 43), window_spec=(8, 4, 16, 8),
                                   window_pos_embed_bkg_spatial_size=(7, 7))),
    }
    return {
        f"{prefix}_hiera_{size}": ModelConfig(
            name=f"{prefix}_hiera_{size}", family=family, trunk=trunk,
            checkpoint_file=f"{file_prefix}_hiera_{long}.pt", tracker=tracker)
        for size, (long, trunk) in trunks.items()
    }


def _registry() -> dict[str, ModelConfig]:
    models = {}
    models.update(_hiera_family("sam2.1", "sam2.1", TrackerConfig(), "sam2.1"))
    models.update(_hiera_family("sam2", "sam2", SAM2_0_TRACKER, "sam2"))
    from effsam2.configs_efficienttam import efficienttam_models

    models.update(efficienttam_models())
    return models


MODELS: dict[str, ModelConfig] = _registry()


def list_models() -> list[str]:
    """Names accepted by :func:`effsam2.build_model`."""
    return list(MODELS)


def get_config(name: str, image_size: int | None = None) -> ModelConfig:
    """The named config, optionally at a reduced (or increased) image size."""
    try:
        config = MODELS[name]
    except KeyError:
        close = [m for m in MODELS if name.lower().replace("-", "_") in m or m in name.lower()]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model name {name!r}.{hint} Known models: {', '.join(MODELS)}") from None
    return config.with_image_size(image_size) if image_size is not None else config
