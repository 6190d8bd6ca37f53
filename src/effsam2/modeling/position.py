"""Position encodings: 2-D sine maps, 1-D sine codes, random Fourier features and 2-D axial RoPE."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from torch import nn


@contextlib.contextmanager
def building_cached_tables():
    """Build tables that a module caches (position encodings, RoPE rotations, pooled cells) as normal
    tensors even under inference mode: the cache outlives the call that fills it, and a table made in
    inference mode would break the backward pass of a later training step on the same model."""
    with torch.inference_mode(False), torch.no_grad():
        yield


def _sine_frequencies(num_feats: int, temperature: float, device: torch.device) -> torch.Tensor:
    """(num_feats,) float32: temperature ** (2 * (i // 2) / num_feats)."""
    idx = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * (idx // 2) / num_feats)


class PositionEmbeddingSine(nn.Module):
    """DETR-style 2-D sine encoding of a feature map's grid: (B, C, H, W) -> (B, num_pos_feats, H, W).

    Half the channels encode y and half x; positions are 1..H (1..W) normalised to (0, 2*pi].
    The encoding depends only on the grid size, so it is cached per (H, W, device) on the instance.
    """

    def __init__(self, num_pos_feats: int, temperature: float = 10000, normalize: bool = True,
                 scale: float | None = None) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError("num_pos_feats must be even")
        self.num_pos_feats = num_pos_feats // 2
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        self._cache: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def encoding(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """(num_pos_feats, H, W) float32 encoding of an H x W grid."""
        key = (height, width, torch.device(device))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        with building_cached_tables():
            pos = self._build(height, width, device)
        self._cache[key] = pos
        return pos

    def _build(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        y = torch.arange(1, height + 1, dtype=torch.float32, device=device)[:, None].expand(height, width)
        x = torch.arange(1, width + 1, dtype=torch.float32, device=device)[None, :].expand(height, width)
        if self.normalize:
            eps = 1e-6
            y = y / (y[-1:, :] + eps) * self.scale
            x = x / (x[:, -1:] + eps) * self.scale
        freqs = _sine_frequencies(self.num_pos_feats, self.temperature, device)
        pos_x = x[:, :, None] / freqs
        pos_y = y[:, :, None] / freqs
        # interleave sin (even channels) and cos (odd channels)
        pos_x = torch.stack((pos_x[:, :, 0::2].sin(), pos_x[:, :, 1::2].cos()), dim=3).flatten(2)
        pos_y = torch.stack((pos_y[:, :, 0::2].sin(), pos_y[:, :, 1::2].cos()), dim=3).flatten(2)
        return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1).contiguous()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = self.encoding(x.shape[-2], x.shape[-1], x.device)
        return pos[None].expand(x.shape[0], -1, -1, -1).to(x.dtype)


def sine_1d(positions: torch.Tensor, dim: int, temperature: float = 10000) -> torch.Tensor:
    """1-D sine code of (N,) positions -> (N, dim) float32 ([sin | cos] halves)."""
    half = dim // 2
    freqs = _sine_frequencies(half, temperature, positions.device)
    angles = positions.float()[:, None] / freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class PositionEmbeddingRandom(nn.Module):
    """SAM's random Fourier-feature encoding of normalised (x, y) coordinates.

    The Gaussian matrix is a persistent buffer: it is part of official checkpoints.
    """

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        scale = 1.0 if scale is None or scale <= 0 else scale
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) coordinates in [0, 1] -> (..., 2 * num_pos_feats)."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * np.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Dense encoding of an (h, w) grid of pixel centres -> (C, h, w)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        grid = torch.ones((h, w), device=device, dtype=torch.float32)
        y = (grid.cumsum(dim=0) - 0.5) / h
        x = (grid.cumsum(dim=1) - 0.5) / w
        return self._encode(torch.stack([x, y], dim=-1)).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, N, 2) pixel coordinates (x, y) in an image of ``image_size`` (h, w) -> (B, N, C)."""
        coords = coords.clone()
        coords[:, :, 0] = coords[:, :, 0] / image_size[1]
        coords[:, :, 1] = coords[:, :, 1] / image_size[0]
        return self._encode(coords.to(torch.float))


def axial_rope_table(head_dim: int, end_x: int, end_y: int, theta: float = 10000.0) -> torch.Tensor:
    """Complex rotations of 2-D axial RoPE for a row-major end_y x end_x grid: (end_x*end_y, head_dim/2).

    The first head_dim/4 complex channels rotate with x, the last head_dim/4 with y.
    """
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 4)[: head_dim // 4].float() / head_dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x = t % end_x
    t_y = torch.div(t, end_x, rounding_mode="floor")
    angles_x = torch.outer(t_x, freqs)
    angles_y = torch.outer(t_y, freqs)
    cis_x = torch.polar(torch.ones_like(angles_x), angles_x)
    cis_y = torch.polar(torch.ones_like(angles_y), angles_y)
    return torch.cat([cis_x, cis_y], dim=-1)


def apply_rope(x: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
    """Rotate (..., N, d) real vectors by (N, d/2) complex rotations; consecutive pairs are complex numbers."""
    x_complex = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(x_complex * cis).flatten(-2).type_as(x)
