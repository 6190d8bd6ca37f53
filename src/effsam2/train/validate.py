"""Held-out validation during training: track held-out *training* sequences from their first mask.

Only sequences of the training folder held out from training are used (never the evaluation sequences);
the figure selects the best checkpoint of a run. Frames are the S x S frames the trainer holds.

Beside J, each sequence is tracked a second time from a background square of the object's area instead of its
mask, and the IoU of the two trackings is the *prompt agreement*: near 1 when the model's masks do not depend on
what frame 0 said (a memory that carries no mask, docs/models.md), lower when the memory is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from effsam2.modeling.sam2_model import SAM2Model
from effsam2.predictor.video import VideoPredictor
from effsam2.train.vos_data import TrainVideo


def region_j(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two (H, W) bool masks (1 when both are empty)."""
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


@dataclass(frozen=True)
class Validation:
    j: float  # mean J against the ground truth, tracked from the first mask
    prompt_agreement: float  # mean IoU of that tracking and the one from a background square


def background_square(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> a square of about the mask's area in the image corner farthest from its centre."""
    h, w = mask.shape
    side = max(1, min(round(float(np.sqrt(mask.sum()))), h, w))
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.mean(), xs.mean()) if len(ys) else (h / 2, w / 2)
    y0 = 0 if cy > h / 2 else h - side
    x0 = 0 if cx > w / 2 else w - side
    square = np.zeros_like(mask, dtype=bool)
    square[y0:y0 + side, x0:x0 + side] = True
    return square


def _track(predictor: VideoPredictor, frames: list[np.ndarray], prompt: np.ndarray) -> list[np.ndarray]:
    """Masks of frames 1.. tracked from ``prompt`` on frame 0."""
    state = predictor.init_state(frames)
    predictor.add_new_mask(state, 0, 1, prompt)
    return [(logits[0, 0] > 0).cpu().numpy() for t, _, logits in predictor.propagate_in_video(state) if t > 0]


@torch.inference_mode()
def validate(model: SAM2Model, videos: list[TrainVideo], max_frames: int) -> Validation:
    """J and prompt agreement over the first ``max_frames`` frames (first one excluded) of each video."""
    was_training = model.training
    model.eval()
    scores, agreements = [], []
    try:
        predictor = VideoPredictor(model)
        for video in videos:
            frames = [video.frames[i] for i in range(min(video.num_frames, max_frames))]
            first = video.masks[0, 0] > 0
            from_mask = _track(predictor, frames, first)
            from_square = _track(predictor, frames, background_square(first))
            scores.append(np.mean([region_j(m, video.masks[t, 0] > 0) for t, m in enumerate(from_mask, 1)]))
            agreements.append(np.mean([region_j(a, b) for a, b in zip(from_mask, from_square)]))
    finally:
        model.train(was_training)
    return Validation(float(np.mean(scores)), float(np.mean(agreements)))
