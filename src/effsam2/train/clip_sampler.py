"""Training clips for ``effsam2 train``: real clips with augmentation and synthetic clips from single frames.

Everything is drawn from a ``numpy.random.Generator`` given by the caller (one per step, seeded by
(seed, step)), so a resumed run sees exactly the clips it would have seen.

* Real clips: a random sequence, frame stride 1..``max_stride``, played forwards or reversed, the first
  frame showing the object.
* Synthetic clips, built from one annotated frame: the object follows a smooth random affine path,
  either with its own frame (camera motion) or pasted onto a frame of another sequence; with set
  probabilities an object of another sequence passes in front of it (occlusion), or its path leaves the
  frame and comes back (disappearance and reappearance).
* Distractors: with a set probability an object of a random training sequence (often a person, an animal or
  a vehicle like the target, sometimes the target's own sequence) is pasted beside the target on every
  frame, prompt frame included, moving on its own path; it is not the target, and where it covers the
  target the target is hidden. Single-object data never shows a second salient object otherwise, and
  without one a model learns to segment "the salient thing" and ignore its prompt and its memory.
  A share of the distractors (``twin_prob``) are the target's own twin: the clip's object itself, shifted
  sideways and moving as it moves, so that only the prompt and the memory tell the two apart.
* Every clip then gets the same random zoom-crop, horizontal flip and colour jitter on all its frames
  (frames and masks are warped together with one ``grid_sample``; masks are re-thresholded).

Shapes: frames (T, 3, S, S) float in [0, 1], masks (T, 1, S, S) float in {0, 1}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from effsam2.train.vos_data import TrainVideo

MIN_FIRST_FRAME_PIXELS = 64  # at S x S: a clip's first frame must show at least this much of the object


@dataclass(frozen=True)
class ClipSettings:
    frames: int = 8
    max_stride: int = 3
    synthetic_fraction: float = 0.3
    paste_fraction: float = 0.5  # of synthetic clips: object pasted onto another sequence's frame
    occlusion_prob: float = 0.3  # of synthetic clips
    leave_frame_prob: float = 0.2  # of synthetic clips
    distractor_prob: float = 0.5  # of all clips: another object pasted beside the target
    twin_prob: float = 0.0  # of the distractors: the target's own twin (its pixels, shifted sideways)
    zoom_prob: float = 0.5
    max_zoom: float = 1.6
    flip_prob: float = 0.5
    grayscale_prob: float = 0.05


def _frames(video: TrainVideo, idx) -> tuple[torch.Tensor, torch.Tensor]:
    frames = torch.from_numpy(video.frames[idx]).permute(0, 3, 1, 2).float() / 255.0
    masks = torch.from_numpy(video.masks[idx, 0]).float().unsqueeze(1)
    return frames, masks


def affine(scale: np.ndarray, angle: np.ndarray, tx: np.ndarray, ty: np.ndarray, flip: bool = False) -> torch.Tensor:
    """(T, 2, 3) sampling matrices (output -> input normalised coordinates) from per-frame parameters."""
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    sx = -1.0 if flip else 1.0
    theta = np.stack([np.stack([cos * sx, -sin, tx], -1), np.stack([sin * sx, cos, ty], -1)], -2)
    return torch.from_numpy(theta).float()


def warp(images: torch.Tensor, theta: torch.Tensor, padding: str = "border") -> torch.Tensor:
    """Sample (T, C, S, S) images through (T, 2, 3) matrices (bilinear)."""
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def smooth_path(rng: np.random.Generator, t: int, spread: float, start_spread: float = 0.0) -> np.ndarray:
    """(t,) values moving smoothly from a start near 0 to a random end, with a little jitter."""
    start = rng.uniform(-start_spread, start_spread)
    end = start + rng.uniform(-spread, spread)
    path = np.linspace(start, end, t)
    return path + rng.normal(0.0, spread * 0.05, t)


def object_motion(rng: np.random.Generator, t: int, leave: bool) -> torch.Tensor:
    """Sampling matrices of an object's path; ``leave``: it exits the frame mid-clip and comes back."""
    scale = np.exp(smooth_path(rng, t, 0.3))
    angle = smooth_path(rng, t, math.radians(20))
    tx, ty = smooth_path(rng, t, 0.5), smooth_path(rng, t, 0.3)
    if leave and t >= 4:
        away = np.sin(np.linspace(0, math.pi, t)) * rng.uniform(2.2, 3.0) * rng.choice([-1.0, 1.0])
        tx = tx + away
    return affine(scale, angle, tx, ty)


