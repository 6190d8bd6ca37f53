"""EfficientTAM pooled memory cross-attention, as a memory-attention backend usable with any model.

Each memory frame's spatial keys (RoPE already applied) and values are averaged over ``window x window``
cells of its grid (row-major tokens, 64x64 -> 32x32 cells for window 2); object-pointer tokens stay whole.
A pooled key stands for the ``n`` tokens of its cell. If those tokens had the same key, dense attention
would weigh it ``n`` times, i.e. add ln(n) to its logit; the two official forms add that correction:

* ``form="exact"`` (EfficientRoPEAttention1): logits q.k/sqrt(d) + ln(n) on pooled keys, one softmax over
  [pooled keys, pointer keys]. The bias travels as ``KeyValues.logit_bias``.
* ``form="sdpa"`` (EfficientRoPEAttention2): ln(n) is added to every *component* of the pooled key vectors,
  then plain attention. The logit shift is ln(n) * sum(q) / sqrt(d), query dependent: not the same numbers.

Window 1 is the identity: both forms compute exactly the dense attention.

**Ragged grids.** When the grid side is not a multiple of the window, the official code fails; here the
last row/column of cells is smaller, each cell averages the tokens it actually holds, and its correction
is ln(its token count) (a per-key bias tensor for the exact form). For grids that divide, every count is
window**2 and this is the official computation.

**When pooling engages.** The official classes pool only when the memory holds more spatial tokens than
there are queries (2+ memory frames on equal grids); with one frame they compute dense attention.
``engage="official"`` (the default) reproduces that, for parity with official checkpoints and outputs;
``engage="always"`` pools every read (cheaper for single-frame reads, but then the first tracked frame
after a prompt is no longer exact).

**Pool once per memory entry** (``cache=True``, inference only). The official code re-projects, rotates and
pools every memory frame at every read, for every layer. A frame's key also holds its temporal encoding
t (``maskmem_tpos_enc`` of its slot), which changes from read to read; k_proj and RoPE are linear, so

    pool_c(R_i (W (m_i + p_i + t) + b)) = pool_c(R_i (W (m_i + p_i) + b)) + (mean_{i in c} R_i) (W t)

(R_i is token i's complex rotation, acting per channel pair). The first term is computed once per entry and
layer and kept in ``MemoryEntry.backend_cache``; the mean rotation of each cell depends only on the grid.
Values have no temporal part and pooling commutes with the affine v_proj (the mean of affine images is the
affine image of the mean; also used without the cache), so the entry keeps the pooled
memory tokens (C_mem channels) and projects them at read time (a quarter of the dense projection for
window 2). The cache is filled at the first read of the entry (in tracking: the next frame) and dropped
when the entry is rewritten (``write_memory`` clears ``backend_cache``) or when a read of the same object
(``MemoryFrame.key[0]``, the bank's ``MemoryOwner``) no longer includes it: the official bank keeps every
frame's memory, but only the last few are read, and caches are ~8x larger than the bf16 features, so they
must not outlive the attention window. Each bank (one object in one session) is its own owner, so sessions
sharing a model never evict each other's caches; the backend holds owners weakly.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from effsam2.accel.plugins import BuiltinAcceleration
from effsam2.errors import Effsam2Error
from effsam2.modeling.attention import Attention
from effsam2.modeling.memory import MemoryEntry, MemoryFrame, MemoryReadout
from effsam2.modeling.memory_attention import DenseMemoryBackend, KeyValues
from effsam2.modeling.position import apply_rope, building_cached_tables

FORMS = ("exact", "sdpa")
ENGAGE = ("official", "always")
WINDOWS = (1, 2, 4)


def pool_window(number: float) -> int:
    """The ``@`` setting of pool / pool-sdpa: the window side."""
    if number != int(number):
        raise Effsam2Error(f"the pool window must be one of {', '.join(map(str, WINDOWS))}, got {number:g}")
    return int(number)


def check_pool_window(window: int) -> None:
    if window not in WINDOWS:
        raise Effsam2Error(f"pool window must be one of {', '.join(map(str, WINDOWS))}, got {window}")


POOL = BuiltinAcceleration(
    "pool", "memory cross-attention on 2x2 (or 4x4) pooled memory keys and values, exact (EfficientTAM)",
    slot="memory", setting="pool_window", convert=pool_window, checks={"pool_window": check_pool_window})
POOL_SDPA = BuiltinAcceleration(
    "pool-sdpa", "the same in EfficientTAM's fused form (bias folded into the keys, one SDPA call)",
    slot="memory", setting="pool_window", convert=pool_window, checks={"pool_window": check_pool_window})


def cell_counts(grid: tuple[int, int], window: int, device: torch.device | None = None) -> torch.Tensor:
    """(cells,) float32 number of grid tokens in each window x window cell (row-major cells; ragged edges)."""
    h, w = grid
    rows = torch.clamp(h - torch.arange(0, h, window, device=device), max=window)
    cols = torch.clamp(w - torch.arange(0, w, window, device=device), max=window)
    return (rows[:, None] * cols[None, :]).flatten().float()


def pool_tokens(x: torch.Tensor, grid: tuple[int, int], window: int, counts: torch.Tensor) -> torch.Tensor:
    """Average (..., h*w, d) row-major grid tokens over window x window cells -> (..., cells, d).

    ``counts`` (cells,) is :func:`cell_counts`; cells cut by the grid edge average only their own tokens.
    """
    if window == 1:
        return x
    h, w = grid
    lead, d = x.shape[:-2], x.shape[-1]
    if x.shape[-2] != h * w:
        raise ValueError(f"{x.shape[-2]} tokens do not form a {h}x{w} grid")
    hc, wc = -(-h // window), -(-w // window)
    x = x.reshape(-1, h, w, d)
    if (hc * window, wc * window) != (h, w):  # zero tokens add nothing to the sums
        x = F.pad(x, (0, 0, 0, wc * window - w, 0, hc * window - h))
    sums = x.reshape(-1, hc, window, wc, window, d).sum(dim=(2, 4))
    return sums.reshape(*lead, hc * wc, d) / counts.to(sums.dtype)[:, None]


def mean_rotation(table: torch.Tensor, grid: tuple[int, int], window: int, counts: torch.Tensor) -> torch.Tensor:
    """(h*w, d/2) complex RoPE rotations -> (cells, d/2) complex mean rotation of each cell."""
    pooled = pool_tokens(torch.view_as_real(table).flatten(-2), grid, window, counts)
    return torch.view_as_complex(pooled.reshape(*pooled.shape[:-1], -1, 2).contiguous())


def frame_grid(frame: MemoryFrame) -> tuple[int, int]:
    entry = frame.entry
    if entry.grid is not None:
        return entry.grid
    if entry.maskmem_features is not None and entry.maskmem_features.dim() == 4:
        return tuple(entry.maskmem_features.shape[-2:])
    raise ValueError("pooled memory attention needs the grid of each memory frame")


@dataclass
class PooledEntryCache:
    """What the backend keeps per memory entry (B objects): computed once, reused at every read."""

    tokens: torch.Tensor  # (B, cells, C_mem) pooled memory tokens: values = v_proj(tokens)
    keys: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (B, heads, cells, d), no t_enc part

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [self.tokens, *self.keys.values()])


@dataclass(frozen=True)
class CellTable:
    """Per grid: token count of each cell, the cells' mean RoPE rotations and the pooled-logit bias."""

    counts: torch.Tensor  # (cells,)
    rotation: torch.Tensor  # (cells, d/2) complex
    log_counts: torch.Tensor  # (cells,) ln(tokens in the cell)
    uniform_bias: float | None  # ln(window area) when every cell is full (a Python float: no device sync)

    @classmethod
    def build(cls, grid: tuple[int, int], window: int, table: torch.Tensor) -> CellTable:
        counts = cell_counts(grid, window, table.device)
        uniform = bool((counts == counts[0]).all())
        return cls(counts, mean_rotation(table, grid, window, counts), counts.log(),
                   math.log(counts[0].item()) if uniform else None)


