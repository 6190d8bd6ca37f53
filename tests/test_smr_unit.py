"""SMR backend and policies on small synthetic memories, against formulas written here.

A small memory-attention layer (d 32, one head) reads synthetic memory frames for B = 2 objects with
different tokens. The sparse cross-attention is compared with an explicit softmax over keys computed in
full and then restricted to the cached rows, so gathering before the projections, RoPE rows gathered
with the kept tokens, whole prompt / newest frames and compaction are all checked against one formula.
"""

from __future__ import annotations

import math

import pytest
import torch

from effsam2.accel.smr_policy import PerLayerTopK, RandomSelection, TopKSaliency, UniformSelection
from effsam2.accel.sparse_memory import CACHE_KEY, SparseMemoryBackend, frame_saliency, stored_bytes
from effsam2.accel.spec import AccelSpec, make_memory_backend
from effsam2.errors import Effsam2Error
from effsam2.modeling.memory import MemoryEntry, MemoryFrame, MemoryReadout
from effsam2.modeling.memory_attention import DenseMemoryBackend, MemoryAttention

GRID = (6, 6)
K = GRID[0] * GRID[1]
B = 2
MEM_DIM = 8
NUM_MASKMEM = 4  # slots: 0 prompt, 1..3 recent (3 = newest)


@pytest.fixture(scope="module")
def layer_and_table():
    torch.manual_seed(0)
    attention = MemoryAttention(d_model=32, num_layers=1, dim_feedforward=64, kv_in_dim=MEM_DIM)
    return attention.layers[0], attention.rope.get(GRID, torch.device("cpu"))


def make_entry(seed: int) -> MemoryEntry:
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, MEM_DIM, *GRID, generator=gen) * 2
    pos = torch.randn(1, MEM_DIM, *GRID, generator=gen)
    return MemoryEntry(pred_masks=torch.zeros(B, 1, 4, 4), obj_ptr=torch.zeros(B, 32),
                       object_score_logits=torch.ones(B, 1), maskmem_features=feats, maskmem_pos_enc=pos,
                       grid=GRID)


def read_frame(entry: MemoryEntry, frame_idx: int, t_pos: int, is_cond: bool) -> MemoryFrame:
    """What the tracker's gather step builds: stored tokens, their position rows (+ a temporal offset)."""
    tokens = entry.spatial_tokens(torch.float32)
    pos = entry.maskmem_pos_enc.flatten(2).transpose(1, 2)
    if entry.token_index is not None:
        pos = pos[:, entry.token_index]
    pos = pos + 0.1 * t_pos
    return MemoryFrame(entry, frame_idx, t_pos, is_cond, tokens, pos.expand(B, -1, -1), ("obj", frame_idx),
                       token_index=entry.token_index)


def readout(frames: list[MemoryFrame]) -> MemoryReadout:
    gen = torch.Generator().manual_seed(99)
    ptrs = torch.randn(B, 4, MEM_DIM, generator=gen)
    return MemoryReadout(frames, ptrs, torch.randn(B, 4, MEM_DIM, generator=gen), newest_t_pos=NUM_MASKMEM - 1)


