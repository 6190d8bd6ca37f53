"""DAVIS region (J) and boundary (F) measures, vectorised over frames.

Both measures follow ``davis2017/metrics.py`` of the official davis2017-evaluation code
(``db_eval_iou``, ``db_eval_boundary``/``f_measure``, ``_seg2bmap``) and give the same numbers;
they are written independently on numpy boolean arrays and process a batch of frames at once.

Quirks of the official code that are reproduced on purpose (so that scores match published ones):

* **Boundary map** (``_seg2bmap``, D. Martin's Berkeley benchmark code). A pixel is on the
  boundary when it differs from its right, lower or lower-right neighbour. The last row only
  compares with the right neighbour, the last column only with the lower neighbour, and the
  bottom-right pixel is never on the boundary. So boundaries sit on the top-left side of an
  object's outline (half a pixel towards the origin), the image border itself is never a
  boundary, and a mask covering the whole image has *no* boundary pixels at all (hence F = 1
  against an empty mask, see below). The official ``width``/``height`` resampling branch is
  never used by the evaluation (they always equal the mask size) and is not provided.
* **Tolerance**: ``bound_pix = ceil(bound_th * sqrt(H**2 + W**2))`` for ``bound_th < 1``
  (8 pixels at 854x480), or ``bound_th`` itself when ``bound_th >= 1``. Boundary pixels match
  when they lie within a *disk* of that radius: offsets with ``dx**2 + dy**2 <= r**2`` (the
  ``skimage.morphology.disk`` footprint the official code passes to ``cv2.dilate``). Pixels
  outside the image never contribute (cv2's default border for dilation).
* **Empty boundaries** (precision, recall): none in the prediction but some in the ground truth
  gives P = 1, R = 0; some in the prediction but none in the ground truth gives P = 0, R = 1;
  none in either gives P = R = 1. F = 2PR / (P + R), and 0 when P + R = 0. So F = 0 when only
  one side has a boundary and F = 1 when neither has.
* **J** (Jaccard) is 1 when both masks are empty.
* The official ``void_pixels`` argument is not offered: the official evaluation builds it from
  ground-truth pixels equal to 255 *after* it has already set those pixels to 0, so it never
  masks anything. ``effsam2.eval`` likewise treats 255 in ground truth as background.

Speed: each batch of frames is cropped to the bounding box of the foreground of both masks grown
by one pixel up/left (where outer boundary pixels sit) and one down/right (a background row and
column, whose boundary value is 0 under either the interior or the last-row rule). That crop is
exact: boundary pixels only occur inside it, and dilation is only ever read at boundary pixels.
Plain numpy is used rather than torch: single-threaded numpy boolean ops were both faster and far
steadier on our shared 2-core CPU than torch's (whose threaded in-place bitwise ops slowed down
several-fold under load). torch tensors are accepted as inputs.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is accepted as input but not needed at import time
    import torch

__all__ = [
    "boundary_f_measure",
    "boundary_map",
    "boundary_radius",
    "disk_dilate",
    "region_similarity",
    "sequence_statistics",
]

# Frames per batch: small batches keep the shared crop tight around moving objects.
_BATCH = 8


def _as_bool(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Any numpy array or tensor -> bool ndarray (non-zero = True), no copy when possible."""
    if hasattr(x, "detach"):  # a torch tensor (duck-typed so torch is not imported here)
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    return x if x.dtype == bool else x != 0


