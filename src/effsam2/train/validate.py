"""Held-out validation during training: track held-out *training* sequences from their first mask.

Only sequences of the training folder held out from training are used (never the evaluation sequences);
the figure selects the best checkpoint of a run. Frames are the S x S frames the trainer holds.
"""

from __future__ import annotations

import numpy as np
import torch

from effsam2.modeling.sam2_model import SAM2Model
from effsam2.predictor.video import VideoPredictor
from effsam2.train.vos_data import TrainVideo


def region_j(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two (H, W) bool masks (1 when both are empty)."""
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


@torch.inference_mode()
def validation_j(model: SAM2Model, videos: list[TrainVideo], max_frames: int) -> float:
    """Mean J over the first ``max_frames`` frames (first one excluded) of each video, tracked from frame 0."""
    was_training = model.training
    model.eval()
    scores = []
    try:
        predictor = VideoPredictor(model)
        for video in videos:
            n = min(video.num_frames, max_frames)
            state = predictor.init_state([video.frames[i] for i in range(n)])
            predictor.add_new_mask(state, 0, 1, video.masks[0, 0])
            js = [region_j((logits[0, 0] > 0).cpu().numpy(), video.masks[t, 0])
                  for t, _, logits in predictor.propagate_in_video(state) if t > 0]
            scores.append(float(np.mean(js)))
    finally:
        model.train(was_training)
    return float(np.mean(scores))
