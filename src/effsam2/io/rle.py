"""COCO run-length encoding of masks (pycocotools) and the ``masks.json`` file format.

``masks.json`` layout (one file per video, written atomically)::

    {
      "format": "effsam2-rle", "version": 1,
      "height": H, "width": W, "num_frames": N, "fps": 29.97 | null,
      "annotations": [            # sorted by (frame_index, obj_id)
        {"frame_index": 0, "frame_name": "00000", "obj_id": 1,
         "segmentation": {"size": [H, W], "counts": "<COCO compressed RLE>"},
         "area": 1234,            # pixels
         "bbox": [x, y, w, h]},   # COCO convention, floats, [0, 0, 0, 0] for an empty mask
        ...
      ]
    }

The "segmentation" dicts are standard COCO RLE: ``pycocotools.mask.decode`` reads them directly.
"""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from pycocotools import mask as mask_utils

from effsam2.errors import DatasetError, PromptError
from effsam2.io.atomic import atomic_write
from effsam2.io.masks import as_bool_mask

if TYPE_CHECKING:  # Python 3.10 has no typing.Self
    from typing_extensions import Self

__all__ = ["RLE_FORMAT", "RleDocument", "RleJsonWriter", "decode_rle", "encode_rle", "read_rle_json"]

RLE_FORMAT = "effsam2-rle"
_VERSION = 1


def encode_rle(mask: Any) -> dict:
    """Encode an (H, W) bool mask as COCO compressed RLE ``{"size": [H, W], "counts": str}``."""
    m = as_bool_mask(mask)
    rle = mask_utils.encode(np.asfortranarray(m, dtype=np.uint8))  # COCO RLE runs down columns
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": rle["counts"].decode("ascii")}