class PooledMemoryBackend(DenseMemoryBackend):
    """Pooled memory cross-attention (EfficientTAM); see the module docstring for the math.

    Args:
        window: cell side (1 = dense, 2 = official, 4 = coarser).
        form: "exact" (logit bias, EfficientRoPEAttention1) or "sdpa" (key-vector bias, ...Attention2).
        engage: "official" (pool only when spatial memory tokens outnumber the queries) or "always".
        cache: keep pooled per-layer keys and pooled tokens per memory entry (inference only).
    """

    name = "pooled"

    def __init__(self, window: int = 2, form: str = "exact", engage: str = "official", cache: bool = True) -> None:
        if window not in WINDOWS:
            raise ValueError(f"pool window must be one of {WINDOWS}, got {window}")
        if form not in FORMS:
            raise ValueError(f"pooled form must be one of {FORMS}, got {form!r}")
        if engage not in ENGAGE:
            raise ValueError(f"engage must be one of {ENGAGE}, got {engage!r}")
        self.window = window
        self.form = form
        self.engage = engage
        self.cache = cache
        # identifies this backend's data in MemoryEntry.backend_cache (identity, never reused while alive)
        self._cache_key = object()
        self._cell_tables: dict[tuple, tuple[torch.Tensor, CellTable]] = {}
        # owner (a bank's MemoryOwner, held weakly; other hashable keys, as hand-built frames use, strongly)
        # -> entries holding a cache of this backend, to drop the caches nobody reads any more
        self._held: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._held_by_key: dict[object, dict[int, weakref.ref]] = {}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(window={self.window}, form={self.form!r}, engage={self.engage!r}, "
                f"cache={self.cache})")

    def engages(self, memory: MemoryReadout, q: torch.Tensor) -> bool:
        """Whether this read pools (official rule: more spatial memory tokens than queries)."""
        return self.engage == "always" or memory.num_spatial_tokens() > q.shape[-2]

    def cells(self, grid: tuple[int, int], table: torch.Tensor) -> CellTable:
        """The cells of a grid (counts, mean rotations, logit bias), computed once per grid and device."""
        key = (grid, table.device)
        cached = self._cell_tables.get(key)
        if cached is None or cached[0] is not table:  # the model's RoPE tables are reused objects
            with building_cached_tables():
                cached = self._cell_tables[key] = table, CellTable.build(grid, self.window, table)
        return cached[1]

    def begin_read(self, memory: MemoryReadout) -> None:
        if self._held or self._held_by_key:
            self._drop_unread(memory)

    def _holdings(self, owner: object) -> dict:
        """The weak registry for an owner that can be weakly referenced (a ``MemoryOwner``), else the plain one."""
        try:
            weakref.ref(owner)
        except TypeError:
            return self._held_by_key
        return self._held

    def frame_kv(self, layer_idx: int, attn: Attention, frame: MemoryFrame, table: torch.Tensor,
                 memory: MemoryReadout, q: torch.Tensor) -> KeyValues:
        if self.window == 1 or frame.token_index is not None or not self.engages(memory, q):
            # window 1 pools nothing: the dense computation itself (bit for bit, nothing cached)
            return super().frame_kv(layer_idx, attn, frame, table, memory, q)
        grid = frame_grid(frame)
        if table.shape[0] != grid[0] * grid[1]:
            raise ValueError(f"memory grid {grid} does not match the RoPE table of {table.shape[0]} positions")
        cells = self.cells(grid, table)
        counts = cells.counts
        store = self._entry_cache(frame, counts) if self._can_cache(frame) else None
        if store is not None:
            k, v = self._cached_kv(store, layer_idx, attn, frame, table, grid, counts, cells.rotation)
        else:  # the official order: project, rotate, pool (values: pool first, v_proj is affine)
            k = attn.split_heads(attn.k_proj(frame.tokens + frame.pos))
            k = pool_tokens(apply_rope(k, table), grid, self.window, counts)
            v = attn.split_heads(attn.v_proj(pool_tokens(frame.tokens, grid, self.window, counts)))
        if self.form == "sdpa":
            return KeyValues(k + cells.log_counts.to(k.dtype)[:, None], v)
        bias = cells.uniform_bias if cells.uniform_bias is not None else cells.log_counts.to(k.dtype)
        return KeyValues(k, v, bias)

    # ---- pool once per memory entry -------------------------------------------------------------------
    def _can_cache(self, frame: MemoryFrame) -> bool:
        # t_enc lets the read add the temporal part; under autograd a cached graph would leak across steps
        return self.cache and frame.t_enc is not None and not torch.is_grad_enabled()

    def _entry_cache(self, frame: MemoryFrame, counts: torch.Tensor) -> PooledEntryCache:
        entry, tokens = frame.entry, frame.tokens
        store = entry.backend_cache.get(self._cache_key)
        if store is None or store.tokens.dtype != tokens.dtype or store.tokens.device != tokens.device \
                or store.tokens.shape[0] != tokens.shape[0]:
            store = PooledEntryCache(pool_tokens(tokens, frame_grid(frame), self.window, counts))
            entry.backend_cache[self._cache_key] = store
            owner = _owner(frame)
            if owner is not None:  # a frame built without an owner keeps its cache until rewritten
                self._holdings(owner).setdefault(owner, {})[id(entry)] = weakref.ref(entry)
        return store

    def _drop_unread(self, memory: MemoryReadout) -> None:
        """Free the caches of this object's entries that the current read no longer includes."""
        if not memory.frames:
            return
        owner = _owner(memory.frames[0])
        held = None if owner is None else self._holdings(owner).get(owner)
        if not held:
            return
        live = {id(f.entry) for f in memory.frames}
        for key in [k for k in held if k not in live]:
            entry = held.pop(key)()
            if entry is not None:
                entry.backend_cache.pop(self._cache_key, None)

    def _cached_kv(self, store: PooledEntryCache, layer_idx: int, attn: Attention, frame: MemoryFrame,
                   table: torch.Tensor, grid: tuple[int, int], counts: torch.Tensor,
                   rotation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        base = store.keys.get(layer_idx)
        if base is None:
            spatial = frame.entry.maskmem_pos_enc.flatten(2).transpose(1, 2).to(frame.tokens.dtype)
            k = attn.split_heads(attn.k_proj(frame.tokens + spatial))
            base = pool_tokens(apply_rope(k, table), grid, self.window, counts)
            store.keys[layer_idx] = base
        # temporal part: (mean rotation of the cell) * (W_k t), no bias (it is in the base already)
        u = attn.split_heads(F.linear(frame.t_enc.to(base.dtype), attn.k_proj.weight).view(1, 1, -1))
        u = torch.view_as_complex(u.float().reshape(*u.shape[:-1], -1, 2))  # (1, heads, 1, d/2)
        k = base + torch.view_as_real(u * rotation).flatten(-2).to(base.dtype)
        v = attn.split_heads(attn.v_proj(store.tokens))
        return k, v

    def cache_nbytes(self, entry: MemoryEntry) -> int:
        """Bytes this backend keeps in ``entry`` (0 when nothing was cached)."""
        store = entry.backend_cache.get(self._cache_key)
        return 0 if store is None else store.nbytes()


def _owner(frame: MemoryFrame) -> object:
    """The bank a memory frame belongs to (its ``MemoryOwner``), None when not given."""
    return frame.key[0] if frame.key else None


def make_pooled_backend(spec) -> PooledMemoryBackend:
    """The backend of an ``AccelSpec`` with ``pool`` set ("exact" or "sdpa") and ``pool_window``."""
    return PooledMemoryBackend(window=spec.pool_window, form=spec.pool)
