"""Video file frame sources: counts, sizes, access-order independence, bounded cache, errors."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import av
import numpy as np
import pytest

from effsam2.errors import VideoError
from effsam2.io import FrameIndexError, VideoFileSource, open_frames


def _digest(a: np.ndarray) -> tuple:
    """Cheap fingerprint of a frame (shape + CRC-32 of the pixels); keeps memory flat."""
    a = np.ascontiguousarray(a)
    return a.shape, zlib.crc32(a.data)


def reference_digests(path: Path, limit: int | None = None) -> tuple[list[tuple], tuple[int, int]]:
    """Decode the frames once with plain PyAV (no seeking): per-frame digests and (H, W)."""
    digests, shape = [], None
    with av.open(str(path)) as container:
        container.streams.video[0].thread_type = "AUTO"
        for frame in container.decode(video=0):
            if limit is not None and len(digests) >= limit:
                break
            rgb = frame.to_ndarray(format="rgb24")
            shape = rgb.shape[:2]
            digests.append(_digest(rgb))
    return digests, shape


def make_video(path: Path, codec: str, n: int = 48, w: int = 64, h: int = 48, options=None) -> Path:
    """A synthetic clip whose frames all differ (moving gradients), keyframe every 12 frames."""
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.gop_size = 12
        if options:
            stream.options = options
        for i in range(n):
            img = np.stack([(xx * 4 + i * 5) % 256, (yy * 5 + i * 3) % 256, np.full_like(xx, i * 5 % 256)], -1)
            frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


SYNTHETIC = {
    "h264_bframes.mp4": ("libx264", {"bf": "3", "g": "12", "sc_threshold": "0"}),
    "h264.mkv": ("libx264", {"g": "12"}),
    "h264.mov": ("libx264", {"g": "12"}),
    "mpeg4.avi": ("mpeg4", None),
    "vp8.webm": ("libvpx", None),
    "raw.h264": ("libx264", {"bf": "2", "g": "12"}),  # no timestamps: frames numbered by counting
}


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("videos")
    for name, (codec, opts) in SYNTHETIC.items():
        make_video(d / name, codec, options=opts)
    return d


def real_videos(videos_dir: Path) -> list[Path]:
    found = sorted(videos_dir.glob("*.mp4"))
    assert found, f"no mp4 clips in {videos_dir}"
    return found


@pytest.fixture(scope="module")
def real_refs(videos_dir) -> dict[Path, tuple[list[tuple], tuple[int, int]]]:
    """Plain sequential PyAV decoding of every shared clip, done once for the module."""
    return {p: reference_digests(p) for p in real_videos(videos_dir)}


# ------------------------------------------------------------------------------ real clips
def test_real_clips_counts_sizes_and_access_orders(real_refs):
    """Every shared mp4: frame count and size match plain PyAV decoding; forward, reverse and
    random access all return exactly the pixels of plain sequential decoding. Opening decodes
    one frame only, and a forward read is a single decode pass (the decoder keeps running)."""
    rng = np.random.default_rng(0)
    for path, (ref, (h, w)) in real_refs.items():
        with open_frames(path) as src:
            assert isinstance(src, VideoFileSource)
            assert src.cached_frames == 1 and src.seeks == 1  # lazy: only the probe frame
            assert len(src) == len(ref), path
            assert (src.height, src.width) == (h, w)
            assert src.fps is not None and 10 < src.fps < 120
            assert src.frame_names[:2] == ["00000", "00001"] and len(src.frame_names) == len(ref)
            forward = [_digest(src.get(i)) for i in range(len(src))]
            assert forward == ref, f"{path}: forward access differs from plain decoding"
            assert src.cached_frames <= src.capacity
            assert src.seeks == 1
        with open_frames(path) as src:
            reverse = [_digest(src.get(i)) for i in reversed(range(len(src)))][::-1]
            assert reverse == ref, f"{path}: reverse access differs"
            assert src.cached_frames <= src.capacity
        with open_frames(path) as src:
            for i in rng.choice(len(ref), size=6, replace=False):
                assert _digest(src.get(int(i))) == ref[i], f"{path}: random access to frame {i} differs"


def test_small_cache_stays_bounded_on_real_clip(real_refs):
    """A 6-frame cache: a backward sweep on a real H.264 clip with B-frames stays exact and
    never holds more than 6 decoded frames."""
    path, (ref, (h, w)) = next(iter(real_refs.items()))
    with VideoFileSource(path, cache_bytes=6 * h * w * 3) as src:
        assert src.capacity == 6
        for i in range(len(src) - 1, len(src) - 19, -1):
            assert _digest(src.get(i)) == ref[i]
            assert src.cached_frames <= 6


# ------------------------------------------------------------------------- synthetic clips
@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_containers_and_seeking_are_exact(synthetic_dir, name):
    """mp4/mkv/mov/avi/webm with a keyframe every 12 frames and a 4-frame cache, so every
    backward or random access really seeks: all access orders give plain PyAV's pixels."""
    path = synthetic_dir / name
    ref, (h, w) = reference_digests(path)
    assert len(ref) == 48
    with VideoFileSource(path, cache_bytes=4 * h * w * 3) as src:
        assert len(src) == 48 and (src.height, src.width) == (48, 64)
        assert src.numbering == ("count" if name.endswith(".h264") else "pts")
        if src.numbering == "pts":
            assert src.fps == pytest.approx(25.0)
        assert [_digest(src.get(i)) for i in range(48)] == ref
        assert [_digest(src.get(i)) for i in range(47, -1, -1)] == ref[::-1]
        seeks_before = src.seeks
        order = np.random.default_rng(1).permutation(48)
        assert [_digest(src.get(int(i))) for i in order] == [ref[i] for i in order]
        assert src.seeks > seeks_before  # the random pass did seek
        assert src.cached_frames <= 4


