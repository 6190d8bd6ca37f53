"""Image encoder = trunk + neck; the FPN neck used by the Hiera models."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from effsam2.modeling.position import PositionEmbeddingSine


@dataclass
class EncoderOutput:
    """Multi-level features of a batch of images, highest resolution first.

    ``backbone_fpn[i]`` and ``vision_pos_enc[i]`` are (B, d_model, H_i, W_i); the last level is the
    stride-16 map the tracker works on.
    """

    backbone_fpn: list[torch.Tensor]
    vision_pos_enc: list[torch.Tensor]

    @property
    def vision_features(self) -> torch.Tensor:
        return self.backbone_fpn[-1]


class FpnNeck(nn.Module):
    """Feature pyramid without output convs: 1x1 lateral convs plus top-down nearest upsampling.

    Only levels in ``fpn_top_down_levels`` receive the top-down path (SAM 2 uses [2, 3]), the others
    are the lateral features alone.
    """

    def __init__(self, d_model: int, backbone_channel_list: list[int], fpn_top_down_levels: list[int],
                 fpn_interp_model: str = "nearest") -> None:
        super().__init__()
        self.position_encoding = PositionEmbeddingSine(d_model)
        self.backbone_channel_list = list(backbone_channel_list)
        self.convs = nn.ModuleList()
        for dim in backbone_channel_list:
            lateral = nn.Sequential()
            lateral.add_module("conv", nn.Conv2d(dim, d_model, kernel_size=1))
            self.convs.append(lateral)
        self.fpn_top_down_levels = list(fpn_top_down_levels)
        self.fpn_interp_model = fpn_interp_model

    def forward(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Trunk maps (highest resolution first) -> (features, position encodings), same order."""
        n = len(self.convs) - 1
        out: list[torch.Tensor] = [None] * len(xs)  # type: ignore[list-item]
        pos: list[torch.Tensor] = [None] * len(xs)  # type: ignore[list-item]
        prev = None
        for i in range(n, -1, -1):  # coarse to fine
            lateral = self.convs[n - i](xs[i])
            if i in self.fpn_top_down_levels and prev is not None:
                top_down = F.interpolate(prev.to(torch.float32), scale_factor=2.0, mode=self.fpn_interp_model,
                                         align_corners=None if self.fpn_interp_model == "nearest" else False)
                prev = lateral + top_down
            else:
                prev = lateral
            out[i] = prev
            pos[i] = self.position_encoding(prev).to(prev.dtype)
        return out, pos


class ImageEncoder(nn.Module):
    """Trunk + neck; ``scalp`` drops that many of the lowest-resolution levels (SAM 2 drops one)."""

    def __init__(self, trunk: nn.Module, neck: nn.Module, scalp: int = 0) -> None:
        super().__init__()
        if list(trunk.channel_list) != list(neck.backbone_channel_list):
            raise ValueError(f"trunk channels {trunk.channel_list} do not match neck {neck.backbone_channel_list}")
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        """(B, 3, S, S) normalised images -> :class:`EncoderOutput`."""
        return self.neck_output(self.trunk(images))

    def neck_output(self, trunk_maps: list[torch.Tensor]) -> EncoderOutput:
        features, pos = self.neck(trunk_maps)
        if self.scalp > 0:
            features, pos = features[: -self.scalp], pos[: -self.scalp]
        return EncoderOutput(list(features), list(pos))
