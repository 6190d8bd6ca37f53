"""J and F: hand-computed cases, properties, and agreement with a loop-based reference.

The reference below follows the official davis2017-evaluation algorithm step by step
(``_seg2bmap`` pixel by pixel, disk matching by explicit distances, the precision/recall branches)
and shares no code with ``effsam2.eval.metrics``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from effsam2.eval.metrics import (
    boundary_f_measure,
    boundary_map,
    boundary_radius,
    disk_dilate,
    region_similarity,
    sequence_statistics,
)

# ---------------------------------------------------------------- loop-based reference


def ref_seg2bmap(seg: np.ndarray) -> np.ndarray:
    """Official _seg2bmap, one pixel at a time: compare with right, lower, lower-right neighbours;
    last row only with the right one, last column only with the lower one, corner never."""
    rows = (np.asarray(seg) != 0).tolist()
    h, w = len(rows), len(rows[0])
    out = np.zeros((h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            v = rows[y][x]
            if y < h - 1 and x < w - 1:
                on = v != rows[y][x + 1] or v != rows[y + 1][x] or v != rows[y + 1][x + 1]
            elif y == h - 1 and x < w - 1:
                on = v != rows[y][x + 1]
            elif x == w - 1 and y < h - 1:
                on = v != rows[y + 1][x]
            else:
                on = False
            out[y, x] = on
    return out


def ref_matched(src: np.ndarray, dst: np.ndarray, r: int) -> int:
    """How many boundary pixels of src have a boundary pixel of dst within Euclidean distance r
    (= src & dilate(dst, disk(r)), since disk(r) is every offset with dx^2 + dy^2 <= r^2)."""
    dst_pts = np.argwhere(dst)
    count = 0
    for y, x in np.argwhere(src):
        if len(dst_pts) and ((dst_pts[:, 0] - y) ** 2 + (dst_pts[:, 1] - x) ** 2).min() <= r * r:
            count += 1
    return count


def ref_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    h, w = pred.shape
    r = bound_th if bound_th >= 1 else math.ceil(bound_th * math.sqrt(h * h + w * w))
    fg_b, gt_b = ref_seg2bmap(pred), ref_seg2bmap(gt)
    n_fg, n_gt = int(fg_b.sum()), int(gt_b.sum())
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = ref_matched(fg_b, gt_b, r) / n_fg
        recall = ref_matched(gt_b, fg_b, r) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def ref_j(pred: np.ndarray, gt: np.ndarray) -> float:
    p, g = pred != 0, gt != 0
    union = int((p | g).sum())
    return 1.0 if union == 0 else int((p & g).sum()) / union


# ---------------------------------------------------------------- hand-computed cases


def square(size: int, y0: int, x0: int, side: int) -> np.ndarray:
    m = np.zeros((size, size), dtype=bool)
    m[y0 : y0 + side, x0 : x0 + side] = True
    return m


def test_identical_masks():
    m = square(50, 10, 12, 20)
    assert region_similarity(m, m) == 1.0
    assert boundary_f_measure(m, m) == 1.0


def test_disjoint_masks():
    a, b = square(60, 2, 2, 10), square(60, 40, 40, 10)  # 38 px apart, tolerance is 1 px
    assert region_similarity(a, b) == 0.0
    assert boundary_f_measure(a, b) == 0.0


def test_both_empty():
    z = np.zeros((30, 40), dtype=bool)
    assert region_similarity(z, z) == 1.0
    assert boundary_f_measure(z, z) == 1.0  # official: no boundary on either side -> P = R = 1


@pytest.mark.parametrize("empty_is_pred", [True, False])
def test_one_empty(empty_is_pred):
    m, z = square(40, 5, 5, 10), np.zeros((40, 40), dtype=bool)
    pred, gt = (z, m) if empty_is_pred else (m, z)
    assert region_similarity(pred, gt) == 0.0
    assert boundary_f_measure(pred, gt) == 0.0  # P=1,R=0 or P=0,R=1 -> F = 0


def test_full_mask_has_no_boundary_quirk():
    """Official quirk: the image border is never a boundary, so a full mask has none at all and
    scores F = 1 against an empty mask (while J = 0)."""
    full, empty = np.ones((20, 30), dtype=bool), np.zeros((20, 30), dtype=bool)
    assert not boundary_map(full).any()
    assert boundary_f_measure(full, empty) == 1.0
    assert region_similarity(full, empty) == 0.0


def test_square_boundary_pixels():
    """A side-10 square at (y0, x0): inner bottom row + right column (19 px) and the outer row
    above and column left of it, each one longer (21 px): 4 * side pixels in all."""
    m = square(30, 10, 10, 10)
    b = boundary_map(m)
    expected = np.zeros_like(m)
    expected[19, 10:20] = True  # last row of the square
    expected[10:20, 19] = True  # last column of the square
    expected[9, 9:20] = True  # row above, from one left of the square to its last column
    expected[9:20, 9] = True  # column left, from one above the square to its last row
    assert np.array_equal(b, expected)
    assert b.sum() == 40


@pytest.mark.parametrize(
    ("size", "bound_th", "radius", "expected_f"),
    [
        # ceil(0.008 * 100 * sqrt 2) = ceil(1.13) = 2 < shift 3
        (100, 0.008, 2, 0.6),
        # ceil(0.008 * 200 * sqrt 2) = ceil(2.26) = 3 = shift 3
        (200, 0.008, 3, 1.0),
        (100, 2, 2, 0.6),
        (100, 3, 3, 1.0),
    ],
)
def test_shifted_square(size, bound_th, radius, expected_f):
    """Side-10 square shifted right by k = 3 px.

    J = 10*7 / (10*13) = 7/13. F with tolerance r = 2 (< k), counting unmatched boundary pixels
    of the shifted square B (40 px): its right column (9 px, 3 px from A's) and the last pixel of
    its top and bottom rows (3 px beyond A's rows), plus 5 px in the middle of its left column
    (3 px from A's left column and more than 2 px from A's top/bottom rows) -> 16 unmatched,
    P = 24/40. Symmetrically for A: its left column (10 px), the first pixel of its top row and
    5 px in the middle of its right column -> R = 24/40. F = 0.6. With r = 3 (>= k) every pixel
    matches its own translate: F = 1.
    """
    assert boundary_radius(size, size, bound_th) == radius
    a = square(size, 40, 40, 10)
    b = square(size, 40, 43, 10)
    assert region_similarity(b, a) == pytest.approx(7 / 13, abs=1e-15)
    assert boundary_f_measure(b, a, bound_th) == pytest.approx(expected_f, abs=1e-15)


def test_radius_davis_480p():
    assert boundary_radius(480, 854) == 8  # ceil(0.008 * 979.6) = ceil(7.84)
    with pytest.raises(ValueError):
        boundary_radius(10, 10, 2.5)


def test_disk_dilate_matches_disk():
    """A single pixel dilates to exactly the offsets with dx^2 + dy^2 <= r^2."""
    r = 5
    x = np.zeros((1, 21, 21), dtype=bool)
    x[0, 10, 10] = True
    yy, xx = np.mgrid[-10:11, -10:11]
    assert np.array_equal(disk_dilate(x, r)[0], yy**2 + xx**2 <= r * r)


def test_batch_equals_single_and_accepts_torch():
    import torch

    rng = np.random.default_rng(0)
    p = rng.random((5, 24, 31)) > 0.6
    g = rng.random((5, 24, 31)) > 0.6
    batch_f, batch_j = boundary_f_measure(p, g, 2), region_similarity(p, g)
    assert batch_f.shape == (5,)
    for i in range(5):
        assert batch_f[i] == boundary_f_measure(p[i], g[i], 2)
        assert batch_j[i] == region_similarity(p[i], g[i])
    assert np.array_equal(boundary_f_measure(torch.from_numpy(p), torch.from_numpy(g), 2), batch_f)
    with pytest.raises(ValueError):
        region_similarity(p, g[:, :-1])


def test_sequence_statistics_by_hand():
    v = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    # T = 8: round(linspace(1, 8, 5) + 1e-10) - 1 = [0, 2, 4, 5, 7]; first bin v[0..2], last v[5..7]
    mean, recall, decay = sequence_statistics(v)
    assert mean == pytest.approx(0.55)
    assert recall == pytest.approx(4 / 8)  # 0.9, 0.8, 0.7, 0.6 are > 0.5 (0.5 is not)
    assert decay == pytest.approx(0.8 - 0.3)
    assert all(math.isnan(x) for x in sequence_statistics(np.array([])))


# ---------------------------------------------------------------- properties

small_masks = st.integers(1, 12).flatmap(
    lambda h: st.integers(1, 12).flatmap(
        lambda w: st.tuples(arrays(bool, (h, w)), arrays(bool, (h, w)), st.sampled_from([1, 2, 3, 0.008]))
    )
)


@settings(max_examples=300, deadline=None)
@given(small_masks)
def test_region_similarity_properties(case):
    a, b, _ = case
    j = region_similarity(a, b)
    assert j == region_similarity(b, a)
    assert 0.0 <= j <= 1.0
    assert (j == 1.0) == bool(np.array_equal(a, b))
    assert j == ref_j(a, b)


@settings(max_examples=300, deadline=None)
@given(small_masks)
def test_boundary_f_properties_and_reference(case):
    a, b, th = case
    f = boundary_f_measure(a, b, th)
    assert 0.0 <= f <= 1.0
    assert f == pytest.approx(boundary_f_measure(b, a, th), abs=1e-15)
    assert boundary_f_measure(a, a, th) == 1.0
    assert np.array_equal(boundary_map(a), ref_seg2bmap(a))
    assert f == pytest.approx(ref_f(a, b, th), abs=1e-15)


# ---------------------------------------------------------------- real DAVIS masks


def _shift(m: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(m)
    h, w = m.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = m[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def _erode(m: np.ndarray, k: int) -> np.ndarray:
    out = m.copy()
    for dy in range(-k, k + 1):
        for dx in range(-k, k + 1):
            out &= _shift(m, dy, dx)  # outside the image counts as background
    return out


def _dilate(m: np.ndarray, k: int) -> np.ndarray:
    return ~_erode(~m, k)


@pytest.mark.parametrize(
    ("seq", "frame"),
    [("blackswan", 10), ("kite-surf", 20), ("motocross-jump", 30)],
)
def test_agrees_with_reference_on_davis(davis_dir, seq, frame):
    ann = davis_dir / "Annotations" / "480p" / seq
    gt = np.array(Image.open(ann / f"{frame:05d}.png")) > 0
    nxt = np.array(Image.open(ann / f"{frame + 1:05d}.png")) > 0
    preds = {
        "shifted": _shift(gt, 6, -11),
        "eroded": _erode(gt, 3),
        "dilated": _dilate(gt, 4),
        "next frame": nxt,
    }
    expected_f = {name: ref_f(pred, gt) for name, pred in preds.items()}
    assert len(set(expected_f.values())) > 1  # the perturbations give different, non-trivial scores
    for name, pred in preds.items():
        assert region_similarity(pred, gt) == pytest.approx(ref_j(pred, gt), abs=1e-15), name
        assert boundary_f_measure(pred, gt) == pytest.approx(expected_f[name], abs=1e-15), name
    batch = np.stack(list(preds.values()))
    got = boundary_f_measure(batch, np.broadcast_to(gt, batch.shape))
    assert got == pytest.approx(list(expected_f.values()), abs=1e-15)
