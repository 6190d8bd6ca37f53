"""The SAM 2 family model: its components (named as in official checkpoints) and per-frame building blocks.

The tracking step that strings these together (memory selection, object pointers) is in
``effsam2.modeling.tracker``; session state lives in the predictors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.init import trunc_normal_

from effsam2.configs import ModelConfig
from effsam2.modeling.common import MLP
from effsam2.modeling.frame_encoder import DenseFrameEncoder
from effsam2.modeling.image_encoder import ImageEncoder
from effsam2.modeling.mask_decoder import MaskDecoder
from effsam2.modeling.memory_attention import MemoryAttention
from effsam2.modeling.memory_encoder import MemoryEncoder
from effsam2.modeling.prompt_encoder import PromptEncoder
from effsam2.modeling.transformer import TwoWayTransformer

NO_OBJ_SCORE = -1024.0  # mask logit placeholder for an object that is absent on a frame


@dataclass
class FrameFeatures:
    """Image features of one frame, ready for the tracker.

    vision_feats / vision_pos: (B, C, h, w) stride-16 map and its sine encoding.
    high_res: [(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)] after the decoder's conv_s0 / conv_s1, or None.
    """

    vision_feats: torch.Tensor
    vision_pos: torch.Tensor
    high_res: list[torch.Tensor] | None

    @property
    def grid(self) -> tuple[int, int]:
        return self.vision_feats.shape[-2], self.vision_feats.shape[-1]

    def expand(self, batch: int) -> FrameFeatures:
        """The same features repeated (as views) for ``batch`` objects."""
        def ex(t: torch.Tensor) -> torch.Tensor:
            return t.expand(batch, *t.shape[1:])
        high = None if self.high_res is None else [ex(t) for t in self.high_res]
        return FrameFeatures(ex(self.vision_feats), ex(self.vision_pos), high)


@dataclass
class PointPrompt:
    """Clicks and box corners in model-space pixels: coords (B, N, 2) float32 (x, y), labels (B, N) int32."""

    coords: torch.Tensor
    labels: torch.Tensor


@dataclass
class HeadOutput:
    """Prompt encoder + mask decoder outputs for a batch of B prompts (M masks each)."""

    low_res_multimasks: torch.Tensor  # (B, M, 4h, 4w)
    high_res_multimasks: torch.Tensor  # (B, M, S, S)
    ious: torch.Tensor  # (B, M)
    low_res_masks: torch.Tensor  # (B, 1, 4h, 4w) the chosen mask
    high_res_masks: torch.Tensor  # (B, 1, S, S)
    obj_ptr: torch.Tensor  # (B, C)
    object_score_logits: torch.Tensor  # (B, 1)
    token_attention: list[torch.Tensor] | None = None  # decoder token->image weights, if asked for


class SAM2Model(nn.Module):
    def __init__(self, config: ModelConfig, image_encoder: ImageEncoder, memory_backend=None,
                 frame_encoder=None, accel_label: str = "dense") -> None:
        """``memory_backend`` and ``frame_encoder`` are the strategies the model runs with (dense when None:
        ``modeling.memory_attention.DenseMemoryBackend``, ``modeling.frame_encoder.DenseFrameEncoder``);
        ``accel_label`` names them for people (e.g. ``"swr+smr"``)."""
        super().__init__()
        self.config = config
        self.frame_encoder = frame_encoder if frame_encoder is not None else DenseFrameEncoder()
        self.accel_label = accel_label
        # the autocast dtype predictors run this model in by default ("fp32" or "bf16"; build_model's dtype=)
        self.autocast_dtype = "fp32"
        tc = config.tracker
        c, mem = config.d_model, config.mem_dim
        self.image_encoder = image_encoder
        # stride-4 conv turning a mask prompt into decoder-range logits (to derive an object pointer)
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.memory_attention = MemoryAttention(c, config.memory_layers, config.memory_ffn_dim, mem,
                                                config.rope_theta, backend=memory_backend)
        self.memory_encoder = MemoryEncoder(out_dim=mem, in_dim=c)
        grid = config.feature_grid
        self.sam_prompt_encoder = PromptEncoder(c, grid, (config.image_size, config.image_size), 16)
        self.sam_mask_decoder = MaskDecoder(
            c, TwoWayTransformer(depth=2, embedding_dim=c, num_heads=8, mlp_dim=config.decoder_mlp_dim),
            use_high_res_features=config.use_high_res_features,
            iou_prediction_use_sigmoid=tc.iou_prediction_use_sigmoid, pred_obj_scores=True,
            pred_obj_scores_mlp=True, use_multimask_token_for_obj_ptr=tc.use_multimask_token_for_obj_ptr,
            dynamic_multimask_via_stability=tc.dynamic_multimask_via_stability,
            dynamic_multimask_stability_delta=tc.dynamic_multimask_stability_delta,
            dynamic_multimask_stability_thresh=tc.dynamic_multimask_stability_thresh)
        self.obj_ptr_proj = MLP(c, c, c, 3)
        self.obj_ptr_tpos_proj = nn.Linear(c, mem) if tc.proj_tpos_enc_in_obj_ptrs else nn.Identity()
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(tc.num_maskmem, 1, 1, mem))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, c))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, c))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, c))
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, mem)) if tc.no_obj_embed_spatial else None
        for p in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc, self.no_obj_ptr):
            trunc_normal_(p, std=0.02)
        if self.no_obj_embed_spatial is not None:
            trunc_normal_(self.no_obj_embed_spatial, std=0.02)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def device(self) -> torch.device:
        return self.no_mem_embed.device

    # ---- image ---------------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor) -> FrameFeatures:
        """(B, 3, S, S) normalised images -> :class:`FrameFeatures`."""
        return self.features_from_encoder(self.image_encoder(images))

    def features_from_encoder(self, out) -> FrameFeatures:
        """Project the high-resolution levels once (as the official ``forward_image`` does)."""
        if self.config.use_high_res_features:
            dec = self.sam_mask_decoder
            high = [dec.conv_s0(out.backbone_fpn[0]), dec.conv_s1(out.backbone_fpn[1])]
            return FrameFeatures(out.backbone_fpn[2], out.vision_pos_enc[2], high)
        return FrameFeatures(out.backbone_fpn[-1], out.vision_pos_enc[-1], None)

    # ---- prompt encoder + mask decoder ------------------------------------------------------------
    def use_multimask(self, is_init_cond_frame: bool, points: PointPrompt | None) -> bool:
        tc = self.config.tracker
        num_pts = 0 if points is None else points.labels.size(1)
        return (tc.multimask_output_in_sam and (is_init_cond_frame or tc.multimask_output_for_tracking)
                and tc.multimask_min_pt_num <= num_pts <= tc.multimask_max_pt_num)

    def forward_sam_heads(self, feats: torch.Tensor, points: PointPrompt | None = None,
                          mask_inputs: torch.Tensor | None = None, high_res: list[torch.Tensor] | None = None,
                          multimask_output: bool = False, return_token_attention: bool = False) -> HeadOutput:
        """Decode masks for (B, C, h, w) features; mask_inputs (B, 1, H, W) logits or probabilities."""
        b, device = feats.size(0), feats.device
        if points is None:  # the decoder always gets at least a padding point
            points = PointPrompt(torch.zeros(b, 1, 2, device=device),
                                 -torch.ones(b, 1, dtype=torch.int32, device=device))
        mask_prompt = None
        if mask_inputs is not None:
            mask_prompt = mask_inputs
            if mask_inputs.shape[-2:] != self.sam_prompt_encoder.mask_input_size:
                mask_prompt = F.interpolate(mask_inputs.float(), size=self.sam_prompt_encoder.mask_input_size,
                                            align_corners=False, mode="bilinear", antialias=True)
        sparse, dense = self.sam_prompt_encoder(points=(points.coords, points.labels), boxes=None, masks=mask_prompt)
        out = self.sam_mask_decoder(feats, self.sam_prompt_encoder.get_dense_pe(), sparse, dense,
                                    multimask_output, high_res, return_token_attention)
        score = out.object_score_logits
        present = score > 0
        # an absent object gets the placeholder mask, consistently for masks and memory
        low_multi = torch.where(present[:, None, None], out.masks, NO_OBJ_SCORE).float()
        high_multi = F.interpolate(low_multi, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False)
        token = out.sam_tokens[:, 0]
        if multimask_output:
            best = torch.argmax(out.iou, dim=-1)
            rows = torch.arange(b, device=device)
            low, high = low_multi[rows, best].unsqueeze(1), high_multi[rows, best].unsqueeze(1)
            if out.sam_tokens.size(1) > 1:
                token = out.sam_tokens[rows, best]
        else:
            low, high = low_multi, high_multi
        obj_ptr = self.pointer_for_presence(self.obj_ptr_proj(token), present.float())
        return HeadOutput(low_multi, high_multi, out.iou, low, high, obj_ptr, score, out.token_attention)

    def pointer_for_presence(self, obj_ptr: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Replace the pointer of absent objects by the learned ``no_obj_ptr`` (present: (B, 1) in {0, 1})."""
        return present * obj_ptr + (1 - present) * self.no_obj_ptr

    def use_mask_as_output(self, feats: torch.Tensor, high_res: list[torch.Tensor] | None,
                           mask_inputs: torch.Tensor) -> HeadOutput:
        """Turn a (B, 1, S, S) binary mask prompt directly into ±10 logits; the pointer still comes from the decoder."""
        out_scale, out_bias = 20.0, -10.0
        high = mask_inputs.float() * out_scale + out_bias
        low = F.interpolate(high, size=(high.size(-2) // 4, high.size(-1) // 4), align_corners=False,
                            mode="bilinear", antialias=True)
        ious = mask_inputs.new_ones(mask_inputs.size(0), 1).float()
        decoded = self.forward_sam_heads(feats, mask_inputs=self.mask_downsample(mask_inputs.float()),
                                         high_res=high_res)
        present = torch.any(mask_inputs.flatten(1).float() > 0.0, dim=1)[..., None].float()
        score = out_scale * present + out_bias
        obj_ptr = self.pointer_for_presence(decoded.obj_ptr, present)
        return HeadOutput(low, high, ious, low, high, obj_ptr, score)

    # ---- memory ------------------------------------------------------------------------------------
    def encode_memory(self, feats: FrameFeatures, high_res_masks: torch.Tensor, object_score_logits: torch.Tensor,
                      is_mask_from_pts: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, S, S) mask logits -> memory features (B, C_mem, h, w) and their position encoding."""
        tc = self.config.tracker
        if tc.binarize_mask_from_pts_for_mem_enc and is_mask_from_pts and not self.training:
            mask_for_mem = (high_res_masks > 0).float()
        else:
            mask_for_mem = torch.sigmoid(high_res_masks)
        mask_for_mem = mask_for_mem * tc.sigmoid_scale_for_mem_enc + tc.sigmoid_bias_for_mem_enc
        features, pos = self.memory_encoder(feats.vision_feats, mask_for_mem)
        if self.no_obj_embed_spatial is not None:
            absent = 1 - (object_score_logits > 0).float()
            features = features + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
        return features, pos

    def forward(self, *args, **kwargs):
        raise TypeError("SAM2Model is driven by effsam2.VideoPredictor / ImagePredictor or the tracker functions")
