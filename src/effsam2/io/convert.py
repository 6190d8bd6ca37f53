"""Conversion of in-memory frames (numpy arrays, PIL images) to (H, W, 3) uint8 RGB.

Rules (the same for every frame source):

- uint8: used as is. bool: False -> 0, True -> 255.
- uint16 (16-bit images): ``round(v / 257)``, which maps 0 -> 0 and 65535 -> 255 exactly.
- float16/32/64, expected in [0, 1]: ``round(v * 255)`` clipped to [0, 255]; NaN/inf is an error.
- Shapes: (H, W) and (H, W, 1) are grayscale (replicated to 3 channels); (H, W, 2) is gray+alpha
  and (H, W, 4) is RGBA: the alpha channel is dropped (not composited: the object is in the
  colour channels, and compositing onto an arbitrary background would change them).
- PIL images: palette (P/PA), CMYK, YCbCr, 1-bit, LA, RGBA are converted by PIL to RGB;
  16-bit grayscale ("I;16*") and 32-bit integer ("I", assumed to hold 16-bit values, as PIL
  produces for 16-bit PNGs) follow the uint16 rule; float ("F") follows the float rule.

Anything else (int32/int64/complex arrays, 3-D arrays with 5 channels, ...) raises ``VideoError``
naming the frame, so a user who passes ``np.array(..., dtype=int64)`` learns why it was refused.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from effsam2.errors import VideoError

__all__ = ["check_array_frame", "image_to_rgb", "to_rgb_uint8", "uint16_to_uint8"]

_FLOAT_KINDS = (np.float16, np.float32, np.float64)
_ACCEPTED = "uint8, uint16, bool or float in [0, 1]"


def uint16_to_uint8(a: np.ndarray) -> np.ndarray:
    """Scale 16-bit values to 8 bits as ``round(v / 257)`` (integer arithmetic, exact)."""
    # floor((v + 128) / 257) equals round(v / 257) for every integer v: 257 is odd, so v / 257
    # is never exactly halfway between two integers.
    return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)


def check_array_frame(a: np.ndarray, what: str) -> tuple[int, int]:
    """Validate dtype and shape of an array frame without converting it; return (H, W).

    Raises ``VideoError`` mentioning ``what`` (e.g. "frame 3") if the array cannot be converted.
    """
    if a.dtype != np.uint8 and a.dtype != np.uint16 and a.dtype != np.bool_ and a.dtype not in _FLOAT_KINDS:
        raise VideoError(f"{what}: unsupported dtype {a.dtype} (expected {_ACCEPTED})")
    if a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 2, 3, 4)):
        if a.shape[0] == 0 or a.shape[1] == 0:
            raise VideoError(f"{what}: empty image of shape {a.shape}")
        return int(a.shape[0]), int(a.shape[1])
    raise VideoError(f"{what}: unsupported shape {a.shape} (expected (H, W), (H, W, 1|2|3|4))")


def to_rgb_uint8(a: np.ndarray, what: str) -> np.ndarray:
    """Convert an array frame to a C-contiguous (H, W, 3) uint8 RGB array (see module docstring).

    Returns a new array or ``a`` itself when it is already (H, W, 3) uint8 and contiguous.
    """
    check_array_frame(a, what)
    if a.dtype == np.uint8:
        u8 = a
    elif a.dtype == np.bool_:
        u8 = a.astype(np.uint8) * np.uint8(255)
    elif a.dtype == np.uint16:
        u8 = uint16_to_uint8(a)
    else:
        if not np.isfinite(a).all():
            raise VideoError(f"{what}: float image contains NaN or infinite values")
        u8 = np.clip(np.rint(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if u8.ndim == 2:
        u8 = u8[:, :, None]
    channels = u8.shape[2]
    if channels == 1 or channels == 2:  # gray or gray+alpha
        u8 = np.repeat(u8[:, :, :1], 3, axis=2)
    elif channels == 4:  # RGBA
        u8 = u8[:, :, :3]
    return np.ascontiguousarray(u8)


def image_to_rgb(im: Image.Image, what: str) -> np.ndarray:
    """Convert a PIL image (any mode) to (H, W, 3) uint8 RGB; ``VideoError`` if impossible."""
    mode = im.mode
    # np.array (not asarray): PIL hands numpy a read-only buffer; callers get a writable copy.
    if mode == "RGB":
        return np.array(im, dtype=np.uint8)
    if mode == "L":
        return to_rgb_uint8(np.asarray(im, dtype=np.uint8), what)
    if mode.startswith("I;16"):
        # PIL exposes 16-bit gray with the right byte order through numpy as uint16.
        return to_rgb_uint8(np.asarray(im).astype(np.uint16), what)
    if mode == "I":
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise VideoError(f"{what}: 32-bit integer image with values outside 0..65535")
        return to_rgb_uint8(a.astype(np.uint16), what)
    if mode == "F":
        return to_rgb_uint8(np.asarray(im, dtype=np.float32), what)
    try:
        # P, PA, LA, RGBA, RGBX, CMYK, YCbCr, LAB, HSV, 1: PIL knows how to get RGB (alpha dropped).
        rgb = im.convert("RGB")
    except (ValueError, OSError) as e:
        raise VideoError(f"{what}: cannot convert PIL image of mode {mode} to RGB ({e})") from None
    return np.array(rgb, dtype=np.uint8)
