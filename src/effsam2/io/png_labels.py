"""Read PNG annotations as object-id label maps (writing is ``effsam2.io.masks.save_label_png``).

Annotations reach us in several PNG flavours and all of them are turned into one thing, an
``(H, W) uint8`` array of object ids (0 = background):

* ``P`` (palette, DAVIS-2017 style): the palette *indices* are the ids, the colours are ignored.
* ``L`` / ``LA`` / ``I;16`` / ``I`` (grey levels, DAVIS-2016 style): the values are the ids;
  alpha is ignored.
* ``1`` (one bit per pixel): ``{0, 1}``.
* ``RGB`` / ``RGBA`` drawn with the DAVIS palette: colours are mapped back to their indices; an
  RGB image whose three channels are equal is read as grey levels.

Binary rule: a map whose only values are 0 and 255 (or 0 and 65535 for 16-bit PNGs) is a binary
mask, so 255 becomes object 1. This is what makes DAVIS-2016 masks (0/255) and DAVIS-2017 masks
(0/1/2...) read the same way. The consequence is that a DAVIS-2017 frame containing *only* void
(255) pixels would read as object 1; DAVIS releases do not contain such frames. In every other
map 255 is kept as 255 and the evaluation code decides what it means (see ``effsam2.eval``).

Any missing, unreadable or non-PNG file raises ``DatasetError`` with a one-line message naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from effsam2.errors import DatasetError
from effsam2.io.masks import davis_palette

__all__ = ["DAVIS_PALETTE", "read_binary_mask", "read_label_png"]


DAVIS_PALETTE = davis_palette()
DAVIS_PALETTE.setflags(write=False)  # shared constant: make accidental mutation an error


def _open_png(path: Path) -> tuple[np.ndarray, str]:
    """Decode ``path`` fully; returns (pixel array as PIL gives it, PIL mode)."""
    try:
        with Image.open(path) as img:
            if img.format != "PNG":
                raise DatasetError(f"not a PNG file ({img.format or 'unknown format'}): {path}")
            img.load()  # force decoding now so truncated files fail here, not later
            return np.array(img), img.mode  # a writable copy: callers may edit labels
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"mask file not found: {path}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        # UnidentifiedImageError and truncation errors are OSErrors; keep the message one line.
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DatasetError(f"cannot read mask {path}: {reason}") from None


def _apply_binary_rule(values: np.ndarray) -> np.ndarray:
    """uint8 (H, W) ids; a 0/255-only map becomes 0/1 (see the module docstring)."""
    if values.size == 0 or int(values.max()) != 255:
        return values
    # uint8 wrap-around: values 1..254 map to 0..253, while 0 -> 255 and 255 -> 254.
    if ((values - np.uint8(1)) < 254).any():
        return values
    return (values != 0).view(np.uint8)


def _rgb_to_ids(rgb: np.ndarray, path: Path) -> np.ndarray:
    """Map an (H, W, 3) uint8 image drawn with the DAVIS palette back to palette indices."""
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0]  # grey image saved as RGB: the grey level is the value
    code = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    pal = DAVIS_PALETTE.astype(np.int32)
    pal_code = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    order = np.argsort(pal_code)  # palette colours are distinct, so a sorted lookup is exact
    pos = np.clip(np.searchsorted(pal_code[order], code), 0, 255)
    ok = pal_code[order][pos] == code
    if not ok.all():
        y, x = np.argwhere(~ok)[0]
        colour = tuple(int(c) for c in rgb[y, x])
        raise DatasetError(f"colour {colour} at ({x}, {y}) is not in the DAVIS palette: {path}")
    return order[pos].astype(np.uint8)


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG annotation as object ids.

    Args:
        path: a PNG file (palette, grey, 1-bit or palette-coloured RGB; see the module docstring).

    Returns:
        ``(H, W) uint8`` object ids, 0 = background; binary 0/255 masks come back as 0/1.

    Raises:
        DatasetError: the file is missing, not a PNG, unreadable, has more than 255 ids or uses
            colours outside the DAVIS palette.
    """
    path = Path(path)
    arr, mode = _open_png(path)
    if mode == "1":
        return arr.astype(np.uint8)
    if mode in ("P", "L"):
        return _apply_binary_rule(np.ascontiguousarray(arr, dtype=np.uint8))
    if mode in ("PA", "LA"):
        return _apply_binary_rule(np.ascontiguousarray(arr[..., 0], dtype=np.uint8))
    if mode in ("RGB", "RGBA"):
        return _apply_binary_rule(_rgb_to_ids(np.ascontiguousarray(arr[..., :3]), path))
    if mode.startswith("I"):  # 16- or 32-bit grey
        wide = np.asarray(arr, dtype=np.int64)
        if wide.min() < 0:
            raise DatasetError(f"negative label values in {path}")
        top = int(wide.max())
        if top > 255:
            if top == 65535 and not ((wide != 0) & (wide != 65535)).any():
                return (wide != 0).astype(np.uint8)  # 16-bit binary mask
            raise DatasetError(f"label values above 255 (max {top}) are not supported: {path}")
        return _apply_binary_rule(wide.astype(np.uint8))
    raise DatasetError(f"unsupported PNG mode {mode!r} for a mask: {path}")


def read_binary_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG mask as ``(H, W) bool``: every non-zero id is foreground.

    A multi-object palette PNG therefore gives the union of its objects (void 255 included).
    Raises ``DatasetError`` like ``read_label_png``.
    """
    return read_label_png(path) != 0
