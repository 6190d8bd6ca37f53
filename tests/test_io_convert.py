"""Pixel conversions to (H, W, 3) uint8 RGB, for arrays, PIL images and image files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from effsam2.errors import VideoError
from effsam2.io import open_frames, to_rgb_uint8
from effsam2.io.convert import uint16_to_uint8


def _one(frame) -> np.ndarray:
    out = open_frames([frame]).get(0)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and out.flags.c_contiguous
    return out


def write_png16(path: Path, a: np.ndarray) -> Path:
    """Write a 16-bit PNG by hand (Pillow cannot write 16-bit colour): gray, gray+alpha, RGB, RGBA."""
    if a.ndim == 2:
        a = a[:, :, None]
    h, w, c = a.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def test_uint16_rounding_is_exact_for_every_value():
    v = np.arange(65536, dtype=np.uint16)
    expected = np.round(v.astype(np.float64) / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(uint16_to_uint8(v), expected)
    assert uint16_to_uint8(np.array([0, 65535], np.uint16)).tolist() == [0, 255]


def test_array_cases():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(_one(gray), np.repeat(gray[:, :, None], 3, 2))
    np.testing.assert_array_equal(_one(gray[:, :, None]), np.repeat(gray[:, :, None], 3, 2))
    la = np.stack([gray, np.full_like(gray, 9)], -1)
    np.testing.assert_array_equal(_one(la), np.repeat(gray[:, :, None], 3, 2))
    rgba = np.random.default_rng(0).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    np.testing.assert_array_equal(_one(rgba), rgba[:, :, :3])
    u16 = np.array([[0, 128, 129, 385], [386, 32896, 65406, 65535]], np.uint16)
    assert _one(u16)[:, :, 0].tolist() == [[0, 0, 1, 1], [2, 128, 254, 255]]
    f = np.array([[0.0, 0.5, 1.0, 1.2], [-0.1, 0.002, 0.998, 1 / 255]], np.float32)
    assert _one(f)[:, :, 1].tolist() == [[0, 128, 255, 255], [0, 1, 254, 1]]
    assert _one(f.astype(np.float64))[0, 1, 0] == 128
    b = np.array([[True, False]])
    assert _one(b)[:, :, 2].tolist() == [[255, 0]]
    non_contig = np.zeros((4, 6, 3), np.uint8)[:, ::2]
    assert _one(non_contig).shape == (4, 3, 3)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, (3, 5, 3), elements=st.floats(0, 1, width=32)))
def test_float_conversion_matches_definition(a):
    np.testing.assert_array_equal(to_rgb_uint8(a, "x"), np.clip(np.rint(a.astype(np.float64) * 255), 0, 255))


@pytest.mark.parametrize(
    "bad, words",
    [
        (np.zeros((4, 4), np.int64), "dtype int64"),
        (np.zeros((4, 4), np.int32), "dtype int32"),
        (np.zeros((4, 4, 5), np.uint8), "shape (4, 4, 5)"),
        (np.zeros((4,), np.uint8), "shape (4,)"),
        (np.zeros((2, 4, 4, 3), np.uint8), "shape (2, 4, 4, 3)"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (np.full((4, 4), np.nan, np.float32), "NaN"),
    ],
)
def test_unsupported_arrays_name_the_frame(bad, words):
    ok = np.zeros(bad.shape[:2] if bad.ndim >= 2 and bad.shape[0] else (4, 4), np.uint8)
    with pytest.raises(VideoError) as e:
        src = open_frames([ok, bad])
        src.get(1)
    assert "frame 1" in str(e.value) and words in str(e.value)


def test_pil_modes():
    rgb = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    im = Image.fromarray(rgb)
    np.testing.assert_array_equal(_one(im), rgb)
    np.testing.assert_array_equal(_one(im.convert("RGBA")), rgb)  # alpha dropped
    p = im.quantize(8)
    np.testing.assert_array_equal(_one(p), np.array(p.convert("RGB")))
    assert p.mode == "P"
    la = im.convert("LA")
    np.testing.assert_array_equal(_one(la), np.repeat(np.array(im.convert("L"))[:, :, None], 3, 2))
    i16 = Image.fromarray(np.array([[0, 257, 65535]], np.uint16))
    assert i16.mode.startswith("I;16") and _one(i16)[0, :, 0].tolist() == [0, 1, 255]
    i32 = Image.fromarray(np.array([[0, 514, 65535]], np.int32))
    assert i32.mode == "I" and _one(i32)[0, :, 0].tolist() == [0, 2, 255]
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))
    assert f.mode == "F" and _one(f)[0, :, 0].tolist() == [0, 128, 255]
    one_bit = Image.fromarray(np.array([[True, False]]))
    assert _one(one_bit)[0, :, 0].tolist() == [255, 0]
    assert _one(im.convert("CMYK")).shape == (5, 7, 3)


def test_image_files_gray_rgba_palette_and_16bit(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(open_frames(tmp_path / "gray.png").get(0), np.repeat(rgb[:, :, :1], 3, 2))
    Image.fromarray(np.dstack([rgb, np.zeros((6, 5), np.uint8)])).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(open_frames(tmp_path / "rgba.png").get(0), rgb)  # alpha 0 still dropped
    pal = Image.fromarray(rgb).quantize(6)
    pal.save(tmp_path / "pal.png")
    np.testing.assert_array_equal(open_frames(tmp_path / "pal.png").get(0), np.array(pal.convert("RGB")))

    # 16-bit PNGs: values chosen where round(v / 257) differs from Pillow's own v >> 8.
    v = np.array([0, 255, 65280, 65535, 383, 32768], np.uint16)
    expected = np.round(v / 257).astype(np.uint8)
    assert (expected != (v >> 8)).any()
    gray16 = np.tile(v, (2, 1))
    out = open_frames(write_png16(tmp_path / "g16.png", gray16)).get(0)
    np.testing.assert_array_equal(out[0, :, 0], expected)
    rgb16 = np.stack([gray16, gray16[:, ::-1], np.full_like(gray16, 0xFFFF)], -1)
    out = open_frames(write_png16(tmp_path / "rgb16.png", rgb16)).get(0)
    np.testing.assert_array_equal(out[0, :, 0], expected)
    np.testing.assert_array_equal(out[0, :, 1], expected[::-1])
    assert (out[:, :, 2] == 255).all()
    rgba16 = np.concatenate([rgb16, np.zeros_like(gray16)[:, :, None]], -1)
    np.testing.assert_array_equal(open_frames(write_png16(tmp_path / "rgba16.png", rgba16)).get(0), out)
    la16 = np.stack([gray16, np.full_like(gray16, 7)], -1)
    np.testing.assert_array_equal(open_frames(write_png16(tmp_path / "la16.png", la16)).get(0)[0, :, 1], expected)
