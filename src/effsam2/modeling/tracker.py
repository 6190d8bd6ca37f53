"""One tracking step of the SAM 2 family: pick memories, condition features, decode, encode new memory.

Functions here take the model and explicit per-object memory (:class:`ObjectMemory`) and return plain
data; they hold no state between calls. The selection rules are the official ones (conditioning frames,
the last ``num_maskmem - 1`` frames, up to 16 object pointers with signed temporal distances).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from effsam2.modeling.memory import MemoryEntry, MemoryFrame, MemoryOwner, MemoryReadout
from effsam2.modeling.position import sine_1d
from effsam2.modeling.sam2_model import FrameFeatures, HeadOutput, PointPrompt, SAM2Model
from effsam2.timing import MASK_DECODER, MEMORY_ATTENTION, MEMORY_ENCODER, NO_TIMER, SectionTimer


@dataclass
class ObjectMemory:
    """Per-object memory bank: outputs of prompted (conditioning) frames and of tracked frames."""

    cond: dict[int, MemoryEntry] = field(default_factory=dict)
    non_cond: dict[int, MemoryEntry] = field(default_factory=dict)
    # this bank's identity: memory backends key what they cache for it by it, so that two sessions (or two
    # objects) never share or evict each other's caches, even on one model and with equal object ids
    owner: MemoryOwner = field(default_factory=MemoryOwner, compare=False, repr=False)

    def get(self, frame_idx: int) -> MemoryEntry | None:
        entry = self.cond.get(frame_idx)
        return entry if entry is not None else self.non_cond.get(frame_idx)


@dataclass
class StepOutput:
    """Result of one tracking step for B objects."""

    entry: MemoryEntry  # what goes into the memory bank
    high_res_masks: torch.Tensor  # (B, 1, S, S) logits at model resolution
    heads: HeadOutput  # every decoder output (multimask candidates, ious, token attention)


def select_cond_frames(frame_idx: int, cond: dict[int, MemoryEntry],
                       max_num: int) -> tuple[dict[int, MemoryEntry], dict[int, MemoryEntry]]:
    """Up to ``max_num`` conditioning frames closest in time (the nearest before and after first).

    Returns (selected, unselected); ``max_num == -1`` selects all.
    """
    if max_num == -1 or len(cond) <= max_num:
        return cond, {}
    if max_num < 2:
        raise ValueError("max_cond_frames_in_attn must allow at least 2 conditioning frames")
    selected: dict[int, MemoryEntry] = {}
    before = max((t for t in cond if t < frame_idx), default=None)
    if before is not None:
        selected[before] = cond[before]
    after = min((t for t in cond if t >= frame_idx), default=None)
    if after is not None:
        selected[after] = cond[after]
    rest = sorted((t for t in cond if t not in selected), key=lambda t: abs(t - frame_idx))
    for t in rest[: max_num - len(selected)]:
        selected[t] = cond[t]
    return selected, {t: v for t, v in cond.items() if t not in selected}


def _memory_frame(model: SAM2Model, entry: MemoryEntry, frame_idx: int, t_pos: int, is_cond: bool,
                  dtype: torch.dtype, key: tuple) -> MemoryFrame:
    tc = model.config.tracker
    tokens = entry.spatial_tokens(dtype)
    pos = entry.maskmem_pos_enc.flatten(2).permute(0, 2, 1)
    if entry.token_index is not None:
        pos = pos[:, entry.token_index.to(pos.device)]
    t_enc = model.maskmem_tpos_enc[tc.num_maskmem - t_pos - 1]
    pos = pos + t_enc
    return MemoryFrame(entry, frame_idx, t_pos, is_cond, tokens, pos.expand(tokens.shape[0], -1, -1), key,
                       token_index=entry.token_index, t_enc=t_enc.reshape(-1))


def memory_horizon(tc) -> int:
    """How many frames back the spatial memory of a forward step reaches (``TrackerConfig``): the newest slot
    is the previous frame; the other ``num_maskmem - 2`` slots step back ``memory_temporal_stride`` frames
    from a stride-aligned frame at most one stride before it (see :func:`gather_memory`)."""
    return 1 + max(tc.num_maskmem - 2, 0) * tc.memory_temporal_stride


def pointer_horizon(tc) -> int:
    """How many frames back the object pointers of a step reach."""
    return max(tc.max_obj_ptrs_in_encoder - 1, 0)


def readable_horizon(tc) -> int:
    """How many frames back a forward step reads anything of an entry (its memory or its pointer)."""
    return max(memory_horizon(tc), pointer_horizon(tc))


def gather_memory(model: SAM2Model, frame_idx: int, memory: ObjectMemory, num_frames: int | None,
                  reverse: bool, dtype: torch.dtype) -> MemoryReadout:
    """The memory frames and object pointers that frame ``frame_idx`` attends to (official selection)."""
    tc = model.config.tracker
    c, mem_dim = model.config.d_model, model.config.mem_dim
    if not memory.cond:
        raise ValueError("an object needs at least one prompted frame before it can be tracked")
    selected, unselected = select_cond_frames(frame_idx, memory.cond, tc.max_cond_frames_in_attn)
    frames = [_memory_frame(model, e, t, 0, True, dtype, (memory.owner, t)) for t, e in selected.items()]

    stride = 1 if model.training else tc.memory_temporal_stride
    step = -1 if reverse else 1  # direction of "the past"
    for t_pos in range(1, tc.num_maskmem):
        t_rel = tc.num_maskmem - t_pos  # frames back in time
        if t_rel == 1:
            prev = frame_idx - step
        elif not reverse:
            prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
        else:
            prev = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
        entry = memory.non_cond.get(prev, unselected.get(prev))
        if entry is not None:
            # a prompted frame read in a recent-frame slot keeps is_cond (slot semantics live in t_pos)
            is_cond = prev not in memory.non_cond
            frames.append(_memory_frame(model, entry, prev, t_pos, is_cond, dtype, (memory.owner, prev)))

    ptr_tokens = ptr_pos = None
    max_ptrs = tc.max_obj_ptrs_in_encoder if num_frames is None else min(num_frames, tc.max_obj_ptrs_in_encoder)
    if tc.only_obj_ptrs_in_the_past_for_eval and not model.training:
        ptr_cond = {t: e for t, e in selected.items() if (t >= frame_idx if reverse else t <= frame_idx)}
    else:
        ptr_cond = selected
    sign = -1 if reverse else 1
    distances = [((frame_idx - t) * sign if tc.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t))
                 for t in ptr_cond]
    pointers = [e.obj_ptr for e in ptr_cond.values()]
    for t_diff in range(1, max_ptrs):
        t = frame_idx - step * t_diff
        if t < 0 or (num_frames is not None and t >= num_frames):
            break
        entry = memory.non_cond.get(t, unselected.get(t))
        if entry is not None:
            distances.append(t_diff)
            pointers.append(entry.obj_ptr)
    if pointers:
        b = pointers[0].shape[0]
        ptrs = torch.stack(pointers, dim=1).to(dtype)  # (B, P, C)
        if tc.add_tpos_enc_to_obj_ptrs:
            tpos_dim = c if tc.proj_tpos_enc_in_obj_ptrs else mem_dim
            # official: distance / (max_ptrs - 1); guarded for a 1-frame video where that is 0
            rel = torch.tensor(distances, device=ptrs.device) / max(max_ptrs - 1, 1)
            pos = model.obj_ptr_tpos_proj(sine_1d(rel, tpos_dim)).to(dtype)
            pos = pos.unsqueeze(0).expand(b, -1, mem_dim)
        else:
            pos = ptrs.new_zeros(b, len(pointers), mem_dim)
        if mem_dim < c:  # split each pointer into C / mem_dim tokens
            split = c // mem_dim
            ptrs = ptrs.reshape(b, len(pointers) * split, mem_dim)
            pos = pos.repeat_interleave(split, dim=1)
        ptr_tokens, ptr_pos = ptrs, pos
    return MemoryReadout(frames, ptr_tokens, ptr_pos, newest_t_pos=tc.num_maskmem - 1)


def condition_on_memory(model: SAM2Model, frame_idx: int, is_init_cond_frame: bool, feats: FrameFeatures,
                        memory: ObjectMemory, num_frames: int | None, reverse: bool) -> torch.Tensor:
    """Fuse the current (B, C, h, w) features with the object's memory -> (B, C, h, w)."""
    tc = model.config.tracker
    x = feats.vision_feats
    b, c, h, w = x.shape
    if tc.num_maskmem == 0:
        return x
    if is_init_cond_frame:
        if tc.directly_add_no_mem_embed:
            return x + model.no_mem_embed.view(1, c, 1, 1)
        raise NotImplementedError("only directly_add_no_mem_embed=True is supported (every official model)")
    readout = gather_memory(model, frame_idx, memory, num_frames, reverse, x.dtype)
    curr = x.flatten(2).permute(0, 2, 1)
    curr_pos = feats.vision_pos.flatten(2).permute(0, 2, 1)
    out = model.memory_attention(curr, curr_pos, (h, w), readout)
    return out.permute(0, 2, 1).reshape(b, c, h, w)


