"""Single-level neck of EfficientTAM: projects the ViT trunk's one feature map to ``d_model`` channels.

State-dict keys (under ``image_encoder.neck.``): ``convs.0.{conv_1x1, norm_0, conv_3x3, norm_1}``.
Unlike SAM 2's FPN neck there is no top-down fusion: one trunk level in, one level out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from effsam2.modeling.common import LayerNorm2d
from effsam2.modeling.position import PositionEmbeddingSine


class ViTNeck(nn.Module):
    """[(B, C_trunk, h, w)] -> ([(B, d_model, h, w)], [(B, d_model, h, w) sine position encoding]).

    Args:
        backbone_channel_list: trunk channels per level; EfficientTAM has exactly one level.
        d_model: output channels (256).
        neck_norm: when True (the shipped configs, ``neck_norm: LN``) each conv is followed by a
            channel LayerNorm and the convs have no bias; when False the convs carry biases and
            there are no norms.
        position_encoding: module mapping a (B, d_model, h, w) map to its position encoding;
            defaults to ``PositionEmbeddingSine(d_model)``.
    """

    def __init__(self, backbone_channel_list: Sequence[int], d_model: int = 256, neck_norm: bool = True,
                 position_encoding: nn.Module | None = None) -> None:
        super().__init__()
        if len(backbone_channel_list) != 1:
            raise ValueError("the ViT neck takes exactly one trunk level")
        self.backbone_channel_list = list(backbone_channel_list)
        self.d_model = d_model
        self.position_encoding = position_encoding if position_encoding is not None else PositionEmbeddingSine(d_model)
        self.convs = nn.ModuleList()
        for dim in self.backbone_channel_list:
            level = nn.Sequential()
            level.add_module("conv_1x1", nn.Conv2d(dim, d_model, kernel_size=1, bias=not neck_norm))
            if neck_norm:
                level.add_module("norm_0", LayerNorm2d(d_model))
            level.add_module("conv_3x3", nn.Conv2d(d_model, d_model, kernel_size=3, padding=1, bias=not neck_norm))
            if neck_norm:
                level.add_module("norm_1", LayerNorm2d(d_model))
            self.convs.append(level)

    def forward(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """One (B, C_trunk, h, w) map -> (features [(B, d_model, h, w)], pos [(B, d_model, h, w)])."""
        if len(xs) != len(self.convs):
            raise ValueError(f"expected {len(self.convs)} trunk level(s), got {len(xs)}")
        feats = self.convs[0](xs[0])
        pos = self.position_encoding(feats).to(feats.dtype)
        return [feats], [pos]