def _as_batch(
    pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate a (H, W) or (N, H, W) pair; returns (N, H, W) bool arrays and whether it was 2-D."""
    p, g = _as_bool(pred), _as_bool(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground truth {g.shape}")
    if p.ndim == 2:
        return p[None], g[None], True
    if p.ndim == 3:
        return p, g, False
    raise ValueError(f"masks must be (H, W) or (N, H, W), got shape {p.shape}")


def _count(maps: np.ndarray) -> np.ndarray:
    """True pixels per frame of (N, H, W) bool maps, as float64."""
    return np.count_nonzero(maps, axis=(1, 2)).astype(np.float64)


def region_similarity(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> float | np.ndarray:
    """Jaccard index J = |pred & gt| / |pred | gt|, 1 when both are empty.

    Args:
        pred, gt: binary masks, ``(H, W)`` or ``(N, H, W)``, any dtype (non-zero = foreground).

    Returns:
        a float for a single pair, else ``(N,) float64``.
    """
    p, g, single = _as_batch(pred, gt)
    inter = _count(p & g)
    union = _count(p | g)
    j = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)
    return float(j[0]) if single else j


def boundary_radius(height: int, width: int, bound_th: float = 0.008) -> int:
    """Matching tolerance in pixels: ``ceil(bound_th * image diagonal)``, or ``bound_th`` if >= 1.

    A ``bound_th >= 1`` must be a whole number: the official disk footprint of a fractional
    radius is an even-sized, off-centre kernel that is not worth imitating.
    """
    if bound_th <= 0:
        raise ValueError(f"bound_th must be positive, got {bound_th}")
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise ValueError(f"bound_th >= 1 is a pixel count and must be whole, got {bound_th}")
        return int(bound_th)
    # sqrt of the exact integer sum of squares, as np.linalg.norm(shape) computes it.
    return math.ceil(bound_th * math.sqrt(height * height + width * width))


def boundary_map(masks: np.ndarray | torch.Tensor) -> np.ndarray:
    """One-pixel-wide boundaries of binary masks, as the official ``_seg2bmap`` draws them.

    Args:
        masks: ``(H, W)`` or ``(N, H, W)`` binary masks.

    Returns:
        bool array of the same shape. See the module docstring for the exact rule.
    """
    seg = _as_bool(masks)
    if seg.ndim not in (2, 3):
        raise ValueError(f"masks must be (H, W) or (N, H, W), got shape {seg.shape}")
    b = np.zeros_like(seg)
    here = seg[..., :-1, :-1]
    b[..., :-1, :-1] = (here ^ seg[..., :-1, 1:]) | (here ^ seg[..., 1:, :-1]) | (here ^ seg[..., 1:, 1:])
    b[..., -1, :-1] = seg[..., -1, :-1] ^ seg[..., -1, 1:]  # last row: right neighbour only
    b[..., :-1, -1] = seg[..., :-1, -1] ^ seg[..., 1:, -1]  # last column: lower neighbour only
    # b[..., -1, -1] stays False: the bottom-right pixel is never a boundary pixel.
    return b


def disk_dilate(maps: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of ``(N, H, W)`` bool maps by the disk ``dx**2 + dy**2 <= radius**2``.

    The disk is the union over rows ``dy`` of horizontal segments of half-width
    ``isqrt(r**2 - dy**2)``. Those half-widths only shrink as ``|dy|`` grows, so one horizontal
    dilation is grown step by step (widest last) and each row of the disk ORs a vertically
    shifted copy of it into the output: about 4r boolean passes instead of (2r+1)**2.
    Pixels beyond the image are treated as background.
    """
    maps = np.asarray(maps)
    if maps.dtype != bool or maps.ndim != 3:
        raise ValueError("disk_dilate expects an (N, H, W) bool array")
    _, height, width = maps.shape
    half_width = [math.isqrt(radius * radius - dy * dy) for dy in range(radius + 1)]
    out = np.zeros_like(maps)
    row = maps.copy()  # horizontal dilation of `maps` by the current half-width w
    w = 0
    for dy in range(radius, -1, -1):  # narrowest rows (largest |dy|) first
        while w < half_width[dy]:
            w += 1
            if w < width:
                row[:, :, w:] |= maps[:, :, :-w]
                row[:, :, :-w] |= maps[:, :, w:]
        if dy == 0:
            out |= row
        elif dy < height:
            out[:, dy:, :] |= row[:, :-dy, :]
            out[:, :-dy, :] |= row[:, dy:, :]
    return out


def _crop_to_objects(p: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop (B, H, W) masks to where boundary pixels can be (see the module docstring)."""
    fg = (p | g).any(axis=0)
    rows = np.flatnonzero(fg.any(axis=1))
    if rows.size == 0:
        return p[:, :0, :0], g[:, :0, :0]
    cols = np.flatnonzero(fg.any(axis=0))
    height, width = fg.shape
    y0, y1 = max(0, rows[0] - 1), min(height, rows[-1] + 2)
    x0, x1 = max(0, cols[0] - 1), min(width, cols[-1] + 2)
    return p[:, y0:y1, x0:x1], g[:, y0:y1, x0:x1]


def boundary_f_measure(
    pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor, bound_th: float = 0.008
) -> float | np.ndarray:
    """Boundary F-measure between predicted and ground-truth masks (DAVIS F).

    Args:
        pred, gt: binary masks, ``(H, W)`` or ``(N, H, W)``, any dtype (non-zero = foreground).
        bound_th: tolerance as a fraction of the image diagonal (< 1) or in pixels (>= 1, whole).

    Returns:
        a float for a single pair, else ``(N,) float64`` in [0, 1].
    """
    p, g, single = _as_batch(pred, gt)
    radius = boundary_radius(p.shape[1], p.shape[2], bound_th)
    n = p.shape[0]
    n_fg, n_gt, fg_hit, gt_hit = (np.zeros(n) for _ in range(4))
    for start in range(0, n, _BATCH):
        sl = slice(start, min(n, start + _BATCH))
        pc, gc = _crop_to_objects(p[sl], g[sl])
        if pc.size == 0:  # both empty everywhere: no boundaries, counts stay 0
            continue
        pb, gb = boundary_map(pc), boundary_map(gc)
        n_fg[sl], n_gt[sl] = _count(pb), _count(gb)
        fg_hit[sl] = _count(pb & disk_dilate(gb, radius))
        gt_hit[sl] = _count(gb & disk_dilate(pb, radius))
    f = _f_from_counts(n_fg, n_gt, fg_hit, gt_hit)
    return float(f[0]) if single else f


def _f_from_counts(n_fg: np.ndarray, n_gt: np.ndarray, fg_hit: np.ndarray, gt_hit: np.ndarray) -> np.ndarray:
    """Precision, recall and F with the official edge cases (module docstring), float64."""
    precision = np.divide(fg_hit, n_fg, out=np.zeros_like(fg_hit), where=n_fg > 0)
    recall = np.divide(gt_hit, n_gt, out=np.zeros_like(gt_hit), where=n_gt > 0)
    precision[n_fg == 0] = 1.0  # no predicted boundary: nothing predicted wrongly
    recall[n_gt == 0] = 1.0  # no true boundary: nothing missed
    denom = precision + recall
    return np.divide(2.0 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)


def sequence_statistics(values: np.ndarray) -> tuple[float, float, float]:
    """Mean, recall and decay of one object's per-frame J (or F) values, as ``db_statistics``.

    * mean: average over frames.
    * recall: fraction of frames with a value above 0.5.
    * decay: mean of the first quarter minus mean of the last quarter, with the official bins:
      boundaries ``round(linspace(1, T, 5)) - 1`` and bin ``i`` spanning frames
      ``ids[i] .. ids[i+1]`` *inclusive* (neighbouring bins share a frame). The official code
      stores these indices as uint8, which wraps for sequences over 256 frames; plain integers
      are used here, which agrees everywhere the official result is meaningful.

    Returns NaNs for an empty array.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    ids = (np.round(np.linspace(1, v.size, 5) + 1e-10) - 1).astype(np.int64)
    first = v[ids[0] : ids[1] + 1]
    last = v[ids[3] : ids[4] + 1]
    return float(v.mean()), float((v > 0.5).mean()), float(first.mean() - last.mean())
