"""Overlay videos: the input frames with each object's mask blended in its DAVIS palette colour.

Encoding: H.264 (libx264, CRF 20, preset "veryfast") in yuv420p when the PyAV build has libx264,
otherwise MPEG-4 part 2 (``mpeg4``, fixed quality) also in yuv420p; both play in common players.
yuv420p needs an even width and height: an odd dimension is padded by repeating the last
row/column, so every source pixel is kept and the video is at most one pixel larger.
For .mp4/.mov outputs the index is written at the front (``faststart``) for streaming.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from effsam2.errors import VideoError
from effsam2.io.atomic import atomic_path
from effsam2.io.frames import FrameSource
from effsam2.io.masks import as_label_map, davis_palette

__all__ = ["DEFAULT_FPS", "overlay_labels", "pick_video_encoder", "write_overlay_video"]

#: Frame rate used when neither the caller nor the source knows one (image folders).
DEFAULT_FPS = 30.0
_ENCODERS = ("libx264", "mpeg4")
_FF_QP2LAMBDA = 118  # FFmpeg's scale between quantiser and lambda (libavutil/avutil.h)


def pick_video_encoder() -> str:
    """The first encoder of ("libx264", "mpeg4") that this PyAV build provides."""
    for name in _ENCODERS:
        try:
            av.Codec(name, "w")
        except (av.FFmpegError, ValueError):  # unknown codec: ValueError in recent PyAV
            continue
        return name
    raise VideoError(f"this PyAV build has none of the video encoders {', '.join(_ENCODERS)}")


def overlay_labels(
    frame: np.ndarray, labels: np.ndarray | None, *, alpha: float = 0.5, outline: bool = True
) -> np.ndarray:
    """Blend a label map onto a frame.

    Args:
        frame: (H, W, 3) uint8 RGB.
        labels: (H, W) uint8 object ids (0 = background) or None (frame returned unchanged).
        alpha: weight of the object colour inside objects (0 = invisible, 1 = solid).
        outline: draw each object's 1-pixel inner border in its solid colour, so adjacent
            objects and thin parts stay visible at low alpha.

    Returns a new (H, W, 3) uint8 array.
    """
    out = np.array(frame, dtype=np.uint8, copy=True)
    if labels is None:
        return out
    labels = as_label_map(labels, "overlay labels")
    if labels.shape != out.shape[:2]:
        raise ValueError(f"labels of shape {labels.shape} do not match frame of shape {out.shape}")
    inside = labels > 0
    if not inside.any():
        return out
    palette = davis_palette()
    colors = palette[labels[inside]].astype(np.float32)
    out[inside] = np.rint(out[inside].astype(np.float32) * (1.0 - alpha) + colors * alpha).astype(np.uint8)
    if outline:
        # A pixel is on the border if a 4-neighbour has another label (image edges do not count).
        edge = np.zeros(labels.shape, dtype=bool)
        diff_v = labels[1:, :] != labels[:-1, :]
        diff_h = labels[:, 1:] != labels[:, :-1]
        edge[1:, :] |= diff_v
        edge[:-1, :] |= diff_v
        edge[:, 1:] |= diff_h
        edge[:, :-1] |= diff_h
        edge &= inside
        out[edge] = palette[labels[edge]]
    return out


def _even(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return rgb
    return np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _open_output(tmp: Path, path: Path, options: dict) -> av.container.OutputContainer:
    try:
        return av.open(str(tmp), "w", options=options)
    except ValueError:  # PyAV: no muxer for this file name
        raise VideoError(f"{path}: unknown video container for suffix {path.suffix!r} (use .mp4)") from None


def write_overlay_video(
    path: str | os.PathLike[str],
    frames: FrameSource,
    labels_for_frame: Callable[[int], np.ndarray | None],
    fps: float | None = None,
    alpha: float = 0.5,
    *,
    on_frame: Callable[[int], Any] | None = None,
    outline: bool = True,
    encoder: str | None = None,
    frame_range: range | None = None,
) -> Path:
    """Encode ``frames`` with their masks overlaid into a video at ``path`` (atomically).

    Args:
        path: output file; the container follows the suffix (.mp4 recommended).
        frames: the source; read once, in index order, one frame at a time.
        labels_for_frame: i -> (H, W) uint8 label map for frame i, or None to show it unmarked.
        fps: output frame rate; default ``frames.fps``, else ``DEFAULT_FPS``.
        alpha, outline: see ``overlay_labels``.
        on_frame: called with i after frame i is encoded (progress bars).
        encoder: force an encoder name; default ``pick_video_encoder()``.
        frame_range: the source frames to write, in order (default all); the video starts at its first.

    Nothing appears at ``path`` unless the whole video was written; an older file there survives
    a failure. Returns ``path``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    indices = range(len(frames)) if frame_range is None else frame_range
    if len(indices) == 0 or min(indices) < 0 or max(indices) >= len(frames):
        raise ValueError(f"frame_range {frame_range} is empty or outside the source's {len(frames)} frames")
    path = Path(path)
    rate_f = fps if fps is not None else (frames.fps or DEFAULT_FPS)
    if not rate_f > 0:
        raise ValueError(f"fps must be positive, got {rate_f}")
    rate = Fraction(rate_f).limit_denominator(100_000)  # 29.97002997.. -> 30000/1001 exactly
    codec = encoder or pick_video_encoder()
    height, width = frames.height + frames.height % 2, frames.width + frames.width % 2
    options = {"movflags": "+faststart"} if path.suffix.lower() in (".mp4", ".mov", ".m4v") else {}
    try:
        with atomic_path(path) as tmp, _open_output(tmp, path, options) as container:
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": "20", "preset": "veryfast"}
            else:  # mpeg4 has no CRF; a fixed quantiser keeps masks crisp whatever the size
                stream.codec_context.qscale = True  # the AV_CODEC_FLAG_QSCALE flag ...
                stream.codec_context.global_quality = 3 * _FF_QP2LAMBDA  # ... with quantiser 3
            for pts, i in enumerate(indices):
                rgb = overlay_labels(frames.get(i), labels_for_frame(i), alpha=alpha, outline=outline)
                vf = av.VideoFrame.from_ndarray(_even(rgb), format="rgb24")
                vf.pts, vf.time_base = pts, 1 / rate
                container.mux(stream.encode(vf))
                if on_frame is not None:
                    on_frame(i)
            container.mux(stream.encode(None))  # flush delayed frames (B-frames, lookahead)
    except av.FFmpegError as e:
        raise VideoError(f"{path}: cannot write video ({getattr(e, 'strerror', None) or e})") from None
    return path