def test_reverse_sweep_uses_one_pass_per_cache_window(synthetic_dir):
    """Going backward, frames before the target are cached: 48 frames with a 4-frame cache
    take about 48 / 4 decode passes, not 48."""
    path = synthetic_dir / "h264_bframes.mp4"
    with VideoFileSource(path, cache_bytes=4 * 48 * 64 * 3) as src:
        src.get(47)
        before = src.seeks
        for i in range(46, -1, -1):
            src.get(i)
        assert src.seeks - before <= 48 // 4 + 1


def test_jump_forward_over_keyframes_seeks_instead_of_decoding_everything(synthetic_dir):
    path = synthetic_dir / "h264_bframes.mp4"
    with VideoFileSource(path) as src:
        src.get(0)
        src.get(40)  # keyframes at 12, 24, 36 lie between: a seek, not 40 decodes
        assert src.seeks == 2
        src.get(41)  # next frame: the running decoder continues
        assert src.seeks == 2


def test_rotation_metadata_is_applied(synthetic_dir, tmp_path):
    """A 90-degree display matrix (phone videos) gives upright, transposed frames."""
    data = bytearray((synthetic_dir / "h264_bframes.mp4").read_bytes())
    at = data.find(b"tkhd")
    assert data[at + 4] == 0  # version 0 box layout
    matrix_at = at + 4 + 4 + 8 + 4 + 4 + 4 + 8 + 8  # after version/flags, times, ids, duration, ...
    assert struct.unpack(">9i", data[matrix_at:matrix_at + 36]) == (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)
    # QuickTime matrix of a clip to be shown rotated 90 degrees clockwise (ffmpeg's rotate=90)
    data[matrix_at:matrix_at + 36] = struct.pack(">9i", 0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)
    rotated = tmp_path / "rot.mp4"
    rotated.write_bytes(bytes(data))
    with av.open(str(rotated)) as container:
        raw = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with open_frames(rotated) as src:
        assert (src.height, src.width) == (64, 48)
        for i in (0, 13, 47):
            np.testing.assert_array_equal(src.get(i), np.rot90(raw[i], -1))  # -1: clockwise


# ---------------------------------------------------------------------------------- errors
def _one_line(e: pytest.ExceptionInfo, *parts: str) -> None:
    msg = str(e.value)
    assert "\n" not in msg
    for p in parts:
        assert p in msg, f"{p!r} not in {msg!r}"


def test_missing_file(tmp_path):
    with pytest.raises(VideoError) as e:
        open_frames(tmp_path / "nope.mp4")
    _one_line(e, "nope.mp4", "no such file")


@pytest.mark.parametrize("content", [b"hello, this is not a video\n" * 20, b""])
def test_not_a_video(tmp_path, content):
    path = tmp_path / "fake.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoError) as e:
        open_frames(path)
    _one_line(e, str(path))


def test_text_file_with_unknown_suffix(tmp_path):
    path = tmp_path / "notes.xyz"
    path.write_text("just text\n" * 10)
    with pytest.raises(VideoError) as e:
        open_frames(path)
    _one_line(e, str(path), "not a readable video or image")