def _random_object(rng: np.random.Generator, videos: list[TrainVideo], exclude: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (1, 3, S, S) frame and its (1, 1, S, S) object mask from another sequence."""
    choices = [i for i in range(len(videos)) if i != exclude] or [0]
    v = videos[choices[rng.integers(len(choices))]]
    with_obj = v.frames_with_object(0)
    frame = int(with_obj[rng.integers(len(with_obj))]) if len(with_obj) else int(rng.integers(v.num_frames))
    return _frames(v, [frame])


def real_clip(rng: np.random.Generator, videos: list[TrainVideo], s: ClipSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive frames (stride 1..max_stride, maybe reversed) of a random sequence."""
    for _ in range(20):
        v = videos[rng.integers(len(videos))]
        stride = int(rng.integers(1, s.max_stride + 1))
        stride = max(1, min(stride, (v.num_frames - 1) // max(s.frames - 1, 1)))
        span = (s.frames - 1) * stride
        if span >= v.num_frames:
            continue
        idx = int(rng.integers(0, v.num_frames - span)) + stride * np.arange(s.frames)
        if rng.random() < 0.5:
            idx = idx[::-1].copy()
        if v.masks[idx[0], 0].sum() >= MIN_FIRST_FRAME_PIXELS:
            return _frames(v, idx)
    raise ValueError("no sequence has a clip whose first frame shows the object")


def synthetic_clip(rng: np.random.Generator, videos: list[TrainVideo], s: ClipSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """A clip made from one annotated frame (see the module docstring)."""
    t = s.frames
    vi = int(rng.integers(len(videos)))
    v = videos[vi]
    with_obj = v.frames_with_object(0)
    frame = int(with_obj[rng.integers(len(with_obj))])
    image, mask = _frames(v, [frame])
    motion = object_motion(rng, t, leave=rng.random() < s.leave_frame_prob)
    motion[0] = affine(np.ones(1), np.zeros(1), np.zeros(1), np.zeros(1))[0]  # the prompt frame: as annotated
    fg = warp(image.expand(t, -1, -1, -1), motion)
    fg_mask = warp(mask.expand(t, -1, -1, -1), motion, padding="zeros")
    if rng.random() < s.paste_fraction:
        background, _ = _random_object(rng, videos, vi)
        camera = affine(np.exp(smooth_path(rng, t, 0.1)), smooth_path(rng, t, 0.05), smooth_path(rng, t, 0.2),
                        smooth_path(rng, t, 0.1))
        bg = warp(background.expand(t, -1, -1, -1), camera)
        alpha = fg_mask.clamp(0, 1)
        frames = fg * alpha + bg * (1 - alpha)
    else:
        frames = fg
    masks = (fg_mask > 0.5).float()
    if rng.random() < s.occlusion_prob:
        occ_image, occ_mask = _random_object(rng, videos, vi)
        path = object_motion(rng, t, leave=False)
        # the occluder sweeps across the frame
        path[:, 0, 2] += torch.from_numpy(np.linspace(-1.2, 1.2, t) * rng.choice([-1.0, 1.0])).float()
        occ = warp(occ_image.expand(t, -1, -1, -1), path)
        occ_alpha = warp(occ_mask.expand(t, -1, -1, -1), path, padding="zeros").clamp(0, 1)
        occ_alpha[0] = 0  # the prompt frame stays unoccluded
        frames = occ * occ_alpha + frames * (1 - occ_alpha)
        masks = masks * (occ_alpha <= 0.5).float()
    return frames, masks


def add_distractor(rng: np.random.Generator, videos: list[TrainVideo], frames: torch.Tensor,
                   masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste an object of a random sequence beside the target on every frame (see the module docstring)."""
    t = frames.shape[0]
    image, mask = _random_object(rng, videos, exclude=-1)
    path = object_motion(rng, t, leave=False)
    side = rng.choice([-1.0, 1.0])
    path[:, 0, 2] += float(side * rng.uniform(0.5, 1.0))  # shifted sideways: beside the target, not on it
    path[:, 1, 2] += float(rng.uniform(-0.3, 0.3))
    path[:, :, :2] *= float(rng.uniform(0.8, 1.5))  # sampling scale > 1: the distractor appears smaller
    pasted = warp(image.expand(t, -1, -1, -1), path)
    alpha = warp(mask.expand(t, -1, -1, -1), path, padding="zeros").clamp(0, 1)
    return pasted * alpha + frames * (1 - alpha), masks * (alpha <= 0.5).float()


def add_twin(rng: np.random.Generator, frames: torch.Tensor,
              masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste the target's own pixels, shifted sideways by one constant offset, on every frame: a twin that
    moves exactly as the target; it hides the target where it covers it."""
    t = frames.shape[0]
    shift = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 0.9))
    theta = affine(np.ones(t), np.zeros(t), np.full(t, shift), np.full(t, float(rng.uniform(-0.2, 0.2))))
    pasted = warp(frames * masks, theta, padding="zeros")
    alpha = warp(masks, theta, padding="zeros").clamp(0, 1)
    return pasted + frames * (1 - alpha), masks * (alpha <= 0.5).float()


def augment(rng: np.random.Generator, frames: torch.Tensor, masks: torch.Tensor,
            s: ClipSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """One random zoom-crop, flip and colour jitter for the whole clip."""
    t = frames.shape[0]
    zoom = rng.uniform(1.0, s.max_zoom) if rng.random() < s.zoom_prob else 1.0
    flip = rng.random() < s.flip_prob
    if zoom > 1.0 or flip:
        room = 1.0 - 1.0 / zoom
        tx, ty = rng.uniform(-room, room), rng.uniform(-room, room)
        theta = affine(np.full(t, zoom), np.zeros(t), np.full(t, tx), np.full(t, ty), flip=flip)
        frames = warp(frames, theta)
        masks = (warp(masks, theta, padding="zeros") > 0.5).float()
    brightness = rng.uniform(0.9, 1.1)
    contrast = rng.uniform(0.95, 1.05)
    saturation = rng.uniform(0.95, 1.05)
    frames = frames * brightness
    mean = frames.mean(dim=(1, 2, 3), keepdim=True)
    frames = (frames - mean) * contrast + mean
    gray = (frames * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    frames = gray + (frames - gray) * saturation
    if rng.random() < s.grayscale_prob:
        frames = frames.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    return frames.clamp(0, 1), masks


def sample_clip(rng: np.random.Generator, videos: list[TrainVideo], s: ClipSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented clip: frames (T, 3, S, S) in [0, 1] and masks (T, 1, S, S); frame 0 shows the object."""
    for _ in range(10):
        make = synthetic_clip if rng.random() < s.synthetic_fraction else real_clip
        frames, masks = make(rng, videos, s)
        # no draw at 0, so that a run without distractors sees the clips it saw before they existed
        if s.distractor_prob > 0 and rng.random() < s.distractor_prob:
            if s.twin_prob > 0 and rng.random() < s.twin_prob:  # no draw at 0, as above
                frames, masks = add_twin(rng, frames, masks)
            else:
                frames, masks = add_distractor(rng, videos, frames, masks)
        frames, masks = augment(rng, frames, masks, s)
        if masks[0].sum() >= MIN_FIRST_FRAME_PIXELS:
            return frames, masks
    return frames, masks
