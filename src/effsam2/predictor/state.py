"""Session state of the video predictor as explicit data.

One :class:`InferenceState` per video session; one :class:`ObjectState` per tracked object. The official
SAM 2 predictor keeps the same information in nested dicts keyed by strings; the names here map onto
those (``point_inputs_per_obj`` -> ``ObjectState.point_inputs``, ``temp_output_dict_per_obj`` ->
``ObjectState.pending``, ``output_dict_per_obj`` -> ``ObjectState.memory``, ...).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from effsam2.accel.window_routing import RouterState, WindowSelection
from effsam2.io.frames import FrameSource
from effsam2.modeling.memory import MemoryEntry
from effsam2.modeling.sam2_model import FrameFeatures, PointPrompt
from effsam2.modeling.tracker import ObjectMemory


@dataclass
class PendingOutput:
    """An output computed from a prompt but not yet consolidated into memory (no memory encoding yet)."""

    entry: MemoryEntry
    is_cond: bool


@dataclass
class ObjectState:
    obj_id: int
    memory: ObjectMemory = field(default_factory=ObjectMemory)
    pending: dict[int, PendingOutput] = field(default_factory=dict)  # frame -> prompt output
    point_inputs: dict[int, PointPrompt] = field(default_factory=dict)  # frame -> clicks (model space)
    mask_inputs: dict[int, torch.Tensor] = field(default_factory=dict)  # frame -> (1, 1, S, S) mask
    frames_tracked: dict[int, bool] = field(default_factory=dict)  # frame -> tracked in reverse?

    def latest_output(self, frame_idx: int, prefer_cond: bool) -> MemoryEntry | None:
        """The most recent output on a frame: a pending one of the preferred kind first, then memory."""
        pending = self.pending.get(frame_idx)
        if pending is not None and pending.is_cond == prefer_cond:
            return pending.entry
        return self.memory.get(frame_idx)


class FeatureCache:
    """The image features of the few most recently used frames (LRU), so repeated clicks and several
    objects on one frame encode the image once."""

    def __init__(self, capacity: int = 2) -> None:
        self.capacity = capacity
        self._items: OrderedDict[int, FrameFeatures] = OrderedDict()

    def get(self, frame_idx: int) -> FrameFeatures | None:
        feats = self._items.get(frame_idx)
        if feats is not None:
            self._items.move_to_end(frame_idx)
        return feats

    def put(self, frame_idx: int, feats: FrameFeatures) -> None:
        self._items[frame_idx] = feats
        self._items.move_to_end(frame_idx)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def values(self) -> list[FrameFeatures]:
        """The cached features, least recently used first."""
        return list(self._items.values())

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class InferenceState:
    """Everything a video session holds: the frames (decoded lazily), objects, prompts and outputs."""

    frames: FrameSource
    num_frames: int | None  # None for a stream of unknown length
    video_height: int
    video_width: int
    device: torch.device
    storage_device: torch.device
    offload_video_to_cpu: bool = False
    objects: dict[int, ObjectState] = field(default_factory=dict)  # insertion order = object index
    features: FeatureCache = field(default_factory=FeatureCache)
    router: RouterState | None = None  # Sparse Window Routing: evidence from the last propagated frame
    window_selection: WindowSelection | None = None  # the windows the last routed frame ran

    @property
    def obj_ids(self) -> list[int]:
        return list(self.objects)

    def object(self, obj_id: int) -> ObjectState:
        """The object's state, created on first use (objects may be added at any time)."""
        obj = self.objects.get(obj_id)
        if obj is None:
            obj = self.objects[obj_id] = ObjectState(obj_id)
        return obj

    def pending_is_cond(self, frame_idx: int) -> bool:
        """Whether a prompt waiting on ``frame_idx`` (any object) makes it a conditioning frame."""
        return any((p := o.pending.get(frame_idx)) is not None and p.is_cond for o in self.objects.values())

    # SAM 2 users read a few entries of the official state dict; keep those spellings working.
    def __getitem__(self, key: str):
        legacy = {"num_frames": self.num_frames, "video_height": self.video_height,
                  "video_width": self.video_width, "obj_ids": self.obj_ids, "device": self.device,
                  "storage_device": self.storage_device}
        if key not in legacy:
            raise KeyError(f"{key!r} (effsam2 keeps session state as attributes of InferenceState)")
        return legacy[key]