def test_truncated_clip_names_the_failing_frame(real_refs, tmp_path):
    """Half of a real clip (index at the front): it opens, early frames are exact, and reading
    on raises a VideoError naming the first frame that cannot be decoded."""
    src_path, (ref, _) = next(iter(real_refs.items()))
    data = src_path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat"), "test needs a clip with its index first"
    cut = tmp_path / "half.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with open_frames(cut) as src:
        assert 0 < len(src) < len(ref)
        with pytest.raises(VideoError) as e:
            for i in range(len(src)):
                assert _digest(src.get(i)) == ref[i]
        _one_line(e, str(cut), f"frame {i}")
        assert i > 0


def test_truncated_clip_with_index_at_the_end(videos_dir, tmp_path):
    for path in real_videos(videos_dir):
        data = path.read_bytes()
        if data.find(b"moov") > data.find(b"mdat"):
            break
    else:
        pytest.skip("no clip with its index at the end")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError) as e:
        open_frames(cut)
    _one_line(e, str(cut))


def test_video_with_no_decodable_frames(videos_dir, tmp_path):
    data = real_videos(videos_dir)[0].read_bytes()
    cut = tmp_path / "tiny.mp4"
    cut.write_bytes(data[: max(len(data) // 60, data.find(b"mdat") + 200)])
    with pytest.raises(VideoError) as e:
        open_frames(cut)
    _one_line(e, str(cut), "no decodable video frames")


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_video_with_zero_frames(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    with pytest.raises(VideoError) as e:
        open_frames(path)
    _one_line(e, str(path))


def test_audio_only_file(tmp_path):
    path = tmp_path / "sound.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mp2", rate=44100)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1152), np.int16), format="s16", layout="mono")
        frame.sample_rate = 44100
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(VideoError) as e:
        open_frames(path)
    _one_line(e, str(path), "no video stream")


def test_index_out_of_range(synthetic_dir):
    with open_frames(synthetic_dir / "h264.mkv") as src:
        for bad in (48, -1, 10**6):
            with pytest.raises(FrameIndexError) as e:
                src.get(bad)
            assert isinstance(e.value, IndexError)
            _one_line(e, str(bad), "48 frames")
        with pytest.raises(TypeError):
            src.get(1.5)
        assert src.get(np.int64(3)).shape == (48, 64, 3)


def test_returned_frames_are_private_copies(synthetic_dir):
    with open_frames(synthetic_dir / "h264.mkv") as src:
        a = src.get(5)
        before = a.copy()
        a[:] = 0
        np.testing.assert_array_equal(src.get(5), before)
        assert a.flags.c_contiguous and a.dtype == np.uint8


def test_closed_source_and_copy_of_file(synthetic_dir, tmp_path):
    path = shutil.copy(synthetic_dir / "h264.mkv", tmp_path / "copy.mkv")
    src = open_frames(path)
    assert open_frames(src) is src
    src.close()
    src.close()  # idempotent
    with pytest.raises(ValueError):
        src.get(0)
    assert "frames=48" in repr(src)


def test_animated_gif_and_video_with_audio(tmp_path):
    from PIL import Image

    gif = tmp_path / "anim.gif"
    frames = [Image.fromarray(np.full((20, 30, 3), 20 * i, np.uint8)) for i in range(8)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with open_frames(gif) as src:
        assert isinstance(src, VideoFileSource) and (len(src), src.height, src.width) == (8, 20, 30)
        assert [int(src.get(i)[0, 0, 0]) for i in range(7, -1, -1)] == [140, 120, 100, 80, 60, 40, 20, 0]

    both = tmp_path / "with_audio.mp4"
    with av.open(str(both), "w") as container:
        audio = container.add_stream("aac", rate=44100)
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        for i in range(20):
            container.mux(video.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 10, np.uint8), "rgb24")))
            sound = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            sound.sample_rate = 44100
            container.mux(audio.encode(sound))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))
    ref, _ = reference_digests(both)
    with open_frames(both) as src:
        assert len(src) == len(ref) == 20
        assert [_digest(src.get(i)) for i in range(19, -1, -1)] == ref[::-1]


def test_interrupted_get_does_not_poison_the_source(synthetic_dir, monkeypatch):
    """A KeyboardInterrupt while decoding must not make later reads report missing frames."""
    path = synthetic_dir / "h264_bframes.mp4"
    ref, _ = reference_digests(path)
    with VideoFileSource(path) as src:
        real = VideoFileSource._to_rgb
        calls = {"n": 0}

        def flaky(self, frame):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            return real(self, frame)

        monkeypatch.setattr(VideoFileSource, "_to_rgb", flaky)
        with pytest.raises(KeyboardInterrupt):
            for i in range(10):
                src.get(i)
        assert [_digest(src.get(i)) for i in range(48)] == ref
