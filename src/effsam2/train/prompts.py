"""Prompts for training clips, as SAM 2's video training samples them.

The first frame is prompted by its ground-truth mask, a (jittered) box, or 1-3 clicks, with set
probabilities; on a few later frames a corrective click is sampled from the error region of the
prediction (a positive click on a missed pixel, a negative one on a false positive), as the official
training does. Coordinates are model-space pixels (x, y) at S x S. All draws come from the caller's
``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from effsam2.modeling.sam2_model import PointPrompt

BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 2, 3  # SAM's point labels for box corners


@dataclass(frozen=True)
class PromptSettings:
    mask_prob: float = 0.5
    box_prob: float = 0.25  # the rest: 1-3 clicks
    box_jitter: float = 0.1  # of the box side
    corrected_frames: int = 1  # frames (after the first) that get a corrective click


def _pixel(rng: np.random.Generator, region: torch.Tensor) -> tuple[float, float] | None:
    """(x, y) centre of a uniformly drawn pixel of a (S, S) bool region, or None if it is empty."""
    ys, xs = torch.nonzero(region, as_tuple=True)
    if len(ys) == 0:
        return None
    i = int(rng.integers(len(ys)))
    return float(xs[i]) + 0.5, float(ys[i]) + 0.5


def box_prompt(rng: np.random.Generator, masks: torch.Tensor, jitter: float) -> PointPrompt:
    """(B, 1, S, S) masks -> their bounding boxes, each corner moved by up to ``jitter`` of the box side."""
    size = masks.shape[-1]
    coords = []
    for m in masks[:, 0] > 0.5:
        ys, xs = torch.nonzero(m, as_tuple=True)
        x0, x1, y0, y1 = float(xs.min()), float(xs.max()) + 1, float(ys.min()), float(ys.max()) + 1
        w, h = x1 - x0, y1 - y0
        dx, dy = rng.uniform(-jitter, jitter, 2) * w, rng.uniform(-jitter, jitter, 2) * h
        box = np.clip([x0 + dx[0], y0 + dy[0], x1 + dx[1], y1 + dy[1]], 0, size)
        coords.append([[box[0], box[1]], [box[2], box[3]]])
    labels = torch.tensor([[BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]] * len(coords), dtype=torch.int32)
    return PointPrompt(torch.tensor(coords, dtype=torch.float32), labels)


def click_prompt(rng: np.random.Generator, masks: torch.Tensor, num_clicks: int) -> PointPrompt:
    """1-3 clicks per object: a positive one inside it, then positive inside or negative just outside."""
    coords, labels = [], []
    for m in masks[:, 0] > 0.5:
        ring = F.max_pool2d(m[None, None].float(), 31, 1, 15)[0, 0].bool() & ~m
        pts, lab = [_pixel(rng, m)], [1]
        for _ in range(num_clicks - 1):
            negative = rng.random() < 0.5 and bool(ring.any())
            pts.append(_pixel(rng, ring if negative else m))
            lab.append(0 if negative else 1)
        coords.append(pts)
        labels.append(lab)
    return PointPrompt(torch.tensor(coords, dtype=torch.float32), torch.tensor(labels, dtype=torch.int32))


def first_frame_prompt(rng: np.random.Generator, masks: torch.Tensor,
                       s: PromptSettings) -> tuple[str, PointPrompt | None]:
    """('mask', None), ('box', corners) or ('clicks', clicks) for the clip's first frame (B, 1, S, S)."""
    draw = rng.random()
    if draw < s.mask_prob:
        return "mask", None
    if draw < s.mask_prob + s.box_prob:
        return "box", box_prompt(rng, masks, s.box_jitter)
    return "clicks", click_prompt(rng, masks, int(rng.integers(1, 4)))


def corrective_click(rng: np.random.Generator, pred_logits: torch.Tensor, masks: torch.Tensor) -> PointPrompt:
    """One click per object from the error region of (B, 1, S, S) predictions against the masks.

    The larger error (missed object pixels or false positives) is corrected; without error, a positive
    click on the object (a negative one anywhere when the object is absent).
    """
    coords, labels = [], []
    for pred, gt in zip(pred_logits[:, 0].detach() > 0, masks[:, 0] > 0.5):
        missed, extra = gt & ~pred, pred & ~gt
        if missed.any() or extra.any():
            positive = int(missed.sum()) >= int(extra.sum())
            point = _pixel(rng, missed if positive else extra)
        else:
            positive = bool(gt.any())
            point = _pixel(rng, gt if positive else torch.ones_like(gt))
        coords.append([point])
        labels.append([1 if positive else 0])
    return PointPrompt(torch.tensor(coords, dtype=torch.float32), torch.tensor(labels, dtype=torch.int32))
