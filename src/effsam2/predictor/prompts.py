"""Validate and convert user prompts (pixel clicks, boxes, masks) into model-space tensors."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from effsam2.errors import PromptError
from effsam2.modeling.sam2_model import PointPrompt

BOX_LABELS = (2, 3)  # a box enters the decoder as its top-left and bottom-right corners


def check_frame_index(frame_idx, num_frames: int | None) -> int:
    if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
        raise PromptError(f"frame index must be an integer, got {frame_idx!r}")
    if frame_idx < 0 or (num_frames is not None and frame_idx >= num_frames):
        # a stream (num_frames None) has no end: only a negative index is out of range there
        valid = (f"the video has {num_frames} frames (valid: 0..{num_frames - 1})" if num_frames is not None
                 else "frame indices start at 0")
        raise PromptError(f"frame index {frame_idx} is out of range: {valid}")
    return int(frame_idx)


def _as_tensor(values, dtype: torch.dtype, what: str) -> torch.Tensor:
    try:
        t = values.detach().cpu().to(dtype) if isinstance(values, torch.Tensor) else torch.tensor(
            np.asarray(values), dtype=dtype)
    except (TypeError, ValueError) as err:
        raise PromptError(f"{what} must be numeric: {err}") from None
    if not torch.isfinite(t.float()).all():
        raise PromptError(f"{what} contains NaN or infinity")
    return t


def points_to_model_space(points, labels, box, *, video_hw: tuple[int, int], image_size: int,
                          normalize_coords: bool) -> PointPrompt:
    """Clicks (N, 2) x,y with labels (N,) in {0, 1} and/or a box (4,) x0,y0,x1,y1 -> a (1, M, 2) prompt.

    With ``normalize_coords`` the inputs are pixels of the original video and must lie inside it; otherwise
    they are already normalised to [0, 1]. The box goes first, as two corner points (labels 2 and 3).
    """
    if (points is None) != (labels is None):
        raise PromptError("points and labels must be given together")
    if points is None and box is None:
        raise PromptError("give at least one point (with its label) or a box")
    h, w = video_hw
    coords = torch.zeros(0, 2)
    lab = torch.zeros(0, dtype=torch.int32)
    if points is not None:
        coords = _as_tensor(points, torch.float32, "points").reshape(-1, 2)
        lab = _as_tensor(labels, torch.int32, "labels").reshape(-1)
        if coords.shape[0] != lab.shape[0]:
            raise PromptError(f"{coords.shape[0]} points but {lab.shape[0]} labels")
        bad = [int(v) for v in lab.tolist() if v not in (0, 1)]
        if bad:
            raise PromptError(f"point labels must be 1 (foreground) or 0 (background), got {bad[0]}")
    if box is not None:
        corners = _as_tensor(box, torch.float32, "box").reshape(-1)
        if corners.numel() != 4:
            raise PromptError(f"a box is 4 numbers x0,y0,x1,y1, got {corners.numel()}")
        if corners[2] <= corners[0] or corners[3] <= corners[1]:
            raise PromptError(f"box {corners.tolist()} is empty: need x0 < x1 and y0 < y1")
        coords = torch.cat([corners.reshape(2, 2), coords], dim=0)
        lab = torch.cat([torch.tensor(BOX_LABELS, dtype=torch.int32), lab])
    limit = torch.tensor([w, h], dtype=torch.float32) if normalize_coords else torch.ones(2)
    outside = ((coords < 0) | (coords > limit)).any(dim=1)
    if outside.any():
        x, y = coords[outside][0].tolist()
        frame = f"{w}x{h} frame" if normalize_coords else "[0, 1] normalised range"
        raise PromptError(f"prompt coordinate ({x:g}, {y:g}) is outside the {frame}")
    if normalize_coords:
        coords = coords / limit
    return PointPrompt((coords * image_size)[None], lab[None])


def concat_points(old: PointPrompt | None, new: PointPrompt) -> PointPrompt:
    if old is None:
        return new
    return PointPrompt(torch.cat([old.coords, new.coords], dim=1), torch.cat([old.labels, new.labels], dim=1))


def mask_to_model_space(mask, *, video_hw: tuple[int, int], image_size: int) -> torch.Tensor:
    """A (H, W) binary mask of the video's size -> (1, 1, S, S) float {0, 1} at the model's resolution.

    Resized with antialiased bilinear interpolation and thresholded at 0.5, as the official predictor does.
    """
    m = _as_tensor(mask, torch.float32, "mask") if not isinstance(mask, torch.Tensor) else mask.detach().cpu()
    if m.dim() != 2:
        raise PromptError(f"a mask prompt must be 2-D (H, W), got shape {tuple(m.shape)}")
    if tuple(m.shape) != tuple(video_hw):
        raise PromptError(f"mask prompt is {m.shape[1]}x{m.shape[0]} but the video frames are "
                          f"{video_hw[1]}x{video_hw[0]}")
    m = (m > 0).float()[None, None] if m.dtype != torch.bool else m.float()[None, None]
    if m.shape[-2:] != (image_size, image_size):
        m = F.interpolate(m, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
        m = (m >= 0.5).float()
    return m
