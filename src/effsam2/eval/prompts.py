"""The first-frame prompt of an evaluation run, derived from the ground-truth mask.

``mask``: the mask itself (the semi-supervised protocol). ``box``: its bounding box. ``click``: one
positive click at the interior point farthest from the mask's boundary (found by repeated 3x3 erosion, i.e.
chessboard distance; among the deepest points the one nearest their centroid).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PROMPT_KINDS = ("mask", "box", "click")


def bounding_box(mask: np.ndarray) -> list[float]:
    """[x0, y0, x1, y1] in pixels of a non-empty (H, W) bool mask (x1, y1 exclusive)."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def deepest_point(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) pixel centre of the point of a non-empty (H, W) bool mask farthest from its boundary."""
    current = torch.from_numpy(np.ascontiguousarray(mask)).float()[None, None]
    # pad with background so that the image border counts as boundary
    while True:
        eroded = -F.max_pool2d(-F.pad(current, (1, 1, 1, 1)), 3, stride=1)
        if not eroded.any():
            break
        current = eroded
    ys, xs = np.nonzero(current[0, 0].numpy() > 0)
    cy, cx = ys.mean(), xs.mean()
    i = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return float(xs[i]) + 0.5, float(ys[i]) + 0.5


def add_first_prompt(predictor, state, frame_idx: int, obj_id: int, mask: np.ndarray, kind: str) -> None:
    """Prompt object ``obj_id`` on ``frame_idx`` from its ground-truth (H, W) mask as ``kind``."""
    if kind == "mask":
        predictor.add_new_mask(state, frame_idx, obj_id, mask)
    elif kind == "box":
        predictor.add_new_points_or_box(state, frame_idx, obj_id, box=bounding_box(mask))
    elif kind == "click":
        x, y = deepest_point(mask)
        predictor.add_new_points_or_box(state, frame_idx, obj_id, points=[[x, y]], labels=[1])
    else:
        raise ValueError(f"unknown prompt kind {kind!r}: use {', '.join(PROMPT_KINDS)}")
