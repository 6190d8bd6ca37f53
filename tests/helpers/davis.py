"""Real annotated frames from ../shared/data/davis2016 for tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image


def first_frames(davis_dir: Path, sequence: str, count: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The first ``count`` RGB frames of a sequence and its first frame's ground-truth mask (bool)."""
    root = davis_dir / "JPEGImages" / "480p" / sequence
    frames = [np.array(Image.open(p).convert("RGB")) for p in sorted(root.glob("*.jpg"))[:count]]
    mask = np.array(Image.open(davis_dir / "Annotations" / "480p" / sequence / "00000.png")) > 0
    return frames, mask


def copy_subset(davis_dir: Path, dst: Path, sequences: tuple[str, ...], frames: int) -> Path:
    """A DAVIS folder at ``dst`` holding the first ``frames`` frames and masks of ``sequences``."""
    for sequence in sequences:
        for kind, suffix in (("JPEGImages", ".jpg"), ("Annotations", ".png")):
            out = dst / kind / "480p" / sequence
            out.mkdir(parents=True)
            for i in range(frames):
                shutil.copy(davis_dir / kind / "480p" / sequence / f"{i:05d}{suffix}", out / f"{i:05d}{suffix}")
    return dst
