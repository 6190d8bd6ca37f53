"""Image folder, image list, single image and in-memory frame sources."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effsam2.errors import VideoError
from effsam2.io import (
    ArrayFrameSource,
    FrameIndexError,
    ImageFileSource,
    ImageFilesSource,
    ImageFolderSource,
    natural_sort_key,
    open_frames,
)


def _save(path: Path, value: int, size=(20, 12)) -> Path:
    """A (size[1], size[0]) RGB image filled with ``value`` (identifies the frame)."""
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def test_davis_folder(davis_dir):
    folder = davis_dir / "JPEGImages" / "480p" / "blackswan"
    files = sorted(folder.glob("*.jpg"))
    with open_frames(folder) as src:
        assert isinstance(src, ImageFolderSource)
        assert len(src) == len(files) and len(src) > 0
        assert (src.height, src.width) == (480, 854)
        assert src.fps is None
        assert src.frame_names == [f.stem for f in files]
        for i in (0, len(src) // 2, len(src) - 1):
            expected = np.array(Image.open(files[i]).convert("RGB"))
            np.testing.assert_array_equal(src.get(i), expected)
        # access order does not matter for files, but check the API path anyway
        last = src.get(len(src) - 1)
        np.testing.assert_array_equal(list(src)[-1], last)


def test_natural_order_in_folder(tmp_path):
    for value, name in [(1, "img1.png"), (10, "img10.png"), (2, "img2.png"), (3, "IMG3.png"), (100, "img100.png")]:
        _save(tmp_path / name, value)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    _save(tmp_path / "sub" / "img0.png", 0)  # sub-folders are not read
    _save(tmp_path / ".hidden5.png", 5)  # hidden files (e.g. macOS ._ files) are skipped
    with open_frames(tmp_path) as src:
        assert src.frame_names == ["img1", "img2", "IMG3", "img10", "img100"]
        assert [int(src.get(i)[0, 0, 0]) for i in range(len(src))] == [1, 2, 3, 10, 100]


def test_natural_sort_key():
    names = ["frame10.png", "frame2.png", "frame1.png", "Frame3.png", "frame02.png", "a.png", "frame1b.png"]
    assert sorted(names, key=natural_sort_key) == [
        "a.png", "frame1.png", "frame1b.png", "frame02.png", "frame2.png", "Frame3.png", "frame10.png"]


def test_all_image_suffixes(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    for i, (suffix, fmt) in enumerate([(".png", "PNG"), (".bmp", "BMP"), (".tif", "TIFF"), (".tiff", "TIFF"),
                                       (".webp", "WEBP"), (".JPEG", "JPEG"), (".jpg", "JPEG")]):
        kwargs = {"lossless": True} if fmt == "WEBP" else {}
        Image.fromarray(rgb).save(tmp_path / f"{i}{suffix}", format=fmt, **kwargs)
    with open_frames(tmp_path) as src:
        assert len(src) == 7
        for i in range(5):  # lossless formats give the pixels back exactly
            np.testing.assert_array_equal(src.get(i), rgb)
        for i in (5, 6):  # JPEG: lossy, so compare with Pillow's own decoding of the file
            np.testing.assert_array_equal(src.get(i), np.array(Image.open(src.files[i]).convert("RGB")))
        assert src.frame_names == [str(i) for i in range(7)]


def test_single_image_and_image_list(tmp_path):
    a, b, c = _save(tmp_path / "a.png", 10), _save(tmp_path / "b.png", 20), _save(tmp_path / "c.png", 30)
    with open_frames(b) as src:
        assert isinstance(src, ImageFileSource)
        assert len(src) == 1 and src.frame_names == ["b"]
        assert src.get(0)[0, 0, 0] == 20
        with pytest.raises(FrameIndexError):
            src.get(1)
    with open_frames([c, str(a)]) as src:  # explicit order kept
        assert isinstance(src, ImageFilesSource)
        assert src.frame_names == ["c", "a"]
        assert [int(f[0, 0, 0]) for f in src] == [30, 10]


def test_exif_orientation_is_applied(tmp_path):
    rgb = np.zeros((10, 30, 3), np.uint8)
    rgb[:, :5] = 255  # white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(rgb).save(tmp_path / "0.jpg", exif=exif.tobytes(), quality=100)
    with open_frames(tmp_path) as src:
        assert (src.height, src.width) == (30, 10)
        frame = src.get(0)
        assert frame.shape == (30, 10, 3)
        assert frame[:5].mean() > 200 and frame[10:].mean() < 50  # band now at the top


# --------------------------------------------------------------------------------- errors
def test_empty_folder_and_folder_without_images(tmp_path):
    with pytest.raises(VideoError, match="no images") as e:
        open_frames(tmp_path)
    assert str(tmp_path) in str(e.value)
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / "clip.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="no images"):
        open_frames(tmp_path)


def test_mixed_sizes_name_the_first_offender(tmp_path):
    _save(tmp_path / "f1.png", 1, size=(20, 12))
    _save(tmp_path / "f2.png", 2, size=(20, 12))
    _save(tmp_path / "f3.png", 3, size=(21, 12))
    _save(tmp_path / "f4.png", 4, size=(22, 12))
    with pytest.raises(VideoError) as e:
        open_frames(tmp_path)
    msg = str(e.value)
    assert "f3.png" in msg and "frame 2" in msg and "21x12" in msg and "f4" not in msg
    assert "\n" not in msg


def test_unreadable_image_in_folder(tmp_path):
    _save(tmp_path / "0.png", 1)
    (tmp_path / "1.png").write_text("this is not a png")
    with pytest.raises(VideoError) as e:
        open_frames(tmp_path)
    assert "1.png" in str(e.value)


def test_truncated_jpeg_fails_on_get_naming_file_and_frame(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(buf, "JPEG")
    _save(tmp_path / "0.jpg", 1, size=(64, 64))
    (tmp_path / "1.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with open_frames(tmp_path) as src:  # the header is intact: opening works
        src.get(0)
        with pytest.raises(VideoError) as e:
            src.get(1)
    assert "1.jpg" in str(e.value) and "frame 1" in str(e.value)


def test_duplicate_stems_are_refused(tmp_path):
    _save(tmp_path / "00001.png", 1)
    _save(tmp_path / "00001.jpg", 1)
    with pytest.raises(VideoError, match="same name stem"):
        open_frames(tmp_path)


def test_image_with_wrong_suffix_and_missing_image(tmp_path):
    path = tmp_path / "picture.dat"
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(path, format="PNG")
    with open_frames(path) as src:  # not a video: read as an image
        assert src.get(0)[0, 0, 0] == 7
    with pytest.raises(VideoError, match="no such file"):
        open_frames(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    with pytest.raises(VideoError, match="bad.png"):
        open_frames(bad)


# ------------------------------------------------------------------------------ in memory
def test_in_memory_sources():
    frames = [np.full((6, 9, 3), i, np.uint8) for i in range(4)]
    with open_frames(frames) as src:
        assert isinstance(src, ArrayFrameSource)
        assert (len(src), src.height, src.width) == (4, 6, 9)
        assert src.frame_names == ["00000", "00001", "00002", "00003"]
        out = src.get(2)
        out[:] = 99  # the caller's copy, not the user's frame
        assert frames[2][0, 0, 0] == 2
    stacked = np.stack(frames)
    assert len(open_frames(stacked)) == 4
    with pytest.raises(VideoError, match=r"\(T, H, W, C\)"):
        open_frames(stacked[0])
    pil = [Image.new("RGB", (9, 6), (1, 2, 3)), Image.new("L", (9, 6), 5)]
    src = open_frames(tuple(pil))
    assert src.get(0)[0, 0].tolist() == [1, 2, 3] and src.get(1)[0, 0].tolist() == [5, 5, 5]


def test_in_memory_errors():
    with pytest.raises(VideoError, match="empty"):
        open_frames([])
    with pytest.raises(VideoError) as e:
        open_frames([np.zeros((6, 9, 3), np.uint8), np.zeros((6, 8, 3), np.uint8)])
    assert "frame 1" in str(e.value) and "8x6" in str(e.value)
    with pytest.raises(VideoError, match="frame 1 is a str"):
        open_frames([np.zeros((6, 9, 3), np.uint8), "x"])
    with pytest.raises(VideoError, match="cannot read frames from a int"):
        open_frames(3)
