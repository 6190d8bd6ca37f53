"""The benchmark's tracking loop: what a video session does per frame, with every part timed.

Every object is prompted with one click on frame 0; later frames are tracked from memory. Per frame:
encode the image once (``image_encoder`` section), then one ``track_step`` per object on the prompted
frame and one batched ``track_objects`` for all objects on the others, as the ``VideoPredictor`` does (each
times its ``memory_attention``, ``mask_decoder`` and ``memory_encoder`` sections), storing each step's memory
as the official predictor does (bf16), bounded to what the tracker can still read.

Frames are encoded by the model's own frame encoder (``model.frame_encoder``) through a ``PassEncoder``,
the benchmark's adapter: ``DensePassEncoder`` for an encoder without a router, ``RoutedPassEncoder`` (SWR)
which also feeds it the previous frame's step outputs and records the windows it ran.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from effsam2.bench.timer import TRACK_STEP, FrameTimer
from effsam2.modeling.memory import MemoryEntry
from effsam2.modeling.sam2_model import FrameFeatures, PointPrompt, SAM2Model
from effsam2.modeling.tracker import (
    ObjectMemory,
    StepOutput,
    readable_horizon,
    track_objects,
    track_step,
)
from effsam2.timing import IMAGE_ENCODER


class PassEncoder(Protocol):
    """Turns one (1, 3, S, S) frame into features; ``previous`` holds the last frame's outputs per object.

    ``stats(warmup)`` describes the last pass's measured frames for the record (e.g. windows routed).
    """

    wants_token_attention: bool

    def encode(self, frame_idx: int, image: torch.Tensor,
               previous: Sequence[StepOutput] | None) -> FrameFeatures: ...

    def stats(self, warmup: int) -> dict: ...


class DensePassEncoder:
    """The whole image through the whole encoder (every window, every block)."""

    wants_token_attention = False

    def __init__(self, model: SAM2Model) -> None:
        self.model = model

    def encode(self, frame_idx: int, image: torch.Tensor,
               previous: Sequence[StepOutput] | None) -> FrameFeatures:
        return self.model.frame_encoder.encode(self.model, image, None)[0]

    def stats(self, warmup: int) -> dict:
        return {}


class RoutedPassEncoder:
    """SWR: stage 3 runs only the windows picked from the previous frame's outputs (all on frame 0).

    ``routing`` is an ``effsam2.accel.swr.WindowRouting``. Picking the windows (dilating the previous
    masks, the decoder-attention fallback) happens inside ``encode``, so it is charged to the encoder.
    """

    wants_token_attention = True  # the saliency fallback reads the decoder's token->image attention

    def __init__(self, model: SAM2Model, routing) -> None:
        self.model = model
        self.routing = routing
        self.router = routing.new_router()
        self.fractions: list[float] = []  # per frame of the current pass
        self.reasons: list[str] = []

    def encode(self, frame_idx: int, image: torch.Tensor,
               previous: Sequence[StepOutput] | None) -> FrameFeatures:
        if frame_idx == 0:  # a new pass: nothing to route from
            self.router.reset()
            self.fractions, self.reasons = [], []
        if previous is not None:
            self.router.observe(previous)
        feats, selection = self.routing.encode(self.model, image, self.router, prompted=frame_idx == 0)
        if selection is not None:  # SWR says which windows ran; another routed encoder may not
            self.fractions.append(selection.fraction)
            self.reasons.append(selection.reason)
        return feats

    def stats(self, warmup: int) -> dict:
        return {**window_stats(self.fractions, warmup), "swr_reasons": sorted(set(self.reasons[warmup:]))}


def window_stats(fractions: list[float] | None, warmup: int) -> dict:
    """SWR's mean fraction of windows over the measured frames of a pass ({} without routing)."""
    measured = (fractions or [])[warmup:]
    return {"swr_window_fraction": sum(measured) / len(measured)} if measured else {}


def spread_clicks(num_objects: int, image_size: int, device: torch.device | str = "cpu") -> list[PointPrompt]:
    """One positive click per object, spread over the frame (x in (0.2, 0.8) S, rows alternating)."""
    prompts = []
    for i in range(num_objects):
        x = image_size * (0.2 + 0.6 * (i + 0.5) / num_objects)
        y = image_size * (0.4 if i % 2 == 0 else 0.6)
        prompts.append(PointPrompt(torch.tensor([[[x, y]]], device=device),
                                   torch.ones(1, 1, dtype=torch.int32, device=device)))
    return prompts


