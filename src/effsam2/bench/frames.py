"""Real frames for the benchmark: a clip from the shared data folder (or ``--video``: a video file or a
folder of images), decoded once.

Decoding and resizing happen before timing (the official predictor also loads every frame up front in
``init_state``), so the benchmark measures the model only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from effsam2.errors import VideoError
from effsam2.io.frames import open_frames
from effsam2.preprocess import preprocess_frame

# Preferred default clips, in order; any other mp4 in the folder is used if none of these is there.
DEFAULT_CLIPS = ("bedroom.mp4", "01_dog.mp4", "05_default_juggle.mp4")


def shared_videos_dir() -> Path:
    """``$EFFSAM2_SHARED/data/videos``, else ``../shared/data/videos`` beside the checkout."""
    env = os.environ.get("EFFSAM2_SHARED")
    root = Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared"
    return root / "data" / "videos"


def default_video() -> Path:
    folder = shared_videos_dir()
    for name in DEFAULT_CLIPS:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.mp4")) if folder.is_dir() else []
    if not found:
        raise VideoError(f"no default clip: {folder} has no .mp4 file (pass --video or set EFFSAM2_SHARED)")
    return found[0]


def decode_video(path: str | os.PathLike, count: int) -> list[np.ndarray]:
    """The first ``count`` frames of a video file or frame folder as (H, W, 3) uint8 RGB arrays."""
    with open_frames(path) as source:
        if len(source) < count:
            raise VideoError(f"{path} has {len(source)} frames, the benchmark asked for {count}")
        return [source.get(i) for i in range(count)]


def model_inputs(frames: list[np.ndarray], image_size: int) -> list[torch.Tensor]:
    """Each frame as a (1, 3, S, S) float32 normalised model input (the official video preprocessing)."""
    return [preprocess_frame(f, image_size)[None] for f in frames]
