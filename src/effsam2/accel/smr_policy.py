"""Policies for Sparse Memory Retrieval (SMR): which memory frames stay whole and which tokens are kept.

The backend (:mod:`effsam2.accel.sparse_memory`) does the mechanics (caching, gathering, compaction); a
policy answers four questions, each one method, so an ablation is one small subclass:

* ``keep_whole(layer_idx, frame, memory)``: read this frame in full on this layer? Official: prompt
  (conditioning) frames and the newest memory frame.
* ``picks_pattern(frame)``: may this frame get a kept-token pattern at all? Official: every frame that is
  not a prompt frame. The pattern is picked at the frame's first recall (the backend's rule).
* ``num_kept(layer_idx, num_tokens)``: how many tokens a pattern keeps, ``floor((1 - s) * K)`` (204 of
  4096 at s = 0.95, as the official ``int((1 - s) * 4096)``).
* ``select(layer_idx, frame, saliency)``: which of the frame's K tokens, as (B, k) ascending indices.
  Top-k of the first-recall saliency officially; random / uniform for the paper's ablations.

``saliency`` is (B, K): the frame's attention at its first recall, softmax over the frame's own K
spatial tokens, averaged over heads and queries (see :func:`effsam2.accel.sparse_memory.frame_saliency`).
Policies with ``uses_saliency = False`` receive None and the backend skips computing it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from effsam2.errors import Effsam2Error
from effsam2.modeling.memory import MemoryFrame, MemoryReadout


def _check_sparsity(s: float) -> float:
    if not 0.0 <= s < 1.0:
        raise Effsam2Error(f"SMR sparsity must be in [0, 1), got {s}")
    return float(s)


class TopKSaliency:
    """The official SMR policy: keep the top ``(1 - s) K`` tokens of each frame's first-recall saliency."""

    uses_saliency = True

    def __init__(self, sparsity: float = 0.95) -> None:
        self.sparsity = _check_sparsity(sparsity)

    def keep_whole(self, layer_idx: int, frame: MemoryFrame, memory: MemoryReadout) -> bool:
        """Prompt frames and the newest memory frame are always read in full."""
        return frame.is_cond or frame.t_pos == memory.newest_t_pos

    def picks_pattern(self, frame: MemoryFrame) -> bool:
        return not frame.is_cond

    def layer_sparsity(self, layer_idx: int) -> float:
        return self.sparsity

    def num_kept(self, layer_idx: int, num_tokens: int) -> int:
        # the small epsilon makes (1 - 0.95) * 4096 = 204.79999... floor to 204 like the official int(),
        # and (1 - 0.75) * 4096 floor to exactly 1024 whatever the rounding of 1 - s
        kept = math.floor((1.0 - self.layer_sparsity(layer_idx)) * num_tokens + 1e-6)
        return max(1, min(num_tokens, kept))

    def select(self, layer_idx: int, frame: MemoryFrame, saliency: torch.Tensor | None) -> torch.Tensor:
        """(B, K) saliency of ``frame``'s K tokens -> (B, k) ascending indices of the k most salient."""
        k = self.num_kept(layer_idx, saliency.shape[-1])
        return torch.topk(saliency, k, dim=-1).indices.sort(dim=-1).values

    def _params(self) -> str:
        return f"sparsity={self.sparsity}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._params()})"


class PerLayerTopK(TopKSaliency):
    """Top-k with its own sparsity per memory-attention layer, e.g. ``(0.9, 0.95, 0.95, 0.98)``."""

    def __init__(self, sparsities: Sequence[float]) -> None:
        self.sparsities = tuple(_check_sparsity(s) for s in sparsities)
        if not self.sparsities:
            raise Effsam2Error("PerLayerTopK needs one sparsity per memory-attention layer")
        super().__init__(self.sparsities[0])

    def layer_sparsity(self, layer_idx: int) -> float:
        if layer_idx >= len(self.sparsities):
            raise Effsam2Error(f"PerLayerTopK has {len(self.sparsities)} sparsities, layer {layer_idx} has none")
        return self.sparsities[layer_idx]

    def _params(self) -> str:
        return f"sparsities={self.sparsities}"


class RandomSelection(TopKSaliency):
    """Ablation ("SMR-random"): k tokens drawn uniformly without replacement, independently per object.

    The official ablation draws a Bernoulli mask (a varying count); a fixed k keeps the cost comparable.
    Draws come from the policy's own seeded generator, so a run is reproducible for a given call order.
    """

    uses_saliency = False

    def __init__(self, sparsity: float = 0.95, seed: int = 0) -> None:
        super().__init__(sparsity)
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)

    def select(self, layer_idx: int, frame: MemoryFrame, saliency: torch.Tensor | None) -> torch.Tensor:
        batch, num_tokens = frame.tokens.shape[:2]
        k = self.num_kept(layer_idx, num_tokens)
        rows = [torch.randperm(num_tokens, generator=self._generator)[:k] for _ in range(batch)]
        return torch.stack(rows).sort(dim=-1).values

    def _params(self) -> str:
        return f"sparsity={self.sparsity}, seed={self.seed}"


class UniformSelection(TopKSaliency):
    """Ablation: k tokens evenly spaced over the row-major token order (the official uniform mask)."""

    uses_saliency = False

    def select(self, layer_idx: int, frame: MemoryFrame, saliency: torch.Tensor | None) -> torch.Tensor:
        batch, num_tokens = frame.tokens.shape[:2]
        k = self.num_kept(layer_idx, num_tokens)
        # spacing (K-1)/(k-1) >= 1, so the rounded positions are strictly increasing (k distinct tokens)
        index = torch.linspace(0, num_tokens - 1, k, dtype=torch.float64).round().long()
        return index.unsqueeze(0).expand(batch, -1).clone()