def track_step(model: SAM2Model, frame_idx: int, feats: FrameFeatures, memory: ObjectMemory, *,
               is_init_cond_frame: bool, points: PointPrompt | None = None,
               mask_inputs: torch.Tensor | None = None, num_frames: int | None = None, reverse: bool = False,
               run_mem_encoder: bool = True, prev_sam_mask_logits: torch.Tensor | None = None,
               return_token_attention: bool = False, memory_dtype: torch.dtype = torch.bfloat16,
               conditioned: torch.Tensor | None = None, timer: SectionTimer = NO_TIMER) -> StepOutput:
    """Segment B objects on one frame from prompts and/or memory; optionally encode the new memory.

    ``mask_inputs`` (B, 1, S, S) is used directly as the output (official behaviour); otherwise the
    features are conditioned on memory (unless ``is_init_cond_frame``) and decoded with ``points`` and
    ``prev_sam_mask_logits`` (B, 1, 4h, 4w) from an earlier interaction. ``conditioned``: the frame's
    memory-conditioned features, already computed by :func:`condition_on_memory` (the SWR shortcut trainer
    needs them as its target), used instead of a second memory-attention pass.
    """
    tc = model.config.tracker
    if mask_inputs is not None and tc.use_mask_input_as_output_without_sam:
        with timer.section(MASK_DECODER):
            heads = model.use_mask_as_output(feats.vision_feats, feats.high_res, mask_inputs)
    else:
        if conditioned is not None:
            pix = conditioned
        else:
            with timer.section(MEMORY_ATTENTION):
                pix = condition_on_memory(model, frame_idx, is_init_cond_frame, feats, memory, num_frames,
                                          reverse)
        if prev_sam_mask_logits is not None:
            mask_inputs = prev_sam_mask_logits
        with timer.section(MASK_DECODER):
            heads = model.forward_sam_heads(pix, points, mask_inputs, feats.high_res,
                                            model.use_multimask(is_init_cond_frame, points),
                                            return_token_attention)
    entry = MemoryEntry(pred_masks=heads.low_res_masks, obj_ptr=heads.obj_ptr,
                        object_score_logits=heads.object_score_logits)
    if run_mem_encoder and tc.num_maskmem > 0:
        with timer.section(MEMORY_ENCODER):
            write_memory(model, entry, feats, heads.high_res_masks, is_mask_from_pts=points is not None,
                         memory_dtype=memory_dtype)
    return StepOutput(entry, heads.high_res_masks, heads)


