"""Explicit data for the memory a tracking step reads: memory frames and object-pointer tokens.

The tracker assembles a :class:`MemoryReadout` per object and per frame; the memory-attention backend
turns it into keys and values. Nothing here is an ``nn.Module``: it is plain data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


class MemoryOwner:
    """The identity of one object's memory bank in one session (``ObjectMemory.owner``).

    Memory backends key the caches they keep for a bank by it (weakly: a bank's caches go with its owner).
    """

    __slots__ = ("__weakref__",)


@dataclass
class MemoryEntry:
    """What the bank stores for one object on one frame (its output plus its encoded memory).

    Tensors carry a leading batch axis B (objects tracked together; 1 in the official predictor).
    ``maskmem_features`` is (B, C_mem, h, w) in the storage dtype (bf16 like the official code), or
    (B, C_mem, N) with ``token_index`` (N,) when a backend pruned the frame to N of its h*w tokens.
    ``backend_cache`` belongs to the memory-attention backend (e.g. pooled keys, kept-token indices);
    it is created with the entry, so overwriting an entry drops whatever was derived from it.
    """

    pred_masks: torch.Tensor  # (B, 1, 4h', 4w') low-res mask logits
    obj_ptr: torch.Tensor  # (B, C)
    object_score_logits: torch.Tensor  # (B, 1)
    maskmem_features: torch.Tensor | None = None
    maskmem_pos_enc: torch.Tensor | None = None  # (B or 1, C_mem, h, w), same for every frame
    token_index: torch.Tensor | None = None
    grid: tuple[int, int] | None = None  # (h, w) of the memory map
    backend_cache: dict[str, Any] = field(default_factory=dict)

    def spatial_tokens(self, dtype: torch.dtype) -> torch.Tensor:
        """(B, N, C_mem) memory tokens in row-major grid order (or ``token_index`` order), as ``dtype``."""
        feats = self.maskmem_features
        if feats.dim() == 4:
            feats = feats.flatten(2)
        return feats.permute(0, 2, 1).to(dtype)

    def num_tokens(self) -> int:
        feats = self.maskmem_features
        return feats.shape[2] * feats.shape[3] if feats.dim() == 4 else feats.shape[2]


@dataclass
class MemoryFrame:
    """One memory frame as a step reads it: the stored entry plus where it sits in time for this read."""

    entry: MemoryEntry
    frame_idx: int
    t_pos: int  # temporal slot: 0 for conditioning frames, 1 (oldest) .. num_maskmem-1 (newest) otherwise
    is_cond: bool  # the entry is a prompted (conditioning) frame's, whichever slot it is read in
    tokens: torch.Tensor  # (B, N, C_mem)
    pos: torch.Tensor  # (B, N, C_mem) spatial + temporal position encoding
    key: tuple = ()  # (MemoryOwner of the bank, frame index): identifies the frame for backend caches
    # (N,) grid indices of ``tokens`` when the entry was pruned, as it was when ``tokens`` were read: a snapshot,
    # so a backend that prunes the entry during a step does not change what this step's frame describes
    token_index: torch.Tensor | None = None
    # (C_mem,) the temporal encoding included in ``pos`` (pos = spatial encoding + t_enc), so that backends
    # caching keys per entry can add the part that changes with the slot at each read; None if unknown
    t_enc: torch.Tensor | None = None


@dataclass
class MemoryReadout:
    """Everything one memory-attention call reads for a batch of B objects on one frame."""

    frames: list[MemoryFrame]
    ptr_tokens: torch.Tensor | None  # (B, P, C_mem) object-pointer tokens (no RoPE), or None
    ptr_pos: torch.Tensor | None  # (B, P, C_mem)
    newest_t_pos: int  # the t_pos of the most recent non-conditioning slot

    @property
    def num_ptr_tokens(self) -> int:
        return 0 if self.ptr_tokens is None else self.ptr_tokens.shape[1]

    def num_spatial_tokens(self) -> int:
        return sum(f.tokens.shape[1] for f in self.frames)
