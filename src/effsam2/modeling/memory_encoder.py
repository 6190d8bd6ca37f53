"""Memory encoder: fuses a frame's stride-16 features with its predicted mask into a 64-channel memory."""

from __future__ import annotations

import math

import torch
from torch import nn

from effsam2.modeling.common import LayerNorm2d
from effsam2.modeling.position import PositionEmbeddingSine


class MaskDownSampler(nn.Module):
    """Conv/LayerNorm/GELU stages, each of stride ``stride``, to a total stride of 16, then a 1x1 conv.

    (B, 1, S, S) mask -> (B, embed_dim, S/16, S/16).
    """

    def __init__(self, embed_dim: int = 256, kernel_size: int = 3, stride: int = 2, padding: int = 1,
                 total_stride: int = 16) -> None:
        super().__init__()
        num_layers = int(math.log2(total_stride) // math.log2(stride))
        self.encoder = nn.Sequential()
        chans_in = 1
        for _ in range(num_layers):
            chans_out = chans_in * stride**2
            self.encoder.append(nn.Conv2d(chans_in, chans_out, kernel_size, stride, padding))
            self.encoder.append(LayerNorm2d(chans_out))
            self.encoder.append(nn.GELU())
            chans_in = chans_out
        self.encoder.append(nn.Conv2d(chans_in, embed_dim, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 conv, LayerNorm, pointwise MLP (x4), layer scale, residual."""

    def __init__(self, dim: int, kernel_size: int = 7, padding: int = 3, layer_scale_init_value: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=padding, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    def __init__(self, out_dim: int = 64, in_dim: int = 256, fuser_layers: int = 2) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(in_dim)
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = Fuser(in_dim, fuser_layers)
        self.position_encoding = PositionEmbeddingSine(out_dim)
        self.out_proj = nn.Conv2d(in_dim, out_dim, kernel_size=1) if out_dim != in_dim else nn.Identity()

    def forward(self, pix_feat: torch.Tensor, mask_for_mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, C, h, w) and a mask already scaled to memory range (B, 1, S, S) -> memory, pos (B, 64, h, w).

        The caller applies the sigmoid (or binarisation) and the scale/bias, as the official tracker does.
        """
        masks = self.mask_downsampler(mask_for_mem)
        x = self.out_proj(self.fuser(self.pix_feat_proj(pix_feat.to(masks.device)) + masks))
        return x, self.position_encoding(x).to(x.dtype)
