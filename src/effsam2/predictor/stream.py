"""``StreamTracker``: track objects in a live or endless stream, one frame at a time, in bounded memory.

    tracker = StreamTracker(model)
    tracker.step(first_frame)                       # no object yet: nothing is tracked
    tracker.add_new_points_or_box(obj_id=1, points=[[x, y]], labels=[1])  # prompts the latest frame
    for frame in camera:
        frame_idx, obj_ids, mask_logits = tracker.step(frame)

Each step runs exactly what :class:`VideoPredictor` runs for a forward propagation, so a stream gives the
same masks as the offline predictor on the same clip (for clips of 16+ frames; the offline predictor
limits object pointers to the clip length). After each step, frames and memory the tracker can no longer
read are dropped: the last ``num_maskmem - 1`` memory frames, the last ``max_obj_ptrs_in_encoder - 1``
object pointers and the prompted frames are all it keeps.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from effsam2.accel.window_routing import RouterConfig
from effsam2.errors import VideoError
from effsam2.io.convert import image_to_rgb, to_rgb_uint8
from effsam2.io.frames import FrameIndexError, FrameSource
from effsam2.modeling.sam2_model import SAM2Model
from effsam2.modeling.tracker import memory_horizon, pointer_horizon, readable_horizon
from effsam2.predictor.state import InferenceState
from effsam2.predictor.video import VideoPredictor
from effsam2.timing import NO_TIMER, SectionTimer


class StreamFrames(FrameSource):
    """A growing frame source that keeps only the most recent ``keep`` frames."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self.name = "<stream>"
        self.fps = None
        self.height = self.width = 0
        self._count = 0
        self._recent: OrderedDict[int, np.ndarray] = OrderedDict()

    @property
    def frame_names(self) -> list[str]:
        return [f"{i:05d}" for i in range(self._count)]

    def append(self, frame) -> int:
        """Add the next frame (numpy array or PIL image); returns its index."""
        what = f"stream frame {self._count}"
        rgb = to_rgb_uint8(frame, what) if isinstance(frame, np.ndarray) else image_to_rgb(frame, what)
        if self._count == 0:
            self.height, self.width = rgb.shape[:2]
        elif rgb.shape[:2] != (self.height, self.width):
            raise VideoError(f"{what} is {rgb.shape[1]}x{rgb.shape[0]} but the stream is "
                             f"{self.width}x{self.height} (all frames must have the same size)")
        self._recent[self._count] = rgb
        while len(self._recent) > self.keep:
            self._recent.popitem(last=False)
        self._count += 1
        return self._count - 1

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Bytes of the frames still kept."""
        return sum(f.nbytes for f in self._recent.values())

    def _get(self, idx: int) -> np.ndarray:
        if idx not in self._recent:
            raise FrameIndexError(f"stream frame {idx} was dropped (only the last {self.keep} frames are kept)")
        return self._recent[idx].copy()


class StreamTracker:
    def __init__(self, model: SAM2Model, *, memory_dtype: torch.dtype = torch.bfloat16,
                 timer: SectionTimer = NO_TIMER, router_config: RouterConfig | None = None,
                 dtype: str | None = None) -> None:
        self.predictor = VideoPredictor(model, memory_dtype=memory_dtype, timer=timer, router_config=router_config,
                                        dtype=dtype)
        self.frames = StreamFrames()
        self.state: InferenceState | None = None
        tc = model.config.tracker
        # how far back the next step reads: spatial memories and object pointers (the tracker's rule)
        self.memory_reach = memory_horizon(tc)
        self.pointer_reach = pointer_horizon(tc)
        self.entry_reach = readable_horizon(tc)  # memory or pointer: beyond it nothing of an entry is read

    @property
    def frame_idx(self) -> int:
        """Index of the latest frame (the one prompts apply to)."""
        if self.state is None:
            raise VideoError("the stream has no frame yet: call step(frame) first")
        return len(self.frames) - 1

    @torch.inference_mode()
    def step(self, frame) -> tuple[int, list[int], torch.Tensor]:
        """Add the next frame and track every prompted object on it.

        Returns ``(frame_idx, obj_ids, mask_logits)`` with (num_objects, 1, H, W) logits (empty before any prompt).
        """
        idx = self.frames.append(frame)
        if self.state is None:
            routing = self.predictor.routing
            self.state = InferenceState(frames=self.frames, num_frames=None, video_height=self.frames.height,
                                        video_width=self.frames.width, device=self.predictor.model.device,
                                        storage_device=self.predictor.model.device,
                                        router=routing.new_router() if routing is not None else None)
        state = self.state
        if not state.objects:
            return idx, [], torch.empty(0, 1, state.video_height, state.video_width)
        self.predictor.propagate_in_video_preflight(state)
        # one frame of a forward propagation that never ends (the window router keeps its evidence)
        _, obj_ids, masks = next(self.predictor.track_frames(state, [idx], reverse=False))
        self._forget_unreachable(idx)
        return idx, obj_ids, masks

    def add_new_points_or_box(self, obj_id: int, points=None, labels=None, clear_old_points: bool = True,
                              normalize_coords: bool = True, box=None):
        """Prompt an object on the latest frame (a new object, or a correction of a tracked one)."""
        return self.predictor.add_new_points_or_box(self.state, self.frame_idx, obj_id, points, labels,
                                                    clear_old_points, normalize_coords, box)

    def add_new_mask(self, obj_id: int, mask):
        return self.predictor.add_new_mask(self.state, self.frame_idx, obj_id, mask)

    def remove_object(self, obj_id: int):
        return self.predictor.remove_object(self.state, obj_id, need_output=False)[0]

    def _forget_unreachable(self, idx: int) -> None:
        """Drop what no later step can read: old memories, old pointers, old per-frame records."""
        after = idx + 1  # the next step
        for obj in self.state.objects.values():
            for t in [t for t in obj.memory.non_cond if after - t > self.entry_reach]:
                del obj.memory.non_cond[t]
            for t, entry in obj.memory.non_cond.items():
                if after - t > self.memory_reach:  # only its object pointer is still read
                    entry.maskmem_features = None
                    entry.backend_cache.clear()
                if t < idx:  # low-res masks are only needed to refine the latest frame
                    entry.pred_masks = None
            for record in (obj.frames_tracked, obj.point_inputs, obj.mask_inputs):
                for t in [t for t in record if t < idx and t not in obj.memory.cond]:
                    del record[t]

    def state_bytes(self) -> int:
        """Bytes of every tensor the session holds (memory bank, prompts, cached features)."""
        seen, total = set(), 0

        def add(t):
            nonlocal total
            if isinstance(t, torch.Tensor) and id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()

        if self.state is None:
            return 0
        for obj in self.state.objects.values():
            for entry in [*obj.memory.cond.values(), *obj.memory.non_cond.values()]:
                for t in (entry.pred_masks, entry.obj_ptr, entry.object_score_logits, entry.maskmem_features):
                    add(t)
            for p in obj.point_inputs.values():
                add(p.coords)
            for m in obj.mask_inputs.values():
                add(m)
        for feats in self.state.features.values():
            for t in [feats.vision_feats, feats.vision_pos, *(feats.high_res or [])]:
                add(t)
        total += self.frames.nbytes
        return total
