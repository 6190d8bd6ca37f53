"""Sparse Memory Retrieval (SMR, Efficient-SAM2): re-read old memory frames through a few salient tokens.

What the official implementation (github.com/jingjing0419/Efficient-SAM2, as read for this module) does:

* Saliency. Each of the 4 memory-attention layers' cross-attention hands back its pre-softmax logits
  ``q k^T / sqrt(d)`` (RoPE applied to q and k) for batch element 0 and head 0 only (SAM 2 has one head),
  restricted to the last 4096 spatial keys before the object-pointer tokens, i.e. the newest memory frame
  (``frame_idx - 1``). After the step, ``softmax`` is taken over those 4096 keys alone (the frame's own
  tokens, not the share of the full softmax over every memory token), averaged over all 4096 queries, and
  ``topk`` with ``k = int((1 - s) * 4096)`` (204 at s = 0.95) gives a boolean mask. So a frame's pattern
  comes from the step where it is the newest memory frame, its first recall, and each layer has its own.
* FIFO. The 4 per-layer masks of each step are pushed into a per-object list of capacity 5 (hard-coded,
  ``num_maskmem - 2`` for 7); pruning applies only once the list is full. The 5 masks, concatenated in
  FIFO order, are applied by position to the keys ``[4096, 6 * 4096)``: everything after exactly one
  prompt frame (hard-coded ``4096 * 1``) and before the newest frame. The prompt frame, the newest frame and
  the object pointers stay whole. Kept tokens are gathered from the raw memory (+ position encoding)
  before the k/v projections, and their RoPE rotations are gathered with them. The memory bank stays full.
* Caveats of the positional scheme, as read: the first step's pattern is the prompt frame's (it was the
  last frame then), so on the first step with a full FIFO the masks are one frame off and the newest
  frame is pruned; the per-object masks are rebuilt once per frame after the object loop, from the loop
  variable's last value. It holds in the steady state of single-object, forward, stride-1 tracking with
  one prompt frame.
* Ablations in the code: ``random_mask`` (Bernoulli keep mask), ``uniform_mask`` (evenly spaced indices),
  and a cumulative-mass threshold instead of top-k.

What this module does: patterns are cached on the memory entry they describe (``MemoryEntry.backend_cache``,
one entry per object per frame, dropped when the entry is rewritten), so any ``num_maskmem``, any number
of prompt frames, memory stride, reverse tracking and any number of objects need no positional
bookkeeping; a frame without a pattern is read whole and gets one (its first recall, wherever its slot).
At a frame's first sparse read its stored memory is compacted to the union over layers of its kept tokens
(``MemoryEntry.token_index``), so the bank shrinks too. Frames kept whole go to an inner backend (dense,
or EfficientTAM pooling), so SMR composes with pooled memory attention; s = 0 is exactly the inner backend.
The policy (which frames stay whole, how many and which tokens) is an object from
:mod:`effsam2.accel.smr_policy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from effsam2.accel.plugins import BuiltinAcceleration
from effsam2.accel.pooled_memory import make_pooled_backend
from effsam2.accel.smr_policy import RandomSelection, TopKSaliency, UniformSelection
from effsam2.errors import Effsam2Error
from effsam2.modeling.attention import Attention
from effsam2.modeling.memory import MemoryEntry, MemoryFrame, MemoryReadout
from effsam2.modeling.memory_attention import (
    DenseMemoryBackend,
    KeyValues,
    attend,
    project_frame,
    project_pointers,
)
from effsam2.modeling.position import apply_rope

CACHE_KEY = "smr"  # the backend's slot in MemoryEntry.backend_cache
_QUERY_CHUNK = 1024  # saliency is accumulated over query chunks to bound the (chunk x K) logits buffer


@dataclass
class FramePattern:
    """The kept tokens of one memory entry (B objects' frame), per memory-attention layer.

    ``grid_index[layer]`` is (B, k) ascending indices into the frame's h*w grid (row-major).
    """

    grid_index: dict[int, torch.Tensor] = field(default_factory=dict)
    retired: bool = False  # the entry has been read sparse once: compacted, whole-frame caches dropped

    def union(self) -> torch.Tensor:
        """(U,) ascending grid indices kept by any layer for any of the B objects."""
        return torch.unique(torch.cat([g.flatten() for g in self.grid_index.values()]))


def frame_saliency(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Attention of queries q (B, heads, Nq, d) over one frame's keys k (B, heads, K, d) -> (B, K) float32.

    Softmax over the frame's own K keys, then the mean over heads and queries (rows sum to 1).
    """
    b, heads, nq, d = q.shape
    kt = k.float().transpose(-2, -1)
    scaled_q = q.float() * d ** -0.5  # scaling the (Nq, d) queries is cheaper than the (Nq, K) logits
    total = torch.zeros(b, k.shape[2], dtype=torch.float32, device=q.device)
    for chunk in scaled_q.split(_QUERY_CHUNK, dim=2):
        total += torch.softmax(chunk @ kt, dim=-1).sum(dim=(1, 2))
    return total / (heads * nq)


def _gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, N, C), index (B, k) -> (B, k, C)."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def stored_bytes(entry: MemoryEntry) -> int:
    """Bytes an entry's spatial memory occupies: features, kept-token index and cached SMR patterns."""
    tensors = [entry.maskmem_features, entry.token_index]
    pattern = entry.backend_cache.get(CACHE_KEY)
    if pattern is not None:
        tensors += list(pattern.grid_index.values())
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