def rotate(x: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
    """Written out: consecutive channel pairs are complex numbers multiplied by the rotations."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    re, im = pairs[..., 0], pairs[..., 1]
    out = torch.stack([re * cis.real - im * cis.imag, re * cis.imag + im * cis.real], dim=-1)
    return out.flatten(-2)


def expected_attention(layer, table, q_rot, frames, memory, full_tokens, kept) -> torch.Tensor:
    """Explicit softmax attention over every frame's full tokens (``full_tokens[frame_idx]`` (B, K, C));
    ``kept[frame_idx]`` (B, k) restricts a frame to those grid rows."""
    attn = layer.cross_attn_image
    keys, values = [], []
    for frame in frames:
        full_pos = frame.entry.maskmem_pos_enc.flatten(2).transpose(1, 2) + 0.1 * frame.t_pos
        tokens = full_tokens[frame.frame_idx]
        k = rotate(attn.k_proj(tokens + full_pos), table)  # (B, K, C): every token, full grid
        v = attn.v_proj(tokens)
        rows = kept.get(frame.frame_idx)
        if rows is not None:
            k = torch.stack([k[b, rows[b]] for b in range(B)])
            v = torch.stack([v[b, rows[b]] for b in range(B)])
        keys.append(k)
        values.append(v)
    keys.append(attn.k_proj(memory.ptr_tokens + memory.ptr_pos))
    values.append(attn.v_proj(memory.ptr_tokens))
    k, v = torch.cat(keys, 1), torch.cat(values, 1)
    weights = torch.softmax(q_rot[:, 0] @ k.transpose(1, 2) / math.sqrt(k.shape[-1]), dim=-1)
    return (weights @ v).unsqueeze(1)


def query(layer, table) -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(B, K, 32, generator=gen)
    attn = layer.cross_attn_image
    return rotate(attn.split_heads(attn.q_proj(x)), table)


def test_sparse_reads_match_explicit_attention_and_keep_prompt_and_newest_whole(layer_and_table):
    layer, table = layer_and_table
    attn = layer.cross_attn_image
    q = query(layer, table)
    entries = {t: make_entry(t) for t in range(6)}
    # the full tokens for the explicit formula (compaction drops them from the entries)
    full_tokens = {t: e.spatial_tokens(torch.float32).clone() for t, e in entries.items()}
    policy = TopKSaliency(sparsity=0.75)  # 9 of 36 tokens
    backend = SparseMemoryBackend(policy)

    # step 1: prompt frame 0 + recent frames 1, 2, 3 (newest), all recalled for the first time: read whole
    frames = [read_frame(entries[0], 0, 0, True), read_frame(entries[1], 1, 1, False),
              read_frame(entries[2], 2, 2, False), read_frame(entries[3], 3, 3, False)]
    memory = readout(frames)
    out = backend.cross_attend(0, attn, q, table, memory)
    torch.testing.assert_close(out, DenseMemoryBackend().cross_attend(0, attn, q, table, memory), rtol=0, atol=0)
    assert CACHE_KEY not in entries[0].backend_cache, "the prompt frame got a pattern"
    patterns = {t: entries[t].backend_cache[CACHE_KEY].grid_index[0] for t in (1, 2, 3)}
    for rows in patterns.values():
        assert rows.shape == (B, 9)
        assert torch.all(rows[:, 1:] > rows[:, :-1]), "indices must be ascending and distinct"
    assert not torch.equal(patterns[1][0], patterns[1][1]), "objects with different memories got one pattern"

    entries[2].backend_cache["pooled keys"] = "derived from the whole frame"  # e.g. an inner backend's cache
    entries[0].backend_cache["pooled keys"] = "derived from the whole frame"

    # steps 2 and 3: frames move back one slot; old ones are read through their pattern (compacted at the
    # first sparse read of step 2, so step 3 reads compacted entries), prompt and newest stay whole
    for step, window in ((2, (2, 3, 4)), (3, (3, 4, 5))):
        frames = [read_frame(entries[0], 0, 0, True)]
        frames += [read_frame(entries[t], t, slot, False) for slot, t in enumerate(window, start=1)]
        memory = readout(frames)
        out = backend.cross_attend(0, attn, q, table, memory)
        kept = {t: patterns[t] for t in window[:-1]}
        torch.testing.assert_close(out, expected_attention(layer, table, q, frames, memory, full_tokens, kept),
                                   rtol=1e-5, atol=1e-5)
        if step == 2:
            patterns[4] = entries[4].backend_cache[CACHE_KEY].grid_index[0]
    assert entries[0].maskmem_features.shape == (B, MEM_DIM, *GRID), "the prompt frame was compacted"
    assert "pooled keys" in entries[0].backend_cache, "a whole frame lost its inner backend's cache"
    assert list(entries[2].backend_cache) == [CACHE_KEY], "a frame read sparse kept a whole-frame cache"
    assert entries[5].token_index is None, "the newest frame was compacted"
    for t in (2, 3):  # read sparse at least once: stored as the union over objects (one layer here)
        union = torch.unique(patterns[t])
        torch.testing.assert_close(entries[t].token_index, union)
        assert entries[t].maskmem_features.shape == (B, MEM_DIM, union.numel())


def test_first_recall_in_an_old_slot_reads_whole_then_sparse(layer_and_table):
    """A frame never seen as the newest (e.g. the bank was filled another way) is read whole once."""
    layer, table = layer_and_table
    attn = layer.cross_attn_image
    q = query(layer, table)
    entry = make_entry(11)
    backend = SparseMemoryBackend(TopKSaliency(0.5))
    prompt = make_entry(12)
    memory = readout([read_frame(prompt, 0, 0, True), read_frame(entry, 7, 1, False)])
    dense = DenseMemoryBackend().cross_attend(0, attn, q, table, memory)
    torch.testing.assert_close(backend.cross_attend(0, attn, q, table, memory), dense, rtol=0, atol=0)
    assert CACHE_KEY in entry.backend_cache
    memory = readout([read_frame(prompt, 0, 0, True), read_frame(entry, 7, 1, False)])
    assert not torch.allclose(backend.cross_attend(0, attn, q, table, memory), dense)


def test_a_frame_with_a_pattern_is_read_whole_again_in_the_newest_slot(layer_and_table):
    """E.g. tracking back over frames already tracked: the newest frame stays whole even with a pattern."""
    layer, table = layer_and_table
    attn = layer.cross_attn_image
    q = query(layer, table)
    entry, prompt = make_entry(21), make_entry(22)
    backend = SparseMemoryBackend(TopKSaliency(0.5), compact=False)
    backend.cross_attend(0, attn, q, table, readout([read_frame(entry, 4, 3, False)]))  # pattern picked
    for t_pos, whole in ((1, False), (3, True)):
        memory = readout([read_frame(prompt, 0, 0, True), read_frame(entry, 4, t_pos, False)])
        out = backend.cross_attend(0, attn, q, table, memory)
        dense = DenseMemoryBackend().cross_attend(0, attn, q, table, memory)
        assert torch.equal(out, dense) == whole, f"slot {t_pos}: expected whole={whole}"


def test_frame_saliency_is_the_frame_softmax_averaged_over_heads_and_queries():
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 2, 1500, 16, generator=gen)  # more queries than one chunk
    k = torch.randn(2, 2, 40, 16, generator=gen)
    expected = torch.zeros(2, 40)
    for b in range(2):
        for h in range(2):
            logits = q[b, h] @ k[b, h].T / 4.0
            expected[b] += torch.softmax(logits, dim=-1).mean(0) / 2
    torch.testing.assert_close(frame_saliency(q, k), expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(frame_saliency(q, k).sum(-1), torch.ones(2))


def _frame(num_tokens: int, batch: int = 2) -> MemoryFrame:
    entry = make_entry(0)
    tokens = torch.zeros(batch, num_tokens, MEM_DIM)
    return MemoryFrame(entry, 3, 1, False, tokens, tokens, ())


def test_policy_counts_and_choices():
    assert TopKSaliency(0.95).num_kept(0, 4096) == 204  # official int((1 - 0.95) * 4096)
    assert TopKSaliency(0.75).num_kept(0, 4096) == 1024
    assert TopKSaliency(0.0).num_kept(0, 4096) == 4096
    assert TopKSaliency(0.999).num_kept(0, 256) == 1  # never an empty frame
    per_layer = PerLayerTopK((0.5, 0.75))
    assert [per_layer.num_kept(i, 64) for i in (0, 1)] == [32, 16]
    with pytest.raises(Effsam2Error):
        per_layer.num_kept(2, 64)
    with pytest.raises(Effsam2Error):
        TopKSaliency(1.0)

    saliency = torch.tensor([[0.1, 0.5, 0.2, 0.9], [0.9, 0.1, 0.8, 0.0]])
    chosen = TopKSaliency(0.5).select(0, _frame(4), saliency)
    assert chosen.tolist() == [[1, 3], [0, 2]]

    uniform = UniformSelection(0.9375).select(0, _frame(64), None)  # 4 of 64
    assert uniform.tolist() == [[0, 21, 42, 63]] * 2

    first = RandomSelection(0.75, seed=3).select(0, _frame(64), None)
    again = RandomSelection(0.75, seed=3).select(0, _frame(64), None)
    assert torch.equal(first, again), "a seeded random policy must be reproducible"
    assert first.shape == (2, 16) and all(torch.unique(row).numel() == 16 for row in first)
    assert torch.all(first[:, 1:] > first[:, :-1])


@pytest.mark.parametrize("policy", [RandomSelection(0.5, seed=1), UniformSelection(0.5)])
def test_saliency_free_policies_skip_the_saliency(layer_and_table, policy, monkeypatch):
    def no_saliency(*args):
        raise AssertionError("a saliency-free policy computed the saliency")

    monkeypatch.setattr("effsam2.accel.sparse_memory.frame_saliency", no_saliency)
    layer, table = layer_and_table
    backend = SparseMemoryBackend(policy)
    entry = make_entry(4)
    memory = readout([read_frame(make_entry(5), 0, 0, True), read_frame(entry, 1, 3, False)])
    backend.cross_attend(0, layer.cross_attn_image, query(layer, table), table, memory)
    rows = entry.backend_cache[CACHE_KEY].grid_index[0]
    assert rows.shape == (B, 18)


def test_spec_builds_the_sparse_backend_and_stored_bytes_of_a_whole_entry():
    backend = make_memory_backend(AccelSpec.parse("smr", smr_sparsity=0.9))
    assert isinstance(backend, SparseMemoryBackend) and backend.name == "sparse"
    assert repr(backend) == ("SparseMemoryBackend(policy=TopKSaliency(sparsity=0.9), inner=DenseMemoryBackend(), "
                             "compact=True)")
    entry = make_entry(0)
    full = stored_bytes(entry)
    assert full == B * MEM_DIM * K * 4
