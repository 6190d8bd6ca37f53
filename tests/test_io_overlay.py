"""Overlay videos: frame count, size, colours, progress callback, atomic failure."""

from __future__ import annotations

import os

import av
import numpy as np
import pytest

from effsam2.errors import VideoError
from effsam2.io import davis_palette, open_frames, overlay_labels, pick_video_encoder, write_overlay_video


def decode_all(path) -> tuple[list[np.ndarray], float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, float(stream.average_rate)


def gray_source(n=12, h=47, w=33, value=128):
    return open_frames([np.full((h, w, 3), value, np.uint8) for _ in range(n)])


def square_labels(h, w, obj_id=2):
    labels = np.zeros((h, w), np.uint8)
    labels[10:30, 8:24] = obj_id
    return labels


def test_encoder_choice():
    assert pick_video_encoder() in ("libx264", "mpeg4")


@pytest.mark.parametrize("encoder", ["libx264", "mpeg4"])
def test_overlay_video_frames_size_and_colour(tmp_path, encoder):
    if encoder == "libx264" and pick_video_encoder() != "libx264":
        pytest.skip("PyAV build without libx264")
    src = gray_source()
    labels = square_labels(47, 33)
    seen = []
    out = write_overlay_video(tmp_path / "overlay.mp4", src, lambda i: labels if i % 2 == 0 else None,
                              fps=12.5, on_frame=seen.append, encoder=encoder)
    assert seen == list(range(12))
    frames, rate = decode_all(out)
    assert len(frames) == 12
    assert frames[0].shape == (48, 34, 3)  # odd 47x33 padded to even for yuv420p
    assert rate == pytest.approx(12.5)
    colour = davis_palette()[2].astype(int)  # (0, 128, 0)
    inside_marked = frames[0][20, 16].astype(int)
    inside_plain = frames[1][20, 16].astype(int)
    assert np.abs(inside_plain - 128).max() <= 6  # unmarked frame: still gray
    # marked frame: the pixel moved from gray toward the object's colour
    assert np.abs(inside_marked - colour).sum() < np.abs(inside_plain - colour).sum() - 60
    assert np.abs(frames[0][2, 2].astype(int) - 128).max() <= 6  # background untouched
    assert os.listdir(tmp_path) == ["overlay.mp4"]


def test_frame_range_writes_only_those_frames(tmp_path):
    labels = square_labels(47, 33)
    seen = []
    out = write_overlay_video(tmp_path / "part.mp4", gray_source(12), lambda i: labels if i == 3 else None,
                              on_frame=seen.append, frame_range=range(3, 7))
    frames, _ = decode_all(out)
    assert seen == [3, 4, 5, 6] and len(frames) == 4
    assert np.abs(frames[0][20, 16].astype(int) - 128).max() > 30  # the video starts on marked frame 3
    assert np.abs(frames[1][20, 16].astype(int) - 128).max() <= 6
    for bad in (range(0), range(10, 13), range(-1, 2)):
        with pytest.raises(ValueError, match="frame_range"):
            write_overlay_video(tmp_path / "bad.mp4", gray_source(12), lambda i: None, frame_range=bad)
    assert sorted(os.listdir(tmp_path)) == ["part.mp4"]


def test_overlay_on_real_frames_keeps_size_and_fps(davis_dir, tmp_path):
    src = open_frames(davis_dir / "JPEGImages" / "480p" / "blackswan")
    short = open_frames([src.get(i) for i in range(6)])
    out = write_overlay_video(tmp_path / "o.mp4", short, lambda i: None)
    frames, rate = decode_all(out)
    assert len(frames) == 6 and frames[0].shape == (480, 854, 3)
    assert rate == pytest.approx(30.0)  # default when the source has no fps
    assert np.abs(frames[3].astype(int) - short.get(3)).mean() < 4  # unmarked: the input frames


def test_failure_leaves_nothing_and_keeps_old_file(tmp_path):
    target = tmp_path / "overlay.mp4"
    target.write_bytes(b"old overlay")

    def labels(i):
        if i == 5:
            raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError):
        write_overlay_video(target, gray_source(), labels)
    assert target.read_bytes() == b"old overlay"
    assert os.listdir(tmp_path) == ["overlay.mp4"]
    with pytest.raises(ValueError, match="labels of shape"):
        write_overlay_video(tmp_path / "new.mp4", gray_source(), lambda i: np.zeros((5, 5), np.uint8))
    assert os.listdir(tmp_path) == ["overlay.mp4"]


def test_unwritable_video_is_a_video_error(tmp_path):
    with pytest.raises(VideoError, match="unknown.xyz"):
        write_overlay_video(tmp_path / "unknown.xyz", gray_source(2), lambda i: None)
    assert os.listdir(tmp_path) == []


def test_overlay_labels_blend_and_outline():
    frame = np.full((6, 6, 3), 100, np.uint8)
    labels = np.zeros((6, 6), np.uint8)
    labels[1:5, 1:5] = 1
    colour = davis_palette()[1]
    solid = overlay_labels(frame, labels, alpha=1.0, outline=False)
    assert (solid[labels == 1] == colour).all() and (solid[labels == 0] == 100).all()
    half = overlay_labels(frame, labels, alpha=0.5, outline=True)
    assert (half[2:4, 2:4] == [114, 50, 50]).all()  # interior: 50/50 blend with (128, 0, 0)
    assert (half[1, 1:5] == colour).all() and (half[1:5, 1] == colour).all()  # border in solid colour
    assert (half[0] == 100).all()  # outline stays inside the object
    np.testing.assert_array_equal(overlay_labels(frame, None), frame)
    with pytest.raises(ValueError):
        write_overlay_video("x.mp4", gray_source(1), lambda i: None, alpha=2.0)


def test_label_values_are_checked(tmp_path):
    from effsam2.errors import PromptError

    labels = np.zeros((47, 33), np.int64)
    labels[0, 0] = 256
    with pytest.raises(PromptError, match="256"):
        write_overlay_video(tmp_path / "o.mp4", gray_source(2), lambda i: labels)
    assert os.listdir(tmp_path) == []