class SparseMemoryBackend(DenseMemoryBackend):
    """Memory cross-attention that reads old memory frames through cached salient tokens (SMR).

    Per layer and memory frame: frames the policy keeps whole, and frames without a pattern yet (their
    first recall), are read by ``inner``; a non-prompt frame read whole without a pattern gets one from
    this read's attention (``policy.select``). Later reads gather only the pattern's tokens; runs of
    consecutive sparse frames are projected together.

    With ``compact`` the entry's stored features shrink, at its first sparse read, to the union over layers
    (and over the B objects of a batched entry) of the kept tokens; this step's frames keep reading the
    tokens gathered before (``MemoryFrame.token_index`` is a snapshot). Compaction assumes that a frame
    read sparse on one layer is read sparse on all of them (true for every policy here): a frame read
    whole again later (e.g. in the newest slot when tracking back over already tracked frames) then gets
    its stored tokens only. Use ``compact=False`` to keep every token in the bank.
    Patterns live in ``MemoryEntry.backend_cache``: rewriting an entry (``write_memory``) drops them.
    """

    name = "sparse"

    def __init__(self, policy=None, inner: DenseMemoryBackend | None = None, compact: bool = True) -> None:
        self.policy = policy if policy is not None else TopKSaliency()
        self.inner = inner if inner is not None else DenseMemoryBackend()
        self.compact = compact

    def begin_read(self, memory: MemoryReadout) -> None:
        self.inner.begin_read(memory)

    def cross_attend(self, layer_idx: int, attn: Attention, q: torch.Tensor, table: torch.Tensor,
                     memory: MemoryReadout) -> torch.Tensor:
        """q (B, heads, Nq, d) already rotated -> attention output (B, heads, Nq, d)."""
        groups: list[KeyValues] = []
        run: list[tuple[MemoryFrame, FramePattern]] = []  # consecutive frames read sparse: projected together
        for frame in memory.frames:
            pattern = self._sparse_pattern(layer_idx, frame, memory)
            if pattern is not None:
                run.append((frame, pattern))
                continue
            if run:
                groups.append(self._sparse_kv(layer_idx, attn, run, table))
                run = []
            groups.append(self._whole_kv(layer_idx, attn, frame, table, memory, q))
        if run:
            groups.append(self._sparse_kv(layer_idx, attn, run, table))
        pointers = project_pointers(attn, memory)
        if pointers is not None:
            groups.append(KeyValues(*pointers))
        return attend(q, groups)

    def _sparse_pattern(self, layer_idx: int, frame: MemoryFrame, memory: MemoryReadout) -> FramePattern | None:
        """The frame's pattern when this layer reads it sparse; None when it reads it whole."""
        pattern: FramePattern | None = frame.entry.backend_cache.get(CACHE_KEY)
        if pattern is None or layer_idx not in pattern.grid_index:
            return None  # first recall (or a prompt frame): read whole
        if frame.token_index is None and pattern.grid_index[layer_idx].shape[1] == frame.tokens.shape[1]:
            return None  # the pattern keeps every token: that is the whole frame (s = 0 is the inner backend)
        return None if self.policy.keep_whole(layer_idx, frame, memory) else pattern

    def _whole_kv(self, layer_idx: int, attn: Attention, frame: MemoryFrame, table: torch.Tensor,
                  memory: MemoryReadout, q: torch.Tensor) -> KeyValues:
        kv = self.inner.frame_kv(layer_idx, attn, frame, table, memory, q)
        pattern: FramePattern | None = frame.entry.backend_cache.get(CACHE_KEY)
        if (pattern is None or layer_idx not in pattern.grid_index) and self.policy.picks_pattern(frame):
            self._pick(layer_idx, attn, frame, table, q, kv)
        return kv

    def _pick(self, layer_idx: int, attn: Attention, frame: MemoryFrame, table: torch.Tensor, q: torch.Tensor,
              kv: KeyValues) -> None:
        """Choose and cache this layer's kept tokens of ``frame`` from this (first) recall."""
        saliency = None
        if self.policy.uses_saliency:
            # reuse the inner backend's keys when they are the frame's own tokens (dense); pooled keys are not
            bias = kv.logit_bias
            one_to_one = kv.k.shape[2] == frame.tokens.shape[1] and not isinstance(bias, torch.Tensor) and bias == 0
            keys = kv.k if one_to_one else project_frame(attn, frame, table)[0]
            saliency = frame_saliency(q, keys)
        index = self.policy.select(layer_idx, frame, saliency).to(frame.tokens.device)
        if frame.token_index is not None:  # the entry was already pruned: map stored positions to the grid
            index = frame.token_index.to(index.device)[index]
        pattern = frame.entry.backend_cache.setdefault(CACHE_KEY, FramePattern())
        pattern.grid_index[layer_idx] = index

    def _sparse_kv(self, layer_idx: int, attn: Attention, run: list[tuple[MemoryFrame, FramePattern]],
                   table: torch.Tensor) -> KeyValues:
        """Keys/values of the kept tokens of consecutive frames, gathered from the raw memory and projected
        once (one projection for the run instead of one per frame)."""
        tokens, pos, grids = [], [], []
        for frame, pattern in run:
            grid = pattern.grid_index[layer_idx]  # (B, k)
            if frame.token_index is None:
                stored = grid  # this step's tokens are the full grid
            else:  # tokens are the compacted ones: find each kept grid index among them
                stored = torch.searchsorted(frame.token_index.to(grid.device), grid)
            if not pattern.retired:
                _retire(frame.entry, pattern, self.compact)
            tokens.append(_gather_rows(frame.tokens, stored))
            pos.append(_gather_rows(frame.pos, stored))
            grids.append(grid)
        tokens, pos, grid = (torch.cat(x, dim=1) if len(x) > 1 else x[0] for x in (tokens, pos, grids))
        k = attn.split_heads(attn.k_proj(tokens + pos))
        v = attn.split_heads(attn.v_proj(tokens))
        rope = table[grid.to(table.device)].unsqueeze(1)  # (B, 1, k, d/2): each kept token keeps its position
        return KeyValues(apply_rope(k, rope), v)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(policy={self.policy!r}, inner={self.inner!r}, compact={self.compact})"


