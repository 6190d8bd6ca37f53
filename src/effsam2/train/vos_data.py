"""Training videos for ``effsam2 train``: DAVIS-style folders read once into memory, checked up front.

A training set is a list of :class:`TrainVideo` (frames as uint8 RGB, one boolean mask per frame and
object). Everything a user can get wrong (missing folder, a sequence whose masks don't match its frames,
unreadable files) is a :class:`DatasetError` naming it, raised before any training starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from effsam2.errors import DatasetError
from effsam2.io.datasets import open_dataset


@dataclass
class TrainVideo:
    """One annotated sequence: frames (N, H, W, 3) uint8 and masks (N, K, H, W) bool for its K objects."""

    name: str
    frames: np.ndarray
    masks: np.ndarray

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    def frames_with_object(self, obj: int) -> np.ndarray:
        """Indices of the frames where object ``obj`` is visible."""
        return np.flatnonzero(self.masks[:, obj].reshape(self.num_frames, -1).any(axis=1))


def read_rgb(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(size, size, 3) uint8 frame, squashed with PIL's bicubic as the predictors do, and its (H, W)."""
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
            return np.asarray(rgb.resize((size, size), Image.BICUBIC)), (rgb.height, rgb.width)
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read frame {path}: {err}") from None


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """(H, W) bool mask -> (size, size) bool, nearest neighbour."""
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)) > 127


def read_video(dataset, name: str, size: int) -> TrainVideo:
    """Frames and masks of one sequence at the model's input size (S x S, as the model sees them).

    Every frame must have a mask of the frame's size.
    """
    seq = dataset.sequence(name)
    images = {frame: seq.image_path(frame) for frame in seq.frames}
    if not images or any(p is None for p in images.values()):
        raise DatasetError(f"sequence {name}: no JPEGImages frames in {dataset.root}")
    annotated = set(seq.mask_frames)
    unmasked = [f for f in images if f not in annotated]
    if unmasked:
        raise DatasetError(f"sequence {name}: {len(unmasked)} of {len(images)} frames have no mask "
                           f"(first: {unmasked[0]}); training needs every frame annotated")
    read = [read_rgb(p, size) for p in images.values()]
    frames = np.stack([rgb for rgb, _ in read])
    object_ids = seq.object_ids
    masks = np.zeros((len(images), len(object_ids), size, size), dtype=bool)
    for i, frame in enumerate(images):
        gt = seq.gt_masks(frame)
        hw = read[i][1]
        for k, oid in enumerate(object_ids):
            if gt[oid].shape != hw:
                raise DatasetError(f"sequence {name}: mask {frame}.png is {gt[oid].shape[1]}x{gt[oid].shape[0]}, "
                                   f"its frame {hw[1]}x{hw[0]}")
            masks[i, k] = resize_mask(gt[oid], size)
    return TrainVideo(name, frames, masks)


def sequence_names(root: str | Path, split: str | None = None) -> list[str]:
    """The sequences of ``split`` (default: the folder's train list, else every sequence folder)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"training data folder not found: {root}")
    dataset = open_dataset(root, layout="davis")
    if split is None and (root / "ImageSets" / "train.txt").is_file():
        split = "train"
    return dataset.sequence_names(split)


def load_videos(root: str | Path, names: list[str], size: int) -> list[TrainVideo]:
    """The named sequences of the dataset at ``root``, frames and masks at S x S."""
    dataset = open_dataset(Path(root), layout="davis")
    return [read_video(dataset, n, size) for n in names]
