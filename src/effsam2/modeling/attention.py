"""Multi-head attention with separate q/k/v/out projections (SAM's layout), optionally down-projected."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Attention whose inner width is ``embedding_dim // downsample_rate``; keys/values may have another width.

    Tensors are batch first: q (B, Nq, C), k and v (B, Nk, C_kv) -> (B, Nq, C).
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1,
                 kv_in_dim: int | None = None) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.kv_in_dim = kv_in_dim if kv_in_dim is not None else embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide the inner width")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    @property
    def head_dim(self) -> int:
        return self.internal_dim // self.num_heads

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, heads, N, C / heads)."""
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, heads, N, C / heads) -> (B, N, C)."""
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = self.split_heads(self.q_proj(q))
        k = self.split_heads(self.k_proj(k))
        v = self.split_heads(self.v_proj(v))
        return self.out_proj(self.merge_heads(F.scaled_dot_product_attention(q, k, v)))

    def forward_with_weights(self, q: torch.Tensor, k: torch.Tensor,
                             v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` (the same output, bit for bit) and the (B, heads, Nq, Nk) attention weights.

        The weights come from a separate softmax, so recording them (SWR's saliency) does not change the
        output; with few query tokens (the decoder's) the extra matrix is small.
        """
        q = self.split_heads(self.q_proj(q))
        k = self.split_heads(self.k_proj(k))
        v = self.split_heads(self.v_proj(v))
        weights = torch.softmax((q @ k.transpose(-2, -1)) / (q.shape[-1] ** 0.5), dim=-1)
        return self.out_proj(self.merge_heads(F.scaled_dot_product_attention(q, k, v))), weights

    def forward_recording(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          record: list[torch.Tensor] | None) -> torch.Tensor:
        """``forward``, or, when ``record`` is a list, ``forward_with_weights`` appending the weights to it."""
        if record is None:
            return self(q=q, k=k, v=v)
        out, weights = self.forward_with_weights(q, k, v)
        record.append(weights)
        return out