def _retire(entry: MemoryEntry, pattern: FramePattern, compact: bool) -> None:
    """At an entry's first sparse read: drop what other backends derived from its whole frame (e.g. pooled
    keys, which would otherwise outlive their use: the inner backend no longer sees this entry), and with
    ``compact`` keep only the union of the pattern's tokens: (B, C, h, w) -> (B, C, U) + token_index (U,)."""
    pattern.retired = True
    for key in [k for k in entry.backend_cache if k != CACHE_KEY]:
        del entry.backend_cache[key]
    if not compact or entry.token_index is not None:
        return  # asked to keep the bank whole, or pruned by someone else already
    union = pattern.union()
    feats = entry.maskmem_features
    if union.numel() >= feats.shape[2] * feats.shape[3]:
        return  # every token is kept by some layer: nothing to save
    entry.maskmem_features = feats.flatten(2).index_select(2, union.to(feats.device)).contiguous()
    entry.token_index = union


# token-selection policies by name: the paper's top-k of the first-recall saliency, and its ablations
POLICIES = {"topk": TopKSaliency, "random": RandomSelection, "uniform": UniformSelection}


def check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise Effsam2Error(f"SMR sparsity must be in [0, 1), got {sparsity:g}")


def check_policy(name: str) -> None:
    if name not in POLICIES:
        raise Effsam2Error(f"unknown SMR policy {name!r}; known: {', '.join(POLICIES)}")


SMR = BuiltinAcceleration(
    "smr", "Sparse Memory Retrieval: each memory frame's salient tokens, picked at its first recall, reused",
    slot="memory", setting="smr_sparsity", checks={"smr_sparsity": check_sparsity, "smr_policy": check_policy},
    policy="smr_policy")


def make_sparse_backend(spec) -> DenseMemoryBackend:
    """The SMR backend for an :class:`~effsam2.accel.spec.AccelSpec` (with pooled whole frames for ``pool+smr``).

    At sparsity 0 every token is kept, which is the inner backend itself: it is returned as is, without
    computing and storing patterns that would keep everything.
    """
    if spec.pool is not None:
        inner = make_pooled_backend(spec)
    else:
        inner = DenseMemoryBackend()
    if spec.smr_sparsity == 0:
        return inner
    return SparseMemoryBackend(smr_policy(spec.smr_policy, spec.smr_sparsity), inner=inner)


def smr_policy(name: str, sparsity: float):
    """The policy object of an :class:`~effsam2.accel.spec.AccelSpec` ``smr_policy`` name."""
    return POLICIES[name](sparsity)
