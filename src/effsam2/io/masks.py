"""Label maps and DAVIS-style palette PNGs.

A *label map* is an (H, W) uint8 array whose pixel values are object ids, 0 being background.
DAVIS (and YouTube-VOS) store one palette ("P" mode) PNG per frame in that layout, coloured with
the standard VOC/DAVIS colour map, which is what ``save_label_png`` writes.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from effsam2.errors import PromptError
from effsam2.io.atomic import atomic_path

__all__ = [
    "MAX_LABEL_ID",
    "as_bool_mask",
    "as_label_map",
    "check_label_id",
    "davis_palette",
    "labels_from_masks",
    "save_label_png",
]

MAX_LABEL_ID = 255


def _make_palette() -> bytes:
    # The VOC/DAVIS colour map: the bits of the index are dealt out in turn to R, G and B,
    # filling each channel from its most significant bit down (1 -> (128,0,0), 2 -> (0,128,0)).
    out = bytearray()
    for i in range(256):
        r = g = b = 0
        c = i
        for bit in range(7, -1, -1):
            r |= (c & 1) << bit
            g |= ((c >> 1) & 1) << bit
            b |= ((c >> 2) & 1) << bit
            c >>= 3
        out += bytes((r, g, b))
    return bytes(out)


_PALETTE = _make_palette()  # immutable bytes, 768 = 256 x RGB


def davis_palette() -> np.ndarray:
    """The DAVIS/VOC colour map as a new (256, 3) uint8 array: row i is the RGB of label i."""
    return np.frombuffer(_PALETTE, dtype=np.uint8).reshape(256, 3).copy()


def check_label_id(obj_id: Any) -> int:
    """``obj_id`` as an int in 1..255 (ids that fit a uint8 label map); ``PromptError`` otherwise."""
    try:
        i = operator.index(obj_id)
    except TypeError:
        raise PromptError(f"object id must be an integer, got {obj_id!r}") from None
    if not 1 <= i <= MAX_LABEL_ID:
        raise PromptError(
            f"object id {i} cannot be stored in a label map (ids must be 1..{MAX_LABEL_ID}; 0 is background)"
        )
    return i


def as_bool_mask(mask: Any, what: str = "mask") -> np.ndarray:
    """``mask`` as an (H, W) bool array.

    Accepts bool or integer arrays (nonzero = object), also with a leading axis of size 1
    ((1, H, W), as SAM 2 returns per-object masks). Float arrays raise ``ValueError``: they are
    logits or probabilities, and only the caller knows the threshold.
    """
    a = np.asarray(mask)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{what} must have shape (H, W), got {np.shape(mask)}")
    if a.dtype == np.bool_:
        return a
    if np.issubdtype(a.dtype, np.integer):
        return a != 0
    raise ValueError(f"{what} has dtype {a.dtype}; pass a bool mask (e.g. logits > 0)")


def labels_from_masks(
    masks: Mapping[int, Any],
    *,
    shape: tuple[int, int] | None = None,
    scores: Mapping[int, Any] | None = None,
) -> np.ndarray:
    """Combine per-object masks into one (H, W) uint8 label map.

    Args:
        masks: object id (1..255) -> (H, W) bool mask (see ``as_bool_mask``).
        shape: (H, W); required when ``masks`` is empty, checked against the masks otherwise.
        scores: optional object id -> score, a scalar or an (H, W) array (e.g. the mask logits).

    Overlaps: without ``scores`` the *lowest* object id wins a pixel claimed by several objects
    (the rule of SAM 2's own VOS inference script, so PNGs match the official tools); with
    ``scores`` the object with the highest score at that pixel wins, ties going to the lower id.
    """
    ids = sorted(check_label_id(i) for i in masks)
    if len(set(ids)) != len(ids):
        raise PromptError(f"duplicate object ids in {sorted(masks)}")
    bools = {i: as_bool_mask(masks[i], f"mask of object {i}") for i in ids}
    for i, m in bools.items():
        if shape is None:
            shape = m.shape
        elif m.shape != tuple(shape):
            raise ValueError(f"mask of object {i} has shape {m.shape}, expected {tuple(shape)}")
    if shape is None:
        raise ValueError("labels_from_masks needs shape= when there are no masks")
    labels = np.zeros(shape, dtype=np.uint8)
    if scores is None:
        for i in reversed(ids):  # lowest id written last, so it wins overlaps
            labels[bools[i]] = i
        return labels
    best = np.full(shape, -np.inf, dtype=np.float64)
    for i in ids:
        if i not in scores:
            raise ValueError(f"no score for object {i}")
        s = np.broadcast_to(np.asarray(scores[i], dtype=np.float64), shape)
        win = bools[i] & (s > best)  # strict: on a tie the lower id, written first, keeps the pixel
        labels[win] = i
        best[win] = s[win]
    return labels


def as_label_map(labels: Any, where: str = "labels") -> np.ndarray:
    """``labels`` as an (H, W) uint8 label map; ``PromptError`` for values outside 0..255."""
    a = np.asarray(labels)
    if a.ndim != 2:
        raise ValueError(f"{where}: labels must have shape (H, W), got {a.shape}")
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{where}: labels must be an integer array, got {a.dtype}")
    if a.size and (a.min() < 0 or a.max() > MAX_LABEL_ID):
        bad = a.max() if a.max() > MAX_LABEL_ID else a.min()
        raise PromptError(f"{where}: object id {bad} cannot be stored in a label PNG (ids must be 0..255)")
    return a.astype(np.uint8)


def save_label_png(path: str | os.PathLike[str], labels: Any) -> Path:
    """Write an (H, W) label map (values 0..255) as a DAVIS palette PNG, atomically.

    The PNG is mode "P": pixel values are the object ids, the palette gives their colours.
    Returns the path written.
    """
    path = Path(path)
    a = as_label_map(labels, str(path))
    im = Image.fromarray(np.ascontiguousarray(a))  # mode "L" ...
    im.putpalette(_PALETTE)  # ... becomes "P" with the DAVIS colours, values unchanged
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
    return path