def _to_coco(rle: dict) -> dict:
    """The dict pycocotools wants: counts as bytes (uncompressed list counts are compressed)."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"not a COCO RLE dict: {str(rle)[:80]}") from None
    if isinstance(counts, list):
        return mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": [h, w], "counts": counts}


def decode_rle(rle: dict) -> np.ndarray:
    """Decode a COCO RLE dict (compressed str/bytes counts or an uncompressed list) to (H, W) bool."""
    return np.ascontiguousarray(mask_utils.decode(_to_coco(rle)).astype(bool))


def rle_area_bbox(rle: dict) -> tuple[int, list[float]]:
    """(area in pixels, COCO [x, y, w, h] bbox) computed on the RLE without decoding it."""
    coco = _to_coco(rle)
    return int(mask_utils.area(coco)), [float(v) for v in mask_utils.toBbox(coco)]


class RleJsonWriter:
    """Collects per-(frame, object) RLE records and writes ``masks.json`` at ``close()``.

    Records can be added in any frame order; adding the same (frame, object) again replaces the
    earlier record (propagation revisits the prompt frame). Everything is kept in memory as RLE,
    a few hundred bytes to a few KB per object per frame. Used as a context manager, an exception
    in the block discards the records and writes nothing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        height: int,
        width: int,
        num_frames: int | None = None,
        frame_names: Sequence[str] | None = None,
        fps: float | None = None,
    ):
        self.path = Path(path)
        self.height, self.width = int(height), int(width)
        self.num_frames = num_frames if num_frames is not None else (len(frame_names) if frame_names else None)
        self.fps = fps
        self._frame_names = frame_names
        self._by_frame: dict[int, dict[int, dict]] = {}  # frame -> obj -> record
        self._closed = False

    def _check(self, frame_index: Any, obj_id: Any) -> tuple[int, int]:
        if self._closed:
            raise ValueError(f"{self.path}: RleJsonWriter is closed")
        f, o = operator.index(frame_index), operator.index(obj_id)
        if f < 0 or (self.num_frames is not None and f >= self.num_frames):
            raise IndexError(f"frame index {f} out of range (0..{(self.num_frames or 0) - 1})")
        if o < 0:
            raise PromptError(f"object id must be >= 0, got {o}")
        return f, o

    def add(self, frame_index: int, obj_id: int, mask: Any, *, frame_name: str | None = None) -> dict:
        """Encode an (H, W) bool mask and record it; returns the record."""
        m = as_bool_mask(mask, f"mask of object {obj_id}")
        if m.shape != (self.height, self.width):
            raise ValueError(f"mask of object {obj_id} has shape {m.shape}, expected {(self.height, self.width)}")
        return self.add_rle(frame_index, obj_id, encode_rle(m), frame_name=frame_name)

    def add_rle(self, frame_index: int, obj_id: int, rle: dict, *, frame_name: str | None = None) -> dict:
        """Record an already encoded mask (COCO RLE of this writer's size); returns the record."""
        f, o = self._check(frame_index, obj_id)
        if [int(v) for v in rle["size"]] != [self.height, self.width]:
            raise ValueError(f"RLE of size {rle['size']} does not match {[self.height, self.width]}")
        if frame_name is None:
            frame_name = self._frame_names[f] if self._frame_names is not None else f"{f:05d}"
        counts = rle["counts"]
        if not isinstance(counts, str):  # normalise bytes / list counts to the JSON string form
            counts = _to_coco(rle)["counts"].decode("ascii")
        seg = {"size": [self.height, self.width], "counts": counts}
        area, bbox = rle_area_bbox(seg)
        record = {"frame_index": f, "frame_name": frame_name, "obj_id": o, "segmentation": seg,
                  "area": area, "bbox": bbox}
        self._by_frame.setdefault(f, {})[o] = record
        return record

    def frame_rles(self, frame_index: int) -> dict[int, dict] | None:
        """obj_id -> RLE of the masks recorded for a frame, or None if nothing was recorded."""
        recs = self._by_frame.get(frame_index)
        return {o: r["segmentation"] for o, r in recs.items()} if recs else None

    def records(self) -> list[dict]:
        """All records sorted by (frame_index, obj_id)."""
        return [self._by_frame[f][o] for f in sorted(self._by_frame) for o in sorted(self._by_frame[f])]

    def __len__(self) -> int:
        return sum(len(r) for r in self._by_frame.values())

    def clear_frame(self, frame_index: int) -> None:
        """Forget every record of one frame (before re-adding it with a different set of objects)."""
        self._by_frame.pop(operator.index(frame_index), None)

    def write(self) -> Path:
        """Write the JSON file atomically with the records so far (keeps them); returns its path."""
        if self._closed:
            raise ValueError(f"{self.path}: RleJsonWriter is closed")
        doc = {"format": RLE_FORMAT, "version": _VERSION, "height": self.height, "width": self.width,
               "num_frames": self.num_frames, "fps": self.fps, "annotations": self.records()}
        with atomic_write(self.path, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
        return self.path

    def close(self) -> Path:
        """Write the JSON file (first call only) and free the records; returns its path."""
        if not self._closed:
            self.write()
            self._closed = True
            self._by_frame.clear()
        return self.path

    def abort(self) -> None:
        """Discard the records without writing anything."""
        self._closed = True
        self._by_frame.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass(frozen=True)
class RleDocument:
    """A parsed ``masks.json``: header fields and the records (sorted by frame, then object)."""

    height: int
    width: int
    num_frames: int | None
    fps: float | None
    annotations: list[dict] = field(repr=False)
    _by_frame: dict[int, list[dict]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_frame: dict[int, list[dict]] = {}
        for a in self.annotations:
            by_frame.setdefault(a["frame_index"], []).append(a)
        object.__setattr__(self, "_by_frame", by_frame)  # frozen dataclass: index built once

    def frame_indices(self) -> list[int]:
        """Sorted indices of the frames that have at least one record."""
        return sorted(self._by_frame)

    def frame_masks(self, frame_index: int) -> dict[int, np.ndarray]:
        """obj_id -> decoded (H, W) bool mask for one frame (empty dict if none)."""
        return {a["obj_id"]: decode_rle(a["segmentation"]) for a in self._by_frame.get(frame_index, [])}


def read_rle_json(path: str | os.PathLike[str]) -> RleDocument:
    """Read a ``masks.json`` written by ``RleJsonWriter``; ``DatasetError`` if missing or malformed."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read RLE file ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != RLE_FORMAT:
        raise DatasetError(f"{path}: not an {RLE_FORMAT} file")
    try:
        h, w = int(doc["height"]), int(doc["width"])
        anns = doc["annotations"]
        for a in anns:
            if not (isinstance(a, dict) and {"frame_index", "obj_id", "segmentation"} <= a.keys()):
                raise ValueError("annotation without frame_index/obj_id/segmentation")
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{path}: malformed {RLE_FORMAT} file ({e})") from None
    anns = sorted(anns, key=lambda a: (a["frame_index"], a["obj_id"]))
    return RleDocument(height=h, width=w, num_frames=doc.get("num_frames"), fps=doc.get("fps"), annotations=anns)
