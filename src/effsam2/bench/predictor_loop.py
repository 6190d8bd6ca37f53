"""The ``--loop predictor`` pass: the same session through the public ``VideoPredictor`` API.

This measures what a user of ``effsam2.predictor.video.VideoPredictor`` gets: besides the model, each
frame's time includes preprocessing the frame (resize + normalise) and upsampling the masks to the
video's resolution, which the ``steps`` loop (and the official row) leave out. The predictor times its
encoder and tracker sections through the ``timer`` it is given; a frame is one step of
``propagate_in_video``. Frame 0 also holds ``init_state`` and the clicks. With an SWR model the
predictor routes by itself; the windows each frame ran are read from the session state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import numpy as np
import torch

from effsam2.bench.session import PassResult, PassSteps
from effsam2.bench.timer import FrameTimer
from effsam2.modeling.sam2_model import PointPrompt, SAM2Model
from effsam2.predictor.video import VideoPredictor


def iter_predictor_pass(model: SAM2Model, rgb_frames: Sequence[np.ndarray], prompts: Sequence[PointPrompt],
                        timer: FrameTimer,
                        context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                        dtype: str = "fp32") -> PassSteps:
    """Track one object per prompt (model-space clicks, converted to video pixels) through ``rgb_frames``.

    ``dtype`` (fp32 or bf16) is the predictor's own autocast (``context`` would be switched off inside it)."""
    predictor = VideoPredictor(model, timer=timer, dtype=dtype)
    height, width = rgb_frames[0].shape[:2]
    size = model.image_size
    masks, scores, fractions = [], [], []

    def collect(state, t: int) -> None:
        entries = [state.objects[obj].memory.get(t) for obj in range(len(prompts))]
        masks.append(torch.cat([e.pred_masks[:, 0] > 0 for e in entries]).cpu())
        scores.append(torch.cat([e.object_score_logits[:, 0] for e in entries]).float().cpu())
        # SWR: the windows this frame ran (None: not routed, e.g. the prompted frame's cached features)
        fractions.append(1.0 if state.window_selection is None else state.window_selection.fraction)
        state.window_selection = None

    with timer.frame(), context():
        state = predictor.init_state(list(rgb_frames))
        for obj, prompt in enumerate(prompts):
            x, y = prompt.coords[0, 0].tolist()
            predictor.add_new_points_or_box(state, 0, obj, points=[[x * width / size, y * height / size]],
                                            labels=[1])
        frames = predictor.propagate_in_video(state)
        next(frames)
    collect(state, 0)
    yield
    for t in range(1, len(rgb_frames)):
        with timer.frame(), context():
            next(frames)
        collect(state, t)
        yield
    frames.close()
    return PassResult(timer.frames, torch.stack(masks), torch.stack(scores),
                      fractions if predictor.routing is not None else None)
