"""Real frames for tests, decoded from the shared mp4 clips (no dependency on effsam2.io)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def decode_frames(path: Path, count: int, start: int = 0) -> list[np.ndarray]:
    """The first ``count`` frames (after ``start``) of a video as (H, W, 3) uint8 RGB arrays."""
    frames = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= start:
                frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return frames


def to_model_input(rgb: np.ndarray, image_size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, S, S) float32 normalised as the official video loader does."""
    img = np.array(Image.fromarray(rgb).resize((image_size, image_size), Image.BICUBIC)) / 255.0
    img = (img.astype(np.float32) - MEAN) / STD
    return torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()
