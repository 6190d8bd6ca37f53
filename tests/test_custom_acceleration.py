"""Accelerations are open: a memory backend and a frame encoder written here, outside the package, plug into
``build_model`` and run through the ``VideoPredictor`` unchanged; at their identity settings they compute
exactly what dense computes, and what they keep per video lives in the session, not on the model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

import effsam2
from effsam2.modeling.frame_encoder import DenseFrameEncoder
from effsam2.modeling.memory_attention import DenseMemoryBackend
from effsam2.predictor.video import VideoPredictor


class NewestFramesOnly(DenseMemoryBackend):
    """Cross-attend to the prompted frames and only the ``keep`` newest tracked frames (all: dense)."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.frames_read = 0

    def cross_attend(self, layer_idx, attn, q, table, memory):
        frames = [f for f in memory.frames if f.is_cond or f.t_pos > memory.newest_t_pos - self.keep]
        self.frames_read += len(frames)
        return super().cross_attend(layer_idx, attn, q, table, dataclasses.replace(memory, frames=frames))

    def __repr__(self) -> str:
        return f"newest@{self.keep}"


class SkipState:
    """One session's evidence: the last encoded image and its features."""

    def __init__(self) -> None:
        self.image = self.features = None
        self.skipped = 0

    def reset(self) -> None:
        self.image = self.features = None

    def observe(self, outputs) -> None:
        pass


class SkipStillFrames(DenseFrameEncoder):
    """Reuse the last frame's features when the image changed by at most ``threshold`` (mean |diff|)."""

    routes = True

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def new_router(self) -> SkipState:
        return SkipState()

    def encode(self, model, images, router, *, prompted=False):
        still = router.image is not None and (images - router.image).abs().mean() <= self.threshold
        if still and not prompted:
            router.skipped += 1
            return router.features, None
        router.image, router.features = images, model.encode_image(images)
        return router.features, None

    def __repr__(self) -> str:
        return f"skip@{self.threshold:g}"


@pytest.fixture(scope="module")
def cows(davis_dir):
    root = davis_dir / "JPEGImages" / "480p" / "cows"
    frames = [np.array(Image.open(p).convert("RGB")) for p in sorted(root.glob("*.jpg"))[:9]]
    mask = np.array(Image.open(davis_dir / "Annotations" / "480p" / "cows" / "00000.png")) > 0
    return frames, mask


def track(model, frames, mask):
    predictor = VideoPredictor(model)
    state = predictor.init_state(frames)
    predictor.add_new_mask(state, 0, 1, mask)
    logits = [m[0, 0].clone() for _, _, m in predictor.propagate_in_video(state)]
    return logits, state


@pytest.fixture(scope="module")
def dense(cows):
    logits, _ = track(effsam2.build_model(accel="dense"), *cows)
    for m in logits[1:]:
        assert 0.02 < (m > 0).float().mean() < 0.9  # the shipped model tracks the cow: not degenerate
    return logits


def test_a_memory_backend_of_our_own_is_dense_at_its_identity_and_changes_the_result_below_it(cows, dense):
    num_maskmem = effsam2.build_model().config.tracker.num_maskmem
    everything = NewestFramesOnly(keep=num_maskmem)
    model = effsam2.build_model(accel="dense", memory_backend=everything)
    assert model.memory_attention.backend is everything and "newest@" in model.accel_label
    same, _ = track(model, *cows)
    assert everything.frames_read > 0
    assert all(torch.equal(a, b) for a, b in zip(same, dense))
    newest = NewestFramesOnly(keep=1)
    fewer, _ = track(effsam2.build_model(accel="dense", memory_backend=newest), *cows)
    assert newest.frames_read < everything.frames_read
    assert any(not torch.equal(a, b) for a, b in zip(fewer, dense))


def test_a_frame_encoder_of_our_own_keeps_its_state_in_the_session(cows, dense):
    model = effsam2.build_model(accel="dense", frame_encoder=SkipStillFrames(threshold=0.0))
    same, state = track(model, *cows)  # real frames always change: nothing is skipped, exactly dense
    assert state.router.skipped == 0 and all(torch.equal(a, b) for a, b in zip(same, dense))
    frames, mask = cows
    lazy = effsam2.build_model(accel="dense", frame_encoder=SkipStillFrames(threshold=1e9))
    _, state = track(lazy, [frames[0]] * len(frames), mask)
    moving, other = track(lazy, frames, mask)
    # every propagated frame but the first of each propagation reuses features; each session counts its own
    assert state.router.skipped == other.router.skipped == len(frames) - 2
    assert state.router is not other.router
    for m in moving[1:]:
        assert 0.0 < (m > 0).float().mean() < 0.9
