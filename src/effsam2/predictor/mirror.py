"""Mirror test-time augmentation: track a video and its left-right mirror image, average the mask logits.

    predictor = MirrorAveragingPredictor(VideoPredictor(model))
    state = predictor.init_state("video.mp4")
    predictor.add_new_mask(state, 0, 1, mask)
    for frame_idx, obj_ids, mask_logits in predictor.propagate_in_video(state):
        ...  # as VideoPredictor's: (num_objects, 1, H, W) logits at the video's resolution

Two independent sessions of the same predictor run side by side: one on the frames as they are, one on
the frames flipped left-right, given the mirrored prompts (clicks and boxes reflected, masks flipped). Each
keeps its own memory, so the two trackings differ only in the view of the frames; every output is the
mean of the first session's logits and the second session's logits flipped back. It costs twice the
compute of one session and gains accuracy (docs/models.md: +1.3 J on held-out training sequences with
first-frame adaptation); it is off unless asked for (``effsam2 eval`` / ``effsam2 track --tta mirror``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from effsam2.errors import Effsam2Error
from effsam2.io.frames import FrameSource, open_frames
from effsam2.predictor.state import InferenceState, ObjectState
from effsam2.predictor.video import VideoPredictor

TTA_KINDS = ("none", "mirror")


class MirroredFrames(FrameSource):
    """Another source's frames flipped left-right (decoded by that source, on demand; it stays its
    owner's to close)."""

    def __init__(self, source: FrameSource) -> None:
        self._source = source
        self.height, self.width, self.fps = source.height, source.width, source.fps
        self.frame_names = source.frame_names
        self.name = f"{source.name} (mirrored)"

    def __len__(self) -> int:
        return len(self._source)

    def _get(self, idx: int) -> np.ndarray:
        return np.ascontiguousarray(self._source.get(idx)[:, ::-1])


@dataclass
class MirrorState:
    """The two sessions of a mirrored tracking; reads like the original session's state."""

    original: InferenceState
    mirrored: InferenceState

    @property
    def frames(self) -> FrameSource:
        return self.original.frames

    @property
    def num_frames(self) -> int | None:
        return self.original.num_frames

    @property
    def video_height(self) -> int:
        return self.original.video_height

    @property
    def video_width(self) -> int:
        return self.original.video_width

    @property
    def objects(self) -> dict[int, ObjectState]:
        return self.original.objects

    @property
    def obj_ids(self) -> list[int]:
        return self.original.obj_ids


def mirror_logits(logits: torch.Tensor) -> torch.Tensor:
    """(..., H, W) flipped left-right."""
    return torch.flip(logits, dims=(-1,))


def mirror_points(points, width: float):
    """Clicks (N, 2) x, y reflected about the vertical axis of a frame ``width`` wide."""
    mirrored = np.array(points, dtype=np.float64).reshape(-1, 2)
    mirrored[:, 0] = width - mirrored[:, 0]
    return mirrored


def mirror_box(box, width: float):
    """A box x0, y0, x1, y1 reflected about the vertical axis (still x0 < x1)."""
    x0, y0, x1, y1 = np.array(box, dtype=np.float64).reshape(4)
    return np.array([width - x1, y0, width - x0, y1])


class MirrorAveragingPredictor:
    """``VideoPredictor``'s prompting and propagation over two sessions, the video and its mirror image."""

    def __init__(self, predictor: VideoPredictor) -> None:
        self.predictor = predictor

    @property
    def model(self):
        return self.predictor.model

    @property
    def image_size(self) -> int:
        return self.predictor.image_size

    @torch.inference_mode()
    def init_state(self, video, **options) -> MirrorState:
        """Open the video once; the mirrored session reads the same decoded frames, flipped."""
        frames = open_frames(video)
        original = self.predictor.init_state(frames, **options)
        return MirrorState(original, self.predictor.init_state(MirroredFrames(frames), **options))

    @torch.inference_mode()
    def add_new_mask(self, state: MirrorState, frame_idx: int, obj_id: int, mask):
        """As ``VideoPredictor.add_new_mask``; the mirrored session gets the mask flipped."""
        frame_idx, obj_ids, logits = self.predictor.add_new_mask(state.original, frame_idx, obj_id, mask)
        # checked by the first call: a 2-D mask of the frame's size
        flipped = mirror_logits(mask) if isinstance(mask, torch.Tensor) else np.asarray(mask)[:, ::-1].copy()
        _, _, other = self.predictor.add_new_mask(state.mirrored, frame_idx, obj_id, flipped)
        return frame_idx, obj_ids, (logits + mirror_logits(other)) / 2

    @torch.inference_mode()
    def add_new_points_or_box(self, state: MirrorState, frame_idx: int, obj_id: int, points=None, labels=None,
                              clear_old_points: bool = True, normalize_coords: bool = True, box=None):
        """As ``VideoPredictor.add_new_points_or_box``; the mirrored session gets the reflected clicks and box."""
        frame_idx, obj_ids, logits = self.predictor.add_new_points_or_box(
            state.original, frame_idx, obj_id, points=points, labels=labels, clear_old_points=clear_old_points,
            normalize_coords=normalize_coords, box=box)
        # the first call checked the prompt: numeric, inside the frame
        width = state.video_width if normalize_coords else 1.0
        _, _, other = self.predictor.add_new_points_or_box(
            state.mirrored, frame_idx, obj_id, points=None if points is None else mirror_points(points, width),
            labels=labels, clear_old_points=clear_old_points, normalize_coords=normalize_coords,
            box=None if box is None else mirror_box(box, width))
        return frame_idx, obj_ids, (logits + mirror_logits(other)) / 2

    def processing_order(self, state: MirrorState, start_frame_idx: int | None = None,
                         max_frame_num_to_track: int | None = None, reverse: bool = False) -> range:
        return self.predictor.processing_order(state.original, start_frame_idx, max_frame_num_to_track, reverse)

    @torch.inference_mode()
    def propagate_in_video(self, state: MirrorState, start_frame_idx: int | None = None,
                           max_frame_num_to_track: int | None = None,
                           reverse: bool = False) -> Iterator[tuple[int, list[int], torch.Tensor]]:
        """Both sessions frame by frame; yields ``(frame_idx, obj_ids, mean mask_logits (N, 1, H, W))``."""
        kw = {"start_frame_idx": start_frame_idx, "max_frame_num_to_track": max_frame_num_to_track,
              "reverse": reverse}
        sessions = zip(self.predictor.propagate_in_video(state.original, **kw),
                       self.predictor.propagate_in_video(state.mirrored, **kw))
        for (frame_idx, obj_ids, logits), (other_idx, other_ids, other) in sessions:
            if (other_idx, other_ids) != (frame_idx, obj_ids):  # both sessions got the same prompts
                raise RuntimeError(f"mirrored session out of step: frame {other_idx} objects {other_ids}, "
                                   f"expected frame {frame_idx} objects {obj_ids}")
            yield frame_idx, obj_ids, (logits + mirror_logits(other)) / 2

    @torch.inference_mode()
    def reset_state(self, state: MirrorState) -> None:
        self.predictor.reset_state(state.original)
        self.predictor.reset_state(state.mirrored)


def with_tta(predictor: VideoPredictor, tta: str) -> VideoPredictor | MirrorAveragingPredictor:
    """``predictor`` itself for ``tta == "none"``, mirror averaging over it for ``"mirror"``."""
    if tta == "none":
        return predictor
    if tta == "mirror":
        return MirrorAveragingPredictor(predictor)
    raise Effsam2Error(f"unknown test-time augmentation {tta!r}: choose one of {', '.join(TTA_KINDS)}")