def write_memory(model: SAM2Model, entry: MemoryEntry, feats: FrameFeatures, high_res_masks: torch.Tensor,
                 is_mask_from_pts: bool, memory_dtype: torch.dtype = torch.bfloat16) -> None:
    """Encode (B, 1, S, S) mask logits into ``entry``'s memory (stored as ``memory_dtype``, bf16 officially)."""
    features, pos = model.encode_memory(feats, high_res_masks, entry.object_score_logits, is_mask_from_pts)
    entry.maskmem_features = features.to(memory_dtype)
    entry.maskmem_pos_enc = pos[0:1]
    entry.grid = (features.shape[-2], features.shape[-1])
    entry.token_index = None
    entry.backend_cache.clear()


def _expand(feats: FrameFeatures, b: int) -> FrameFeatures:
    """One frame's (1, ...) features viewed as a batch of B (no copy)."""
    return FrameFeatures(feats.vision_feats.expand(b, -1, -1, -1), feats.vision_pos.expand(b, -1, -1, -1),
                         None if feats.high_res is None else [h.expand(b, -1, -1, -1) for h in feats.high_res])


def track_objects(model: SAM2Model, frame_idx: int, feats: FrameFeatures, memories: list[ObjectMemory], *,
                  num_frames: int | None = None, reverse: bool = False,
                  return_token_attention: bool = False, memory_dtype: torch.dtype = torch.bfloat16,
                  timer: SectionTimer = NO_TIMER) -> tuple[list[MemoryEntry], StepOutput]:
    """Track B objects on a frame none of them is prompted on, as one batch.

    What :func:`track_step` does for each object (with ``is_init_cond_frame=False``, no prompt, memory
    encoded), computed together: the memory attention's self-attention and FFN, the prompt encoder + mask
    decoder and the memory encoder run once on the batch; each object's cross-attention reads its own memory
    (its own frames, pointers and backend caches, whatever their number), so objects prompted on different
    frames, added mid-video or with pruned (SMR) or pooled memory batch together unchanged. ``feats`` is the
    frame's batch-1 features. Returns each object's new bank entry (batch 1) and the batched step output.
    """
    b = len(memories)
    batch = _expand(feats, b)
    x = batch.vision_feats
    _, c, h, w = x.shape
    with timer.section(MEMORY_ATTENTION):
        readouts = [gather_memory(model, frame_idx, m, num_frames, reverse, x.dtype) for m in memories]
        curr = x.flatten(2).permute(0, 2, 1)
        curr_pos = batch.vision_pos.flatten(2).permute(0, 2, 1)
        pix = model.memory_attention(curr, curr_pos, (h, w), readouts).permute(0, 2, 1).reshape(b, c, h, w)
    with timer.section(MASK_DECODER):
        heads = model.forward_sam_heads(pix, None, None, batch.high_res, model.use_multimask(False, None),
                                        return_token_attention)
    entries = [MemoryEntry(pred_masks=heads.low_res_masks[i:i + 1], obj_ptr=heads.obj_ptr[i:i + 1],
                           object_score_logits=heads.object_score_logits[i:i + 1]) for i in range(b)]
    if model.config.tracker.num_maskmem > 0:
        with timer.section(MEMORY_ENCODER):
            features, pos = model.encode_memory(batch, heads.high_res_masks, heads.object_score_logits,
                                                is_mask_from_pts=False)
            features = features.to(memory_dtype)
            for i, entry in enumerate(entries):
                entry.maskmem_features = features[i:i + 1].clone()  # each object's bank owns its tensor
                entry.maskmem_pos_enc = pos[0:1]
                entry.grid = (features.shape[-2], features.shape[-1])
    batched = MemoryEntry(pred_masks=heads.low_res_masks, obj_ptr=heads.obj_ptr,
                          object_score_logits=heads.object_score_logits)
    return entries, StepOutput(batched, heads.high_res_masks, heads)
