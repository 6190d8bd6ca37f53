"""Frame sources backed by image files: a folder of frames, a list of image paths, one image.

Only image *headers* are read when the source is opened (to check that every frame has the same
size); pixels are decoded in ``get``. Frame names are the file stems, so per-frame outputs keep
the input's names (DAVIS layout: ``00000.jpg`` -> ``masks/00000.png``).

EXIF orientation (phone photos; JPEG, TIFF, WebP) is applied, both to the size check and to the
pixels, so frames come out the way image viewers show them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from effsam2.errors import VideoError
from effsam2.io.convert import image_to_rgb, to_rgb_uint8
from effsam2.io.frames import IMAGE_SUFFIXES, FrameSource, natural_sort_key

__all__ = ["ImageFileSource", "ImageFilesSource", "ImageFolderSource", "list_image_files"]

_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}  # orientations that rotate by 90 degrees
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def list_image_files(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` in natural order (hidden files skipped)."""
    files = [
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(files, key=lambda p: natural_sort_key(p.name))


def _orientation(im: Image.Image) -> int:
    """EXIF orientation (1 = as stored). Not read for PNG: Pillow would decode the whole image to
    look for an eXIf chunk after the pixel data, and phone cameras write JPEG/HEIF, not PNG."""
    if im.format == "PNG":
        return 1
    return im.getexif().get(_EXIF_ORIENTATION, 1)


def _header_size(path: Path) -> tuple[int, int]:
    """(height, width) as displayed, from the file header only."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = _orientation(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise VideoError(f"{path}: not a readable image ({_reason(e)})") from None
    return (w, h) if orientation in _SWAPS_AXES else (h, w)


def _reason(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _png_16bit_color_type(path: Path) -> int | None:
    """The PNG colour type if ``path`` is a 16-bit PNG with colour or alpha, else None.

    Pillow reads such files (48/64-bit RGB(A), 32-bit gray+alpha) as 8 bits by dropping the low
    byte; we decode them with FFmpeg's PNG decoder instead to round v/257 like every other 16-bit
    input. (16-bit plain gray is read correctly by Pillow as mode "I;16".)
    """
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    bit_depth, color_type = head[24], head[25]
    return color_type if bit_depth == 16 and color_type in (2, 4, 6) else None


def _decode_png16(path: Path, color_type: int) -> np.ndarray:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    fmt = "gray16le" if color_type == 4 else "rgb48le"  # alpha dropped by the conversion
    return frame.reformat(format=fmt).to_ndarray()


def _load_rgb(path: Path, what: str) -> np.ndarray:
    """Decode one image file to (H, W, 3) uint8 RGB, EXIF orientation applied."""
    try:
        color_type = _png_16bit_color_type(path)
        if color_type is not None:
            return to_rgb_uint8(_decode_png16(path, color_type), what)
        with Image.open(path) as im:
            if _orientation(im) != 1:
                im = ImageOps.exif_transpose(im)
            im.load()
            return image_to_rgb(im, what)
    except VideoError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, av.FFmpegError, StopIteration) as e:
        raise VideoError(f"{what}: cannot decode image {path} ({_reason(e)})") from None


class ImageFilesSource(FrameSource):
    """Frames from an explicit list of image files, in the given order."""

    def __init__(self, files: Sequence[str | os.PathLike[str]], *, name: str | None = None):
        self._files = [Path(f) for f in files]
        self.name = name if name is not None else "<image list>"
        self.fps = None
        if not self._files:
            raise VideoError(f"{self.name}: no image files")
        stems: dict[str, Path] = {}
        for f in self._files:
            if f.stem in stems:
                raise VideoError(
                    f"{self.name}: {stems[f.stem].name} and {f.name} have the same name stem, so their "
                    "masks would overwrite each other"
                )
            stems[f.stem] = f
        self.frame_names = list(stems)
        self.height, self.width = _header_size(self._files[0])
        for i, f in enumerate(self._files[1:], start=1):
            h, w = _header_size(f)
            if (h, w) != (self.height, self.width):
                raise VideoError(
                    f"{f}: frame {i} is {w}x{h} but the first frame {self._files[0].name} is "
                    f"{self.width}x{self.height} (all frames must have the same size)"
                )

    @property
    def files(self) -> list[Path]:
        """The image paths, frame ``i`` is ``files[i]``."""
        return list(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def _get(self, idx: int) -> np.ndarray:
        path = self._files[idx]
        rgb = _load_rgb(path, f"{path}: frame {idx}")
        if rgb.shape[:2] != (self.height, self.width):  # header lied (possible with odd TIFFs)
            raise VideoError(
                f"{path}: frame {idx} decodes to {rgb.shape[1]}x{rgb.shape[0]}, expected {self.width}x{self.height}"
            )
        return rgb


class ImageFolderSource(ImageFilesSource):
    """All images directly inside a folder (.jpg .jpeg .png .bmp .tif .tiff .webp, any case), in
    natural order of their file names; other files and sub-folders are ignored."""

    def __init__(self, folder: str | os.PathLike[str]):
        folder = Path(folder)
        try:
            files = list_image_files(folder)
        except OSError as e:
            raise VideoError(f"{folder}: cannot list folder ({_reason(e)})") from None
        if not files:
            raise VideoError(
                f"{folder}: folder contains no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        self.folder = folder
        super().__init__(files, name=str(folder))


class ImageFileSource(ImageFilesSource):
    """A single image as a one-frame source (frame name: the file stem)."""

    def __init__(self, path: str | os.PathLike[str]):
        path = Path(path)
        super().__init__([path], name=str(path))
