"""Memory attention: the current frame's features attend to themselves and to the memory bank.

The cross-attention to the memory is delegated to a backend object chosen at build time (dense by
default; pooled / sparse backends live in ``effsam2.accel``). Module names follow the official layout
(``layers.N.{self_attn, cross_attn_image}.{q,k,v,out}_proj``, ``linear1/2``, ``norm1-3``, ``norm``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from effsam2.modeling.attention import Attention
from effsam2.modeling.memory import MemoryFrame, MemoryReadout
from effsam2.modeling.position import apply_rope, axial_rope_table, building_cached_tables


class RopeTables:
    """2-D RoPE rotation tables per (h, w, device), computed on first use (a per-model cache, not global)."""

    def __init__(self, head_dim: int, theta: float) -> None:
        self.head_dim = head_dim
        self.theta = theta
        self._tables: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def get(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        """(h*w, head_dim/2) complex rotations of a row-major h x w grid."""
        key = (grid[0], grid[1], torch.device(device))
        if key not in self._tables:
            with building_cached_tables():
                self._tables[key] = axial_rope_table(self.head_dim, end_x=grid[1], end_y=grid[0],
                                                     theta=self.theta).to(device)
        return self._tables[key]


def frame_rope(table: torch.Tensor, frame: MemoryFrame) -> torch.Tensor:
    """Rotations for a memory frame's tokens: the whole table, or the rows of its kept tokens."""
    index = frame.token_index
    return table if index is None else table[index.to(table.device)]


