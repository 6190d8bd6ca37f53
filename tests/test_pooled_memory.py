"""Pooled memory cross-attention (EfficientTAM) against independent formulas, on hand-built memory.

The reference below re-derives the official EfficientRoPEAttention1/2 computation from its description
(project, RoPE on q and on the spatial keys repeated per frame, per-frame 2x2 ``avg_pool2d`` of the rotated
keys and of the values, pointers appended whole; variant 1: +2 ln 2 on the pooled logits, variant 2: +2 ln 2
on the pooled key vectors) with torch primitives, independently of ``effsam2.accel.pooled_memory``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from effsam2.accel.pooled_memory import PooledMemoryBackend, cell_counts, pool_tokens
from effsam2.accel.spec import AccelSpec
from effsam2.modeling.attention import Attention
from effsam2.modeling.memory import MemoryEntry, MemoryFrame, MemoryReadout
from effsam2.modeling.memory_attention import DenseMemoryBackend, KeyValues, attend
from effsam2.modeling.position import apply_rope, axial_rope_table

C, MEM = 256, 64


def make_attn(seed: int = 0) -> Attention:
    torch.manual_seed(seed)
    attn = Attention(C, 1, kv_in_dim=MEM)
    with torch.no_grad():  # larger weights than the default init: peaked, non-trivial attention
        for p in attn.parameters():
            p.normal_(0, 0.15)
    return attn.eval()


def make_readout(num_frames: int, grid: tuple[int, int], num_ptrs: int = 0, batch: int = 1, seed: int = 1,
                 cell_constant: int = 0) -> MemoryReadout:
    """Random memory frames on ``grid`` (+ pointer tokens). ``cell_constant=w`` makes every w x w cell uniform."""
    gen = torch.Generator().manual_seed(seed)
    h, w = grid
    tpos = torch.randn(7, MEM, generator=gen) * 0.5
    frames = []
    for i in range(num_frames):
        feats = torch.randn(batch, MEM, h, w, generator=gen)
        spatial = torch.randn(1, MEM, h, w, generator=gen)
        if cell_constant:
            def blocky(x: torch.Tensor) -> torch.Tensor:
                x = x[..., ::cell_constant, ::cell_constant]
                return x.repeat_interleave(cell_constant, -2).repeat_interleave(cell_constant, -1)[..., :h, :w]
            feats, spatial = blocky(feats), blocky(spatial)
        feats = feats.to(torch.bfloat16)  # stored like the tracker stores memories
        entry = MemoryEntry(pred_masks=torch.zeros(batch, 1, 4 * h, 4 * w), obj_ptr=torch.zeros(batch, C),
                            object_score_logits=torch.ones(batch, 1), maskmem_features=feats,
                            maskmem_pos_enc=spatial, grid=grid)
        t_pos = 0 if i == 0 else min(i, 6)
        t_enc = tpos[7 - t_pos - 1]
        tokens = entry.spatial_tokens(torch.float32)
        pos = (spatial.flatten(2).transpose(1, 2) + t_enc).expand(batch, -1, -1)
        frames.append(MemoryFrame(entry, i, t_pos, i == 0, tokens, pos, ("obj", i), t_enc=t_enc))
    ptrs = ptr_pos = None
    if num_ptrs:
        ptrs = torch.randn(batch, num_ptrs, MEM, generator=gen)
        ptr_pos = torch.zeros(batch, num_ptrs, MEM)
    return MemoryReadout(frames, ptrs, ptr_pos, newest_t_pos=6)


def official_reference(attn: Attention, q_in: torch.Tensor, memory: MemoryReadout, side: int,
                       variant: int | None) -> torch.Tensor:
    """The official cross-attention on square side x side grids (variant None: RoPEAttention, dense)."""
    k_in = torch.cat([f.tokens + f.pos for f in memory.frames]
                     + ([memory.ptr_tokens + memory.ptr_pos] if memory.ptr_tokens is not None else []), dim=1)
    v_in = torch.cat([f.tokens for f in memory.frames]
                     + ([memory.ptr_tokens] if memory.ptr_tokens is not None else []), dim=1)
    q, k, v = attn.q_proj(q_in)[:, None], attn.k_proj(k_in)[:, None], attn.v_proj(v_in)[:, None]
    cis = axial_rope_table(C, side, side)
    n_rope = k.shape[2] - memory.num_ptr_tokens
    nq = q.shape[2]
    q = apply_rope(q, cis)
    k = torch.cat([apply_rope(k[:, :, :n_rope], cis.repeat(n_rope // nq, 1)), k[:, :, n_rope:]], dim=2)
    if variant is None or n_rope <= nq:
        return F.scaled_dot_product_attention(q, k, v)[:, 0]

    def pool(x: torch.Tensor) -> torch.Tensor:  # (B, 1, F*nq, d) -> (B, 1, F*nq/4, d), per frame
        b, _, _, d = x.shape
        grids = x[:, 0].reshape(b, -1, side, side, d).permute(0, 1, 4, 2, 3).reshape(b, -1, side, side)
        pooled = F.avg_pool2d(grids, 2, stride=2).reshape(b, -1, d, (side // 2) ** 2)
        return pooled.transpose(-1, -2).reshape(b, 1, -1, d)

    k_pool, v_pool = pool(k[:, :, :n_rope]), pool(v[:, :, :n_rope])
    k_ptr, v_ptr = k[:, :, n_rope:], v[:, :, n_rope:]
    v_all = torch.cat([v_pool, v_ptr], dim=2)
    scale = 1 / math.sqrt(q.shape[-1])
    if variant == 1:
        logits = torch.cat([q @ k_pool.transpose(-1, -2) * scale + 2 * math.log(2),
                            q @ k_ptr.transpose(-1, -2) * scale], dim=-1)
        return (torch.softmax(logits, dim=-1) @ v_all)[:, 0]
    k_all = torch.cat([k_pool + 2 * math.log(2), k_ptr], dim=2)
    return F.scaled_dot_product_attention(q, k_all, v_all)[:, 0]


def ours(backend, attn: Attention, q_in: torch.Tensor, memory: MemoryReadout, grid: tuple[int, int],
         table: torch.Tensor | None = None) -> torch.Tensor:
    table = axial_rope_table(C, grid[1], grid[0]) if table is None else table
    q = apply_rope(attn.split_heads(attn.q_proj(q_in)), table)
    backend.begin_read(memory)  # as MemoryAttention does once per call
    return backend.cross_attend(0, attn, q, table, memory)[:, 0]


# ---- pooling primitives ------------------------------------------------------------------------------

def test_cell_counts_by_hand() -> None:
    assert cell_counts((3, 5), 2).tolist() == [4, 4, 2, 2, 2, 1]
    assert cell_counts((4, 4), 2).tolist() == [4] * 4
    assert cell_counts((5, 5), 4).tolist() == [16, 4, 4, 1]
    assert cell_counts((3, 3), 1).tolist() == [1] * 9


@pytest.mark.parametrize("grid, window", [((5, 7), 2), ((5, 7), 4), ((6, 4), 2), ((9, 9), 4)])
def test_pool_tokens_is_the_mean_of_each_cell(grid: tuple[int, int], window: int) -> None:
    h, w = grid
    x = torch.randn(2, 3, h * w, 5)
    got = pool_tokens(x, grid, window, cell_counts(grid, window))
    cells = []
    for r in range(0, h, window):
        for c in range(0, w, window):
            idx = [y * w + xx for y in range(r, min(r + window, h)) for xx in range(c, min(c + window, w))]
            cells.append(x[..., idx, :].mean(dim=-2))
    torch.testing.assert_close(got, torch.stack(cells, dim=-2), atol=1e-6, rtol=0)


def test_pool_tokens_equals_avg_pool2d_on_divisible_grids() -> None:
    x = torch.randn(1, 1, 8 * 8, 16)
    ref = F.avg_pool2d(x[0, 0].T.reshape(16, 8, 8), 2, stride=2).reshape(16, 16).T
    torch.testing.assert_close(pool_tokens(x, (8, 8), 2, cell_counts((8, 8), 2))[0, 0], ref, atol=1e-6, rtol=0)


def test_attend_accepts_per_key_bias() -> None:
    q, k, v = torch.randn(1, 1, 4, 8), torch.randn(1, 1, 6, 8), torch.randn(1, 1, 6, 8)
    bias = torch.tensor([0.0, 1.0, 2.0])
    got = attend(q, [KeyValues(k[:, :, :3], v[:, :, :3], bias), KeyValues(k[:, :, 3:], v[:, :, 3:], 0.5)])
    logits = q @ k.transpose(-1, -2) / math.sqrt(8) + torch.tensor([0.0, 1.0, 2.0, 0.5, 0.5, 0.5])
    torch.testing.assert_close(got, torch.softmax(logits, -1) @ v, atol=1e-6, rtol=0)


# ---- against the official formulas -----------------------------------------------------------------

@pytest.mark.parametrize("form, variant", [("exact", 1), ("sdpa", 2)])
@pytest.mark.parametrize("num_frames, num_ptrs", [(1, 4), (2, 0), (2, 8), (4, 16)])
@pytest.mark.parametrize("cache", [False, True])
def test_matches_official_pooled_attention(form: str, variant: int, num_frames: int, num_ptrs: int,
                                           cache: bool) -> None:
    side = 8
    attn = make_attn()
    memory = make_readout(num_frames, (side, side), num_ptrs)
    q_in = torch.randn(1, side * side, C)
    backend = PooledMemoryBackend(window=2, form=form, cache=cache)
    with torch.inference_mode():
        ref = official_reference(attn, q_in, memory, side, variant)
        dense = official_reference(attn, q_in, memory, side, None)
        got = ours(backend, attn, q_in, memory, (side, side))
        again = ours(backend, attn, q_in, memory, (side, side))  # second read: from the cache when on
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=0)
    torch.testing.assert_close(again, ref, atol=2e-5, rtol=0)
    if num_frames == 1:  # official rule: one frame has no more tokens than the queries -> dense
        torch.testing.assert_close(got, dense, atol=2e-5, rtol=0)
    else:
        assert (got - dense).abs().max() > 1e-3, "pooling changed nothing: the test would not see a bug"
    cached = [backend.cache_nbytes(f.entry) > 0 for f in memory.frames]
    assert all(cached) == (cache and num_frames > 1) and any(cached) == all(cached)


def test_variants_differ() -> None:
    attn, side = make_attn(), 8
    memory = make_readout(3, (side, side), 4)
    q_in = torch.randn(1, side * side, C)
    with torch.inference_mode():
        exact = ours(PooledMemoryBackend(form="exact"), attn, q_in, memory, (side, side))
        sdpa = ours(PooledMemoryBackend(form="sdpa"), attn, q_in, memory, (side, side))
    assert (exact - sdpa).abs().max() > 1e-3


# ---- identity and engage rule --------------------------------------------------------------------

@pytest.mark.parametrize("form", ["exact", "sdpa"])
def test_window_one_is_dense(form: str) -> None:
    attn, grid = make_attn(), (6, 5)
    memory = make_readout(3, grid, 8, batch=2)
    q_in = torch.randn(2, 30, C)
    with torch.inference_mode():
        dense = ours(DenseMemoryBackend(), attn, q_in, memory, grid)
        plain = ours(PooledMemoryBackend(window=1, form=form, engage="always", cache=False), attn, q_in, memory, grid)
        cached = PooledMemoryBackend(window=1, form=form, engage="always", cache=True)
        first = ours(cached, attn, q_in, memory, grid)
        second = ours(cached, attn, q_in, memory, grid)
    assert torch.equal(plain, dense) and torch.equal(first, dense) and torch.equal(second, dense)
    assert not any(f.entry.backend_cache for f in memory.frames)  # nothing to cache at window 1


def test_engage_always_pools_a_single_frame() -> None:
    attn, grid = make_attn(), (8, 8)
    memory = make_readout(1, grid, 4)
    q_in = torch.randn(1, 64, C)
    with torch.inference_mode():
        dense = ours(DenseMemoryBackend(), attn, q_in, memory, grid)
        official = ours(PooledMemoryBackend(), attn, q_in, memory, grid)
        always = ours(PooledMemoryBackend(engage="always"), attn, q_in, memory, grid)
    assert torch.equal(official, dense)
    assert (always - dense).abs().max() > 1e-3


# ---- ragged grids --------------------------------------------------------------------------------

@pytest.mark.parametrize("grid, window", [((5, 7), 2), ((7, 7), 4), ((6, 9), 4)])
@pytest.mark.parametrize("cache", [False, True])
def test_ragged_cells_are_exact_for_uniform_cells(grid: tuple[int, int], window: int, cache: bool) -> None:
    """If every cell's tokens share key and value, the exact form must equal dense attention.

    RoPE is switched off (identity rotations) so that uniform inputs give uniform keys. This holds only with
    the per-cell correction ln(count): the uniform ln(window**2) of divisible grids fails on the edge cells.
    """
    attn = make_attn()
    memory = make_readout(2, grid, 4, cell_constant=window)
    n = grid[0] * grid[1]
    q_in = torch.randn(1, n, C)
    identity = torch.ones(n, C // 2, dtype=torch.complex64)
    backend = PooledMemoryBackend(window=window, form="exact", engage="always", cache=cache)
    with torch.inference_mode():
        dense = ours(DenseMemoryBackend(), attn, q_in, memory, grid, identity)
        pooled = ours(backend, attn, q_in, memory, grid, identity)
        q = attn.split_heads(attn.q_proj(q_in))
        groups = [backend.frame_kv(0, attn, f, identity, memory, q) for f in memory.frames]
        uniform = attend(q, [KeyValues(g.k, g.v, math.log(window**2)) for g in groups]
                         + [KeyValues(attn.split_heads(attn.k_proj(memory.ptr_tokens)),
                                      attn.split_heads(attn.v_proj(memory.ptr_tokens)))])[:, 0]
    assert isinstance(groups[0].logit_bias, torch.Tensor)
    torch.testing.assert_close(pooled, dense, atol=2e-5, rtol=0)
    assert (uniform - dense).abs().max() > 1e-4


def test_spec_factory() -> None:
    from effsam2.accel.spec import make_memory_backend

    backend = make_memory_backend(AccelSpec.parse("pool-sdpa", pool_window=4))
    assert isinstance(backend, PooledMemoryBackend) and (backend.window, backend.form) == (4, "sdpa")
    with pytest.raises(ValueError):
        PooledMemoryBackend(window=3)
    with pytest.raises(ValueError):
        PooledMemoryBackend(form="fast")


def test_cache_is_dropped_when_a_frame_leaves_the_read_window() -> None:
    attn, side = make_attn(), 8
    memory = make_readout(4, (side, side), 4)
    q_in = torch.randn(1, side * side, C)
    backend = PooledMemoryBackend()
    with torch.inference_mode():
        ours(backend, attn, q_in, memory, (side, side))
        assert all(backend.cache_nbytes(f.entry) > 0 for f in memory.frames)
        old = memory.frames[1]
        later = MemoryReadout([memory.frames[0], *memory.frames[2:]], memory.ptr_tokens, memory.ptr_pos, 6)
        ours(backend, attn, q_in, later, (side, side))
        other = make_readout(2, (side, side), 0, seed=5)  # another object's read leaves this one alone
        for f in other.frames:
            f.key = ("other", f.frame_idx)
        ours(backend, attn, q_in, other, (side, side))
    assert backend.cache_nbytes(old.entry) == 0
    assert all(backend.cache_nbytes(f.entry) > 0 for f in later.frames)
    # 4 layers would hold 4 key tensors; one layer was read here: pooled keys (16 cells x 256) + tokens (16 x 64)
    assert backend.cache_nbytes(memory.frames[0].entry) == 4 * 16 * (C + MEM)
