"""Frame sources: lazy, random-access readers of video frames as (H, W, 3) uint8 RGB arrays.

``open_frames(source)`` is the single entry point; it accepts a video file, a folder of images,
a single image, a sequence of in-memory frames (numpy arrays or PIL images), a 4-D array
(T, H, W, C), or an existing ``FrameSource`` (returned as is). The concrete readers live in
``video_file.py`` (PyAV) and ``image_folder.py`` (PIL); this module holds the common interface.

Sources are not thread-safe: use one per thread (they are cheap to open).
"""

from __future__ import annotations

import operator
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from PIL import Image

from effsam2.errors import VideoError
from effsam2.io.convert import check_array_frame, image_to_rgb, to_rgb_uint8

if TYPE_CHECKING:  # Python 3.10 has no typing.Self
    from typing_extensions import Self

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "ArrayFrameSource",
    "FrameIndexError",
    "FrameSource",
    "default_frame_names",
    "natural_sort_key",
    "open_frames",
]

#: File suffixes treated as still images (lower case). GIF is *not* here: it is read as a video.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
#: Suffixes known to be videos; other non-image files are also tried with PyAV.
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif"})

FrameInput = Union["FrameSource", str, os.PathLike, Sequence[Any], np.ndarray]


class FrameIndexError(VideoError, IndexError):
    """A frame index outside ``0 .. len(source) - 1``."""


def natural_sort_key(name: str) -> tuple:
    """Sort key that orders embedded numbers by value: "frame2.png" < "frame10.png".

    Text parts compare case-insensitively; the full name breaks ties so the order is total and
    deterministic ("a01" vs "a1" never compare equal).
    """
    parts = re.split(r"(\d+)", name)
    key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p.casefold()) for p in parts if p != "")
    return (key, name)


def default_frame_names(n: int) -> list[str]:
    """Names "00000", "00001", ... (wider when n > 100000, so names still sort in index order)."""
    width = max(5, len(str(max(n - 1, 0))))
    return [f"{i:0{width}d}" for i in range(n)]


