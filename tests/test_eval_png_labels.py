"""read_label_png / read_binary_mask / write_label_png on every PNG flavour and error case."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from effsam2.errors import DatasetError
from effsam2.io.masks import save_label_png as write_label_png
from effsam2.io.png_labels import DAVIS_PALETTE, read_binary_mask, read_label_png

IDS = np.array([[0, 1, 2, 2], [3, 0, 0, 1], [0, 0, 7, 7]], dtype=np.uint8)


def _save(path, arr, mode, palette=False):
    h, w = arr.shape[:2]
    img = Image.frombytes(mode, (w, h), np.ascontiguousarray(arr).tobytes())
    if palette:
        img.putpalette(DAVIS_PALETTE.tobytes())
    img.save(path)
    return path


def test_davis_palette_known_colours():
    assert DAVIS_PALETTE.shape == (256, 3)
    assert DAVIS_PALETTE[0].tolist() == [0, 0, 0]
    assert DAVIS_PALETTE[1].tolist() == [128, 0, 0]
    assert DAVIS_PALETTE[2].tolist() == [0, 128, 0]
    assert DAVIS_PALETTE[3].tolist() == [128, 128, 0]
    assert DAVIS_PALETTE[4].tolist() == [0, 0, 128]
    assert DAVIS_PALETTE[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in DAVIS_PALETTE.tolist()}) == 256


def test_palette_png_gives_indices(tmp_path):
    labels = read_label_png(_save(tmp_path / "p.png", IDS, "P", palette=True))
    assert labels.dtype == np.uint8 and labels.shape == IDS.shape
    assert np.array_equal(labels, IDS)


@pytest.mark.parametrize("mode", ["L", "P"])
def test_binary_0_255_becomes_0_1(tmp_path, mode):
    arr = (IDS > 0).astype(np.uint8) * 255
    assert np.array_equal(read_label_png(_save(tmp_path / "b.png", arr, mode)), IDS > 0)


def test_255_kept_when_other_ids_present(tmp_path):
    arr = IDS.copy()
    arr[0, 0] = 255  # e.g. DAVIS-2017 void next to real ids
    assert read_label_png(_save(tmp_path / "v.png", arr, "P", palette=True))[0, 0] == 255


def test_grey_values_are_ids_and_0_1_stays(tmp_path):
    assert np.array_equal(read_label_png(_save(tmp_path / "l.png", IDS, "L")), IDS)
    binary = (IDS > 0).astype(np.uint8)
    assert np.array_equal(read_label_png(_save(tmp_path / "01.png", binary, "L")), binary)


def test_la_and_one_bit(tmp_path):
    la = np.stack([(IDS > 0).astype(np.uint8) * 255, np.full(IDS.shape, 77, np.uint8)], axis=-1)
    Image.frombytes("LA", IDS.shape[::-1], la.tobytes()).save(tmp_path / "la.png")
    assert np.array_equal(read_label_png(tmp_path / "la.png"), IDS > 0)
    Image.frombytes("L", IDS.shape[::-1], ((IDS > 0) * 255).astype(np.uint8).tobytes()).convert("1").save(
        tmp_path / "one.png"
    )
    assert np.array_equal(read_label_png(tmp_path / "one.png"), IDS > 0)


def test_rgb_palette_colours_map_back(tmp_path):
    rgb = DAVIS_PALETTE[IDS]
    Image.frombytes("RGB", IDS.shape[::-1], rgb.tobytes()).save(tmp_path / "rgb.png")
    assert np.array_equal(read_label_png(tmp_path / "rgb.png"), IDS)
    grey = np.repeat(((IDS > 0) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    Image.frombytes("RGB", IDS.shape[::-1], grey.tobytes()).save(tmp_path / "grey.png")
    assert np.array_equal(read_label_png(tmp_path / "grey.png"), IDS > 0)


def test_rgb_unknown_colour_is_an_error(tmp_path):
    rgb = DAVIS_PALETTE[IDS].copy()
    rgb[1, 2] = (10, 200, 30)
    Image.frombytes("RGB", IDS.shape[::-1], rgb.tobytes()).save(tmp_path / "odd.png")
    with pytest.raises(DatasetError, match="odd.png") as err:
        read_label_png(tmp_path / "odd.png")
    assert "(10, 200, 30)" in str(err.value)


def test_sixteen_bit(tmp_path):
    arr = (IDS > 0).astype(np.uint16) * 65535
    Image.frombytes("I;16", IDS.shape[::-1], arr.tobytes()).save(tmp_path / "b16.png")
    assert np.array_equal(read_label_png(tmp_path / "b16.png"), IDS > 0)
    big = IDS.astype(np.uint16)
    big[0, 0] = 300
    Image.frombytes("I;16", IDS.shape[::-1], big.tobytes()).save(tmp_path / "big.png")
    with pytest.raises(DatasetError, match="big.png"):
        read_label_png(tmp_path / "big.png")


def test_missing_corrupt_and_not_png(tmp_path):
    with pytest.raises(DatasetError, match="not found.*nope.png"):
        read_label_png(tmp_path / "nope.png")
    (tmp_path / "garbage.png").write_bytes(b"this is not an image")
    with pytest.raises(DatasetError, match="garbage.png"):
        read_label_png(tmp_path / "garbage.png")
    good = _save(tmp_path / "good.png", np.zeros((64, 64), np.uint8) + IDS[0, 1], "L")
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:60])
    with pytest.raises(DatasetError, match="truncated.png"):
        read_label_png(tmp_path / "truncated.png")
    Image.frombytes("L", (4, 3), IDS.tobytes()).save(tmp_path / "jpeg.png", format="JPEG")
    with pytest.raises(DatasetError, match="not a PNG.*jpeg.png"):
        read_label_png(tmp_path / "jpeg.png")
    for bad in ("nope.png", "garbage.png"):
        with pytest.raises(DatasetError) as err:
            read_binary_mask(tmp_path / bad)
        assert "\n" not in str(err.value)


def test_read_binary_mask_and_write_roundtrip(tmp_path):
    write_label_png(tmp_path / "w.png", IDS)
    img = Image.open(tmp_path / "w.png")
    assert img.mode == "P" and img.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
    assert np.array_equal(read_label_png(tmp_path / "w.png"), IDS)
    mask = read_binary_mask(tmp_path / "w.png")
    assert mask.dtype == bool and np.array_equal(mask, IDS > 0)
    assert [p.name for p in tmp_path.iterdir()] == ["w.png"]  # no temporary file left behind
    with pytest.raises(ValueError):
        write_label_png(tmp_path / "x.png", np.full((2, 2), 256))


def test_real_davis2016_mask(davis_dir):
    path = davis_dir / "Annotations" / "480p" / "blackswan" / "00000.png"
    labels = read_label_png(path)
    assert labels.shape == (480, 854)
    assert set(np.unique(labels).tolist()) == {0, 1}
    assert np.array_equal(read_binary_mask(path), np.array(Image.open(path)) > 0)
