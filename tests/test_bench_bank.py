"""The memory bank's bytes per object, as `effsam2 bench` reports them."""

from __future__ import annotations

import torch

from effsam2.bench.session import memory_bank_bytes
from effsam2.modeling.memory import MemoryEntry
from effsam2.modeling.tracker import ObjectMemory


def entry(tokens: int, pruned: bool = False, cache=None) -> MemoryEntry:
    feats = torch.zeros(1, 64, tokens, dtype=torch.bfloat16) if pruned else torch.zeros(1, 64, 8, 8,
                                                                                         dtype=torch.bfloat16)
    e = MemoryEntry(pred_masks=torch.zeros(1, 1, 32, 32), obj_ptr=torch.zeros(1, 256),
                    object_score_logits=torch.zeros(1, 1), maskmem_features=feats,
                    maskmem_pos_enc=torch.zeros(1, 64, 8, 8), token_index=torch.arange(tokens) if pruned else None)
    e.backend_cache.update(cache or {})
    return e


def test_bank_bytes_count_features_pointers_and_backend_caches():
    memory = ObjectMemory(cond={0: entry(64)}, non_cond={1: entry(6, pruned=True),
                                                         2: entry(64, cache={"pooled": (torch.zeros(1, 16, 64),)})})
    whole = 64 * 64 * 2 + 256 * 4  # bf16 features of an 8x8 map + an fp32 pointer
    pruned = 64 * 6 * 2 + 6 * 8 + 256 * 4  # 6 kept tokens, their int64 index, the pointer
    pooled_cache = 16 * 64 * 4
    assert memory_bank_bytes(memory) == whole + pruned + whole + pooled_cache