class FrameSource(ABC):
    """A lazily decoded, random-access sequence of RGB frames of one fixed size.

    Attributes (set by subclasses): ``height``, ``width`` (int, the original resolution),
    ``fps`` (float or None when unknown), ``frame_names`` (list of ``len(self)`` unique strings
    used to name per-frame output files), ``name`` (str, the path or a description, used in
    error messages).

    ``get(i)`` returns a new (H, W, 3) uint8 C-contiguous array that the caller owns (mutating it
    does not affect later reads); the same index always gives the same pixels.
    """

    height: int
    width: int
    fps: float | None
    frame_names: list[str]
    name: str

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _get(self, idx: int) -> np.ndarray:
        """Frame ``idx`` (already range-checked) as a fresh (H, W, 3) uint8 array."""

    def get(self, idx: int) -> np.ndarray:
        """Frame ``idx`` as a (H, W, 3) uint8 RGB array; ``FrameIndexError`` if out of range."""
        try:
            i = operator.index(idx)
        except TypeError:
            raise TypeError(f"frame index must be an integer, got {type(idx).__name__}") from None
        n = len(self)
        if not 0 <= i < n:
            raise FrameIndexError(f"frame index {i} out of range for {self.name} ({n} frames: 0..{n - 1})")
        return self._get(i)

    def __getitem__(self, idx: int) -> np.ndarray:
        return self.get(idx)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.get(i)

    def close(self) -> None:
        """Release files and decoders. Idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        fps = f"{self.fps:.3f}" if self.fps else "None"
        return f"{type(self).__name__}({self.name!r}, frames={len(self)}, {self.width}x{self.height}, fps={fps})"


class ArrayFrameSource(FrameSource):
    """Frames already in memory: numpy arrays (any dtype/shape accepted by ``to_rgb_uint8``) or PIL
    images. Types and sizes are checked at construction; conversion happens in ``get``."""

    def __init__(self, frames: Sequence[Any], *, fps: float | None = None, name: str = "<frames in memory>"):
        self.name = name
        self.fps = fps
        self._frames = list(frames)
        if not self._frames:
            raise VideoError(f"{name}: no frames (empty sequence)")
        size = None
        for i, fr in enumerate(self._frames):
            if isinstance(fr, Image.Image):
                hw = (fr.height, fr.width)
            elif isinstance(fr, np.ndarray):
                hw = check_array_frame(fr, f"{name}: frame {i}")
            else:
                raise VideoError(f"{name}: frame {i} is a {type(fr).__name__}, expected a numpy array or PIL image")
            if size is None:
                size = hw
            elif hw != size:
                raise VideoError(
                    f"{name}: frame {i} is {hw[1]}x{hw[0]} but frame 0 is {size[1]}x{size[0]} (all frames "
                    "must have the same size)"
                )
        self.height, self.width = size
        self.frame_names = default_frame_names(len(self._frames))

    def __len__(self) -> int:
        return len(self._frames)

    def _get(self, idx: int) -> np.ndarray:
        fr = self._frames[idx]
        what = f"{self.name}: frame {idx}"
        if isinstance(fr, Image.Image):
            return image_to_rgb(fr, what)
        rgb = to_rgb_uint8(fr, what)
        # Copy when conversion returned (a view of) the caller's array: get() never aliases user data.
        return rgb.copy() if np.may_share_memory(rgb, fr) else rgb


def open_frames(
    source: FrameInput, *, fps: float | None = None, cache_bytes: int | None = None, decoder_threads: int = 0
) -> FrameSource:
    """Open ``source`` as a ``FrameSource``.

    ``source`` can be: a video file; a folder of images (natural order of names); one image file;
    a list/tuple of image paths (in that order); a list/tuple of numpy arrays or PIL images; a 4-D
    array (T, H, W, C); or a ``FrameSource`` (returned as is, not re-opened).

    ``fps`` overrides the source's frame rate (image folders and arrays have none; it is used for
    the overlay video). ``cache_bytes`` and ``decoder_threads`` tune video decoding (see
    ``VideoFileSource``). Raises ``VideoError`` for a missing path, an unreadable file, a folder
    without images, frames of mixed sizes or unsupported pixel types.
    """
    src = _open(source, cache_bytes=cache_bytes, decoder_threads=decoder_threads)
    if fps is not None:
        if not fps > 0:
            raise VideoError(f"fps must be positive, got {fps}")
        src.fps = float(fps)
    return src


def _open(source: FrameInput, *, cache_bytes: int | None, decoder_threads: int) -> FrameSource:
    # Imported here: both modules import this one for the base class.
    from effsam2.io.image_folder import ImageFileSource, ImageFilesSource, ImageFolderSource
    from effsam2.io.video_file import NotAVideoError, VideoFileSource

    if isinstance(source, FrameSource):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise VideoError(f"{path}: no such file or folder")
        if path.is_dir():
            return ImageFolderSource(path)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFileSource(path)
        try:
            video_options = {"decoder_threads": decoder_threads}
            if cache_bytes is not None:
                video_options["cache_bytes"] = cache_bytes
            return VideoFileSource(path, **video_options)
        except NotAVideoError:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                raise
        # Not something PyAV reads as a video: maybe an image with an unusual suffix.
        try:
            return ImageFileSource(path)
        except VideoError:
            raise VideoError(f"{path}: not a readable video or image file") from None
    if isinstance(source, np.ndarray):
        if source.ndim != 4:
            raise VideoError(
                f"a single array must have shape (T, H, W, C), got {source.shape}; pass a list of frames instead"
            )
        return ArrayFrameSource(list(source))
    if isinstance(source, (list, tuple)):
        if source and all(isinstance(s, (str, os.PathLike)) for s in source):
            return ImageFilesSource(source)  # a list of image paths, in the given order
        return ArrayFrameSource(source)
    raise VideoError(f"cannot read frames from a {type(source).__name__} (expected a path, a list of frames "
                     "or a FrameSource)")
