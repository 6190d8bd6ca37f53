"""Hiera image trunk (SAM 2's hierarchical ViT) with windowed and global attention blocks.

State-dict names follow the official layout: ``patch_embed.proj``, ``pos_embed``, ``pos_embed_window``,
``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.layers.0/1, proj}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from effsam2.modeling.common import MLP
from effsam2.modeling.windows import window_partition, window_unpartition


@dataclass(frozen=True)
class HieraBlockSpec:
    """Static layout of one block: widths, heads, window (0 = global attention), query pooling."""

    dim: int
    dim_out: int
    num_heads: int
    window_size: int
    q_stride: tuple[int, int] | None
    stage: int  # 0-based stage index the block's output belongs to


def hiera_block_specs(embed_dim: int, num_heads: int, stages: tuple[int, ...],
                      global_att_blocks: tuple[int, ...], window_spec: tuple[int, ...],
                      q_pool: int = 3, q_stride: tuple[int, int] = (2, 2),
                      dim_mul: float = 2.0, head_mul: float = 2.0) -> list[HieraBlockSpec]:
    """Per-block layout of a Hiera trunk, as the official model derives it.

    The window size lags by one block: the first block of a stage (the one that pools its queries)
    still uses the previous stage's window, divided by the pooling stride after pooling.
    """
    stage_ends = [sum(stages[:i]) - 1 for i in range(1, len(stages) + 1)]
    q_pool_blocks = [end + 1 for end in stage_ends[:-1]][:q_pool]
    specs: list[HieraBlockSpec] = []
    stage = 0
    for i in range(sum(stages)):
        dim_out = embed_dim
        window = 0 if i in global_att_blocks else window_spec[stage]
        if i - 1 in stage_ends:
            dim_out = int(embed_dim * dim_mul)
            num_heads = int(num_heads * head_mul)
            stage += 1
        specs.append(HieraBlockSpec(embed_dim, dim_out, num_heads, window,
                                    q_stride if i in q_pool_blocks else None, stage))
        embed_dim = dim_out
    return specs


class PatchEmbed(nn.Module):
    """7x7 stride-4 conv: (B, 3, H, W) -> (B, H/4, W/4, C)."""

    def __init__(self, embed_dim: int, kernel: int = 7, stride: int = 4, padding: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=kernel, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def _pool_bhwc(x: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """2-D max pooling of a (B, H, W, C) map (kernel = stride, floor mode)."""
    return F.max_pool2d(x.permute(0, 3, 1, 2), kernel_size=stride, stride=stride).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Multi-head self-attention over (B, H, W, C) tokens, optionally max-pooling the queries."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: tuple[int, int] | None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)
        q, k, v = torch.unbind(qkv, 2)
        if self.q_stride is not None:
            q = _pool_bhwc(q.reshape(b, h, w, -1), self.q_stride)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block on (B, H, W, C) tokens; windowed when ``window_size`` > 0."""

    def __init__(self, spec: HieraBlockSpec, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.spec = spec
        self.norm1 = nn.LayerNorm(spec.dim, eps=1e-6)
        self.attn = MultiScaleAttention(spec.dim, spec.dim_out, spec.num_heads, spec.q_stride)
        self.norm2 = nn.LayerNorm(spec.dim_out, eps=1e-6)
        self.mlp = MLP(spec.dim_out, int(spec.dim_out * mlp_ratio), spec.dim_out, 2, activation=nn.GELU)
        if spec.dim != spec.dim_out:
            self.proj = nn.Linear(spec.dim, spec.dim_out)

    def residual_branch(self, x: torch.Tensor) -> torch.Tensor:
        """The shortcut path: identity, or projection + query pooling at a stage change."""
        if self.spec.dim == self.spec.dim_out:
            return x
        projected = self.proj(self.norm1(x))
        return projected if self.spec.q_stride is None else _pool_bhwc(projected, self.spec.q_stride)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Norm + (windowed) attention of a (B, H, W, C) map; output has the pooled size."""
        spec = self.spec
        x = self.norm1(x)
        if spec.window_size == 0:
            return self.attn(x)
        h, w = x.shape[1:3]
        windows, padded = window_partition(x, spec.window_size)
        out = self.attn(windows)
        window = spec.window_size
        if spec.q_stride is not None:
            # queries were pooled inside each window: unpartition at the pooled resolution
            window = spec.window_size // spec.q_stride[0]
            h, w = h // spec.q_stride[0], w // spec.q_stride[1]
            padded = (h + (window - h % window) % window, w + (window - w % window) % window)
        return window_unpartition(out, window, padded, (h, w))

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm2(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.residual_branch(x) + self.attention(x)
        return self.mlp_branch(x)


class Hiera(nn.Module):
    """Hierarchical trunk: (B, 3, S, S) -> one (B, C_i, S/4/2^i, S/4/2^i) map per stage, highest res first."""

    def __init__(self, embed_dim: int, num_heads: int, stages: tuple[int, ...],
                 global_att_blocks: tuple[int, ...], window_spec: tuple[int, ...],
                 window_pos_embed_bkg_spatial_size: tuple[int, int]) -> None:
        super().__init__()
        self.specs = hiera_block_specs(embed_dim, num_heads, stages, global_att_blocks, window_spec)
        self.stage_ends = [sum(stages[:i]) - 1 for i in range(1, len(stages) + 1)]
        self.window_spec = window_spec
        self.patch_embed = PatchEmbed(embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))
        self.blocks = nn.ModuleList(MultiScaleBlock(spec) for spec in self.specs)
        # lowest resolution first, as the FPN neck lists them
        self.channel_list = [self.specs[i].dim_out for i in self.stage_ends[::-1]]

    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        """Background table interpolated to (h, w) plus the tiled window table -> (1, h, w, C)."""
        pos = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        window = self.pos_embed_window
        reps = [a // b for a, b in zip(pos.shape, window.shape)]
        return (pos + window.tile(reps)).permute(0, 2, 3, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding plus position embedding: (B, 3, S, S) -> (B, S/4, S/4, C)."""
        x = self.patch_embed(x)
        return x + self.position_embedding(x.shape[1], x.shape[2])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.embed(x)
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
