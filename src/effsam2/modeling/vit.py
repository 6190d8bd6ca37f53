"""Plain ViT trunk of EfficientTAM (a ViTDet-style backbone with windowed and global attention blocks).

Attribute names mirror the official state dict under ``image_encoder.trunk.``:
``pos_embed``, ``patch_embed.proj``, ``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.layers.0/1}``,
so official checkpoints load with ``strict=True``.

Token maps are kept channels-last, (B, H, W, C), inside the trunk; only the output is channels-first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from effsam2.modeling.common import MLP
from effsam2.modeling.image_encoder import ImageEncoder
from effsam2.modeling.vit_neck import ViTNeck
from effsam2.modeling.windows import window_partition, window_unpartition

# The official trunk builds every LayerNorm with this eps (not torch's 1e-5 default).
LAYER_NORM_EPS = 1e-6


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, 3, S, S) -> (B, S/p, S/p, C) channels-last."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ViTAttention(nn.Module):
    """Multi-head self-attention over all tokens of a (B, H, W, C) map (no relative positions)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        b, h, w, _ = x.shape
        n = h * w
        # (B, N, 3C) -> (3, B, heads, N, head_dim); the qkv channel layout is [q | k | v], each head-major.
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        # Default SDPA scaling is 1/sqrt(head_dim), as in the reference.
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.permute(0, 2, 1, 3).reshape(b, h, w, -1)
        return self.proj(out)


class ViTBlock(nn.Module):
    """Pre-norm transformer block; ``window_size > 0`` restricts attention to square windows.

    Windows are cut from the *normalised* tokens, zero-padded at the bottom/right when the grid is
    not a multiple of the window (the padded tokens take part in attention as keys, as in the
    reference), and the padding is cropped before the residual add.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 window_size: int = 0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = ViTAttention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        # Exact (erf) GELU: nn.GELU's default, which is what the reference uses.
        self.mlp = MLP(dim, int(dim * mlp_ratio), dim, num_layers=2, activation=nn.GELU)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            hw = (x.shape[1], x.shape[2])
            x, padded_hw = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, padded_hw, hw)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


def resize_abs_pos(pos_embed: torch.Tensor, has_cls_token: bool, hw: tuple[int, int]) -> torch.Tensor:
    """Absolute position table (1, N(+1), C) from pretraining -> (1, H, W, C) for the current grid.

    The cls slot (index 0) is dropped; the square table is resized with bicubic interpolation
    (align_corners=False, no antialias) only when its side differs from the grid.
    """
    table = pos_embed[:, 1:] if has_cls_token else pos_embed
    side = math.isqrt(table.shape[1])
    if side * side != table.shape[1]:
        raise ValueError(f"position table of {table.shape[1]} tokens is not square")
    h, w = hw
    table = table.reshape(1, side, side, -1)
    if (side, side) == (h, w):
        return table
    resized = F.interpolate(table.permute(0, 3, 1, 2), size=(h, w), mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1)


class ViTTrunk(nn.Module):
    """EfficientTAM's plain ViT image trunk: (B, 3, S, S) -> [(B, C, S/p, S/p)].

    Args:
        embed_dim: token width C (192 for Ti, 384 for S).
        depth: number of blocks.
        num_heads: attention heads per block.
        patch_size: patch side p; S must be a multiple of it.
        window_size: side of the attention windows of the windowed blocks.
        window_block_indexes: blocks that use windowed attention; the others attend globally.
        pretrain_img_size: image size the absolute position table was trained at (224 -> 14x14).
        pretrain_use_cls_token: whether the table has a leading cls slot (dropped at run time).
        mlp_ratio: MLP hidden width / C.
        qkv_bias: whether the qkv projection has a bias.
        in_chans: input channels.
    """

    def __init__(self, embed_dim: int, depth: int, num_heads: int, patch_size: int = 16,
                 window_size: int = 14, window_block_indexes: Sequence[int] = (0, 1, 3, 4, 6, 7, 9, 10),
                 pretrain_img_size: int = 224, pretrain_use_cls_token: bool = True,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.pretrain_use_cls_token = pretrain_use_cls_token
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        num_positions = (pretrain_img_size // patch_size) ** 2 + int(pretrain_use_cls_token)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, embed_dim))
        windowed = set(window_block_indexes)
        self.blocks = nn.ModuleList(
            ViTBlock(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                     window_size=window_size if i in windowed else 0)
            for i in range(depth)
        )
        # The reference returns the output of the last global-attention block (the last block in
        # every shipped config); any windowed blocks after it would not affect the output.
        global_ids = [i for i in range(depth) if i not in windowed]
        self.out_index = global_ids[-1] if global_ids else depth - 1
        self.channel_list: list[int] = [embed_dim]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, S, S) normalised images -> one-element list of (B, C, S/p, S/p) features."""
        if x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of {self.patch_size}")
        x = self.patch_embed(x)
        x = x + resize_abs_pos(self.pos_embed, self.pretrain_use_cls_token, (x.shape[1], x.shape[2]))
        for block in self.blocks[: self.out_index + 1]:
            x = block(x)
        # Channels-first view without a copy, like the reference (the neck's convs accept it).
        return [x.permute(0, 3, 1, 2)]


def build_vit_encoder(config) -> nn.Module:
    """The EfficientTAM image encoder of a ``ModelConfig`` whose trunk is a ``ViTConfig``.

    One trunk level, one neck level, nothing dropped (``scalp=0``): the encoder output is a single
    (B, d_model, S/16, S/16) map with its sine position encoding.
    """
    cfg = config.trunk
    trunk = ViTTrunk(embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads, patch_size=cfg.patch_size,
                     window_size=cfg.window_size, window_block_indexes=cfg.window_block_indexes,
                     pretrain_img_size=cfg.pretrain_img_size)
    neck = ViTNeck(backbone_channel_list=trunk.channel_list, d_model=config.d_model)
    return ImageEncoder(trunk, neck, scalp=0)
