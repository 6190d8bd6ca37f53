"""Training clips for the SWR shortcut: which frames of which videos, decided up front and reproducibly.

Videos are split into consecutive, non-overlapping clips of ``frames_per_clip`` frames; clips are taken
round-robin over the videos (first clip of every video, then the second, ...), so a few videos give
varied clips. When more clips are asked for than the videos hold, the list starts again from the
beginning. The plan depends only on the inputs, so a resumed run sees the same clips in the same order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from effsam2.errors import VideoError
from effsam2.io.frames import IMAGE_SUFFIXES, VIDEO_SUFFIXES, natural_sort_key, open_frames
from effsam2.preprocess import preprocess_frame


@dataclass(frozen=True)
class Clip:
    video: str  # a video file or a folder of frames
    start: int
    length: int

    def describe(self) -> str:
        return f"{Path(self.video).name}[{self.start}:{self.start + self.length}]"


def find_videos(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Expand the user's ``--videos``: files are videos; a folder holding video files stands for those
    (sorted by name); a folder holding only images is one video made of its frames."""
    found: list[str] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise VideoError(f"{path}: no such video file or folder")
        if path.is_file():
            found.append(str(path))
            continue
        entries = sorted((p for p in path.iterdir() if p.is_file()), key=lambda p: natural_sort_key(p.name))
        videos = [str(p) for p in entries if p.suffix.lower() in VIDEO_SUFFIXES]
        if videos:
            found.extend(videos)
        elif any(p.suffix.lower() in IMAGE_SUFFIXES for p in entries):
            found.append(str(path))
        else:
            raise VideoError(f"{path}: folder holds no videos ({', '.join(sorted(VIDEO_SUFFIXES))}) and no images")
    if not found:
        raise VideoError("no videos given")
    return found


def plan_clips(videos: Sequence[str], clips: int, frames_per_clip: int) -> list[Clip]:
    """``clips`` clips of ``frames_per_clip`` frames, round-robin over ``videos`` (see module doc)."""
    if clips < 1 or frames_per_clip < 2:
        raise ValueError("need at least one clip of at least two frames")
    per_video: list[list[Clip]] = []
    for video in videos:
        with open_frames(video) as frames:
            n = len(frames)
        if n < frames_per_clip:
            raise VideoError(f"{video}: {n} frames, fewer than the {frames_per_clip} frames per clip")
        per_video.append([Clip(video, s, frames_per_clip) for s in range(0, n - frames_per_clip + 1, frames_per_clip)])
    available = [v[i] for i in range(max(len(v) for v in per_video)) for v in per_video if i < len(v)]
    return [available[i % len(available)] for i in range(clips)]


def load_clip(clip: Clip, image_size: int) -> list[torch.Tensor]:
    """The clip's frames as (1, 3, S, S) float32 model inputs (decoded with PyAV, official preprocessing)."""
    with open_frames(clip.video) as frames:
        return [preprocess_frame(frames.get(i), image_size)[None] for i in range(clip.start, clip.start + clip.length)]