def drop_unreadable(non_cond: dict, frame_idx: int, horizon: int) -> None:
    """Drop the entries of ``non_cond`` (frame index -> memory) that the frame after ``frame_idx`` cannot read."""
    for t in [t for t in non_cond if frame_idx + 1 - t > horizon]:
        del non_cond[t]


def store_entry(memory: ObjectMemory, frame_idx: int, entry: MemoryEntry, prompted: bool,
                horizon: int) -> None:
    """Keep ``entry``; drop non-conditioning entries that the next frame can no longer read (forward tracking)."""
    (memory.cond if prompted else memory.non_cond)[frame_idx] = entry
    drop_unreadable(memory.non_cond, frame_idx, horizon)


@dataclass
class PassResult:
    """One pass over the clip: per-frame section times and what was segmented."""

    frames: list[dict[str, float]]  # FrameTimer.frames
    masks: torch.Tensor  # (T, objects, h, w) bool: low-res mask logits > 0
    scores: torch.Tensor  # (T, objects) object-score logits
    window_fractions: list[float] | None = None  # SWR: fraction of stage-3 windows run, per frame
    bank_bytes_per_object: float | None = None  # what the memory bank holds at the end of the pass


# A pass as a generator: it yields after each frame (outside the frame's timing) and returns its result,
# so that the runner can interleave the frames of several configurations.
PassSteps = Generator[None, None, PassResult]


def drain(steps: PassSteps) -> PassResult:
    """Run a pass generator to its end and return its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def iter_pass(model: SAM2Model, images: Sequence[torch.Tensor], prompts: Sequence[PointPrompt],
              encoder: PassEncoder, timer: FrameTimer,
              context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> PassSteps:
    """Track ``len(prompts)`` objects through ``images`` (each (1, 3, S, S) on the model's device).

    ``context`` wraps each frame's computation (e.g. autocast); it is entered inside the frame's timing.
    Each pass has its own memory banks, so no backend cache outlives its pass.
    """
    num_frames = len(images)
    horizon = readable_horizon(model.config.tracker)
    memories = [ObjectMemory() for _ in prompts]
    previous: list[StepOutput] | None = None
    masks, scores = [], []
    for t, image in enumerate(images):
        prompted = t == 0
        steps: list[StepOutput] = []
        with timer.frame(), context():
            with timer.section(IMAGE_ENCODER):
                feats = encoder.encode(t, image, previous)
            if prompted or len(memories) == 1:
                for memory, prompt in zip(memories, prompts):
                    with timer.section(TRACK_STEP):
                        step = track_step(model, t, feats, memory, is_init_cond_frame=prompted,
                                          points=prompt if prompted else None, num_frames=num_frames,
                                          return_token_attention=encoder.wants_token_attention, timer=timer)
                    steps.append(step)
                entries = [s.entry for s in steps]
            else:  # every object tracked as one batch, as the VideoPredictor does
                with timer.section(TRACK_STEP):
                    entries, step = track_objects(model, t, feats, memories, num_frames=num_frames,
                                                  return_token_attention=encoder.wants_token_attention,
                                                  timer=timer)
                steps.append(step)
            for memory, entry in zip(memories, entries):
                store_entry(memory, t, entry, prompted, horizon)
        previous = steps
        # read the outputs back after the frame's timing closed (a device->host copy would sync)
        masks.append(torch.cat([e.pred_masks[:, 0] > 0 for e in entries]).cpu())
        scores.append(torch.cat([e.object_score_logits[:, 0] for e in entries]).float().cpu())
        yield
    bank = sum(memory_bank_bytes(m) for m in memories) / max(len(memories), 1)
    return PassResult(timer.frames, torch.stack(masks), torch.stack(scores), bank_bytes_per_object=bank)


def _tensor_bytes(value) -> int:
    """Bytes of the tensors in a value: a tensor, or containers / dataclasses holding tensors."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(_tensor_bytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    return 0


def memory_bank_bytes(memory: ObjectMemory) -> int:
    """What one object's bank stores: spatial memory (as kept: bf16, pruned by SMR), pointers, and what the
    memory backend cached with each entry (pooled keys/values, SMR patterns). The position encoding,
    shared by every frame, is not counted."""
    total = 0
    for entry in (*memory.cond.values(), *memory.non_cond.values()):
        total += _tensor_bytes([entry.maskmem_features, entry.token_index, entry.obj_ptr, entry.backend_cache])
    return total
