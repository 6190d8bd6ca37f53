"""DAVIS palette, label maps from per-object masks, palette PNG round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from effsam2.errors import DatasetError, PromptError
from effsam2.io import as_bool_mask, davis_palette, labels_from_masks, read_label_png, save_label_png


def test_palette_matches_the_davis_colour_map():
    pal = davis_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[:9].tolist() == [
        [0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128],
        [128, 0, 128], [0, 128, 128], [128, 128, 128], [64, 0, 0],
    ]
    assert pal[255].tolist() == [224, 224, 192]  # the VOC "void" colour
    assert len({tuple(c) for c in pal}) == 256
    pal[1] = 0  # a copy: callers cannot change the module's palette
    assert davis_palette()[1].tolist() == [128, 0, 0]


def test_palette_png_round_trip(tmp_path):
    labels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    labels[0, 0] = 0
    path = save_label_png(tmp_path / "00000.png", labels)
    im = Image.open(path)
    assert im.mode == "P"
    np.testing.assert_array_equal(np.array(im), labels)
    assert np.array(im.getpalette()[:768], np.uint8).reshape(-1, 3)[:256].tolist() == davis_palette().tolist()
    np.testing.assert_array_equal(read_label_png(path), labels)
    # other integer dtypes with values in range are fine
    save_label_png(tmp_path / "b.png", labels.astype(np.int64))
    np.testing.assert_array_equal(read_label_png(tmp_path / "b.png"), labels)


def test_davis_annotation_reads_back(davis_dir, tmp_path):
    ann = davis_dir / "Annotations" / "480p" / "blackswan" / "00000.png"
    a = read_label_png(ann)
    assert a.shape == (480, 854) and set(np.unique(a)) <= {0, 1, 255}
    save_label_png(tmp_path / "x.png", (a > 0).astype(np.uint8))
    np.testing.assert_array_equal(read_label_png(tmp_path / "x.png"), (a > 0))


@pytest.mark.parametrize("bad", [256, -1, 1000])
def test_ids_outside_0_255_are_refused(tmp_path, bad):
    labels = np.zeros((4, 4), np.int32)
    labels[1, 1] = bad
    with pytest.raises(PromptError, match=str(bad)):
        save_label_png(tmp_path / "x.png", labels)
    assert not (tmp_path / "x.png").exists()


def test_bad_label_arrays(tmp_path):
    with pytest.raises(ValueError, match="integer"):
        save_label_png(tmp_path / "x.png", np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="shape"):
        save_label_png(tmp_path / "x.png", np.zeros((4, 4, 3), np.uint8))
    Image.new("RGB", (4, 4), (1, 2, 3)).save(tmp_path / "rgb.png")  # a colour outside the DAVIS palette
    with pytest.raises(DatasetError, match="rgb.png"):
        read_label_png(tmp_path / "rgb.png")
    with pytest.raises(DatasetError):
        read_label_png(tmp_path / "missing.png")


def test_overlaps_lowest_id_wins():
    a = np.zeros((3, 4), bool)
    a[:, :2] = True
    b = np.zeros((3, 4), bool)
    b[:, 1:3] = True
    labels = labels_from_masks({7: b, 3: a})
    assert labels.tolist() == [[3, 3, 7, 0]] * 3
    assert labels.dtype == np.uint8


def test_overlaps_with_scores():
    a = np.zeros((2, 4), bool)
    a[:, :3] = True
    b = np.zeros((2, 4), bool)
    b[:, 1:] = True
    assert labels_from_masks({1: a, 2: b}, scores={1: 0.2, 2: 0.9}).tolist() == [[1, 2, 2, 2]] * 2
    assert labels_from_masks({1: a, 2: b}, scores={1: 0.5, 2: 0.5}).tolist() == [[1, 1, 1, 2]] * 2  # tie
    per_pixel = {1: np.array([[0, 5, -1, 0]] * 2), 2: np.array([[0, 1, 3, 0]] * 2)}
    assert labels_from_masks({1: a, 2: b}, scores=per_pixel).tolist() == [[1, 1, 2, 2]] * 2
    with pytest.raises(ValueError, match="no score for object 2"):
        labels_from_masks({1: a, 2: b}, scores={1: 1.0})


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.integers(1, 255), hnp.arrays(bool, (5, 6)), max_size=5))
def test_label_is_smallest_covering_id(masks):
    labels = labels_from_masks(masks, shape=(5, 6))
    for y in range(5):
        for x in range(6):
            covering = [i for i, m in masks.items() if m[y, x]]
            assert labels[y, x] == (min(covering) if covering else 0)


def test_labels_from_masks_validation():
    assert labels_from_masks({}, shape=(2, 3)).tolist() == [[0, 0, 0]] * 2
    with pytest.raises(ValueError, match="shape="):
        labels_from_masks({})
    m = np.ones((2, 3), bool)
    for bad in (0, 256, -3):
        with pytest.raises(PromptError, match=str(bad)):
            labels_from_masks({bad: m})
    with pytest.raises(PromptError, match="integer"):
        labels_from_masks({"a": m})
    with pytest.raises(ValueError, match="expected"):
        labels_from_masks({1: m, 2: np.ones((3, 3), bool)})
    with pytest.raises(ValueError, match="logits > 0"):
        labels_from_masks({1: m.astype(np.float32)})
    assert labels_from_masks({1: m[None]}).shape == (2, 3)  # (1, H, W), as SAM 2 returns them
    assert labels_from_masks({1: m.astype(np.uint8)}).tolist() == [[1, 1, 1]] * 2
    assert as_bool_mask(np.array([[0, 2]])).tolist() == [[False, True]]