def project_frame(attn: Attention, frame: MemoryFrame, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys (RoPE applied) and values of one memory frame: each (B, heads, N, head_dim)."""
    k = attn.split_heads(attn.k_proj(frame.tokens + frame.pos))
    v = attn.split_heads(attn.v_proj(frame.tokens))
    return apply_rope(k, frame_rope(table, frame)), v


def project_pointers(attn: Attention, memory: MemoryReadout) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Keys and values of the object-pointer tokens (no RoPE): each (B, heads, P, head_dim), or None."""
    if memory.ptr_tokens is None:
        return None
    k = attn.split_heads(attn.k_proj(memory.ptr_tokens + memory.ptr_pos))
    v = attn.split_heads(attn.v_proj(memory.ptr_tokens))
    return k, v


@dataclass
class KeyValues:
    """Keys (RoPE applied) and values of a group of memory tokens: each (B, heads, N, head_dim).

    ``logit_bias`` is added to the attention logits of these keys (e.g. ln(4) for 2x2-pooled keys that each
    stand for four tokens): a float for the whole group or an (N,) tensor, one per key; 0 means plain attention.
    """

    k: torch.Tensor
    v: torch.Tensor
    logit_bias: float | torch.Tensor = 0.0


def attend(q: torch.Tensor, groups: list[KeyValues]) -> torch.Tensor:
    """One softmax over every group's keys: q (B, heads, Nq, d) -> (B, heads, Nq, d)."""
    k = torch.cat([g.k for g in groups], dim=2)
    v = torch.cat([g.v for g in groups], dim=2)
    biases = [g.logit_bias for g in groups]
    if not any(isinstance(b, torch.Tensor) for b in biases) and len(set(biases)) == 1:
        # the same bias on every key shifts all logits equally and leaves the softmax unchanged
        return F.scaled_dot_product_attention(q, k, v)
    bias = torch.cat([torch.as_tensor(g.logit_bias, dtype=q.dtype, device=q.device).expand(g.k.shape[2])
                      for g in groups])
    # a (1, N) mask broadcasts over queries (SDPA rejects a 1-D one)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None])


class DenseMemoryBackend:
    """Exact cross-attention over every memory token, as the official SAM 2 computes it.

    Subclasses change how a memory frame becomes keys/values (``frame_kv``) and keep the rest.
    """

    name = "dense"

    def begin_read(self, memory: MemoryReadout) -> None:
        """Called once per memory-attention call, before any layer reads ``memory`` (housekeeping hook)."""

    def frame_kv(self, layer_idx: int, attn: Attention, frame: MemoryFrame, table: torch.Tensor,
                 memory: MemoryReadout, q: torch.Tensor) -> KeyValues:
        k, v = project_frame(attn, frame, table)
        return KeyValues(k, v)

    def cross_attend(self, layer_idx: int, attn: Attention, q: torch.Tensor, table: torch.Tensor,
                     memory: MemoryReadout) -> torch.Tensor:
        """q (B, heads, Nq, d) already rotated -> attention output (B, heads, Nq, d)."""
        groups = [self.frame_kv(layer_idx, attn, frame, table, memory, q) for frame in memory.frames]
        pointers = project_pointers(attn, memory)
        if pointers is not None:
            groups.append(KeyValues(*pointers))
        return attend(q, groups)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MemoryAttentionLayer(nn.Module):
    """Pre-norm layer: RoPE self-attention, cross-attention to memory (via the backend), ReLU FFN."""

    def __init__(self, d_model: int, dim_feedforward: int, kv_in_dim: int, num_heads: int = 1) -> None:
        super().__init__()
        self.self_attn = Attention(d_model, num_heads)
        self.cross_attn_image = Attention(d_model, num_heads, kv_in_dim=kv_in_dim)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def self_attention(self, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        attn = self.self_attn
        h = self.norm1(x)
        q = apply_rope(attn.split_heads(attn.q_proj(h)), table)
        k = apply_rope(attn.split_heads(attn.k_proj(h)), table)
        v = attn.split_heads(attn.v_proj(h))
        return x + attn.out_proj(attn.merge_heads(F.scaled_dot_product_attention(q, k, v)))

    def forward(self, x: torch.Tensor, table: torch.Tensor, memory: MemoryReadout | list[MemoryReadout], backend,
                layer_idx: int) -> torch.Tensor:
        """x (B, Nq, C) current-frame tokens -> (B, Nq, C); ``memory``: one readout for the batch, or a list
        of B readouts, one per object (each object's cross-attention then reads its own memory)."""
        x = self.self_attention(x, table)
        attn = self.cross_attn_image
        q = apply_rope(attn.split_heads(attn.q_proj(self.norm2(x))), table)
        if isinstance(memory, list):
            read = torch.cat([backend.cross_attend(layer_idx, attn, q[i:i + 1], table, m)
                              for i, m in enumerate(memory)])
        else:
            read = backend.cross_attend(layer_idx, attn, q, table, memory)
        x = x + attn.out_proj(attn.merge_heads(read))
        return x + self.linear2(F.relu(self.linear1(self.norm3(x))))


class MemoryAttention(nn.Module):
    def __init__(self, d_model: int = 256, num_layers: int = 4, dim_feedforward: int = 2048, kv_in_dim: int = 64,
                 rope_theta: float = 10000.0, backend=None) -> None:
        super().__init__()
        self.d_model = d_model
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(d_model, dim_feedforward, kv_in_dim) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.rope = RopeTables(d_model, rope_theta)  # one head: the head width is d_model
        self.backend = backend if backend is not None else DenseMemoryBackend()

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}"

    def forward(self, curr: torch.Tensor, curr_pos: torch.Tensor, grid: tuple[int, int],
                memory: MemoryReadout | list[MemoryReadout]) -> torch.Tensor:
        """curr, curr_pos (B, h*w, C) current frame -> memory-conditioned (B, h*w, C). ``memory``: one readout
        with batch B, or B readouts with batch 1 (objects batched, each reading its own memory)."""
        table = self.rope.get(grid, curr.device)
        for readout in memory if isinstance(memory, list) else [memory]:
            self.backend.begin_read(readout)
        x = curr + 0.1 * curr_pos
        for i, layer in enumerate(self.layers):
            x = layer(x, table, memory, self.backend, i)
        return self.norm(x)
