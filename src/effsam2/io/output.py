"""``OutputWriter``: everything ``effsam2 track`` writes for one video, fed frame by frame.

Layout of ``out_dir``::

    masks/<frame_name>.png   "png": one DAVIS palette PNG per frame that received masks,
                             written atomically as soon as the frame is added
    masks.json               "rle": COCO RLE per (frame, object), written at close()
    overlay.mp4              "mp4": the input with masks overlaid, written at close(); it spans the
                             frames from the first to the last that received masks

A result set is replaced as a whole or not at all: the run is written into a staging folder beside
``out_dir`` (``.<name>.effsam2-partial-<pid>``) and swapped in at ``close()``; only then is an earlier
result removed. A non-empty ``out_dir`` is refused unless ``overwrite`` is given. A run that fails or is
interrupted (``abort()``) removes its staging folder, so ``out_dir`` is left exactly as it was.

Masks can arrive in any frame order (propagation runs forward, then backward) and a frame can be
added again (its outputs are replaced). Memory stays
bounded on long videos: masks are kept only as COCO RLE (typically well under 1% of a raw frame per
object), never as full arrays.
Overlaps between objects are resolved as in ``labels_from_masks`` (lowest object id wins), the
same way for the PNGs and the overlay.
"""

from __future__ import annotations

import operator
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from effsam2.errors import Effsam2Error, PromptError
from effsam2.io.frames import FrameIndexError, FrameSource
from effsam2.io.masks import as_bool_mask, check_label_id, labels_from_masks, save_label_png
from effsam2.io.overlay import write_overlay_video
from effsam2.io.rle import RleJsonWriter, decode_rle, encode_rle

if TYPE_CHECKING:  # Python 3.10 has no typing.Self
    from typing_extensions import Self

__all__ = ["OUTPUT_FORMATS", "OutputWriter", "check_object_id", "check_output_folder", "fresh_staging_folder",
           "parse_formats", "staging_folder", "swap_in"]

OUTPUT_FORMATS = ("png", "rle", "mp4")


def parse_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    """Normalise ``"png,mp4"`` or ``["PNG", "mp4"]`` to a tuple in canonical order.

    ``Effsam2Error`` naming the offender for an unknown format or an empty selection.
    """
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    chosen = set()
    for f in items:
        name = str(f).strip().lower()
        if name not in OUTPUT_FORMATS:
            raise Effsam2Error(f"unknown output format {str(f).strip()!r} (choose from {', '.join(OUTPUT_FORMATS)})")
        chosen.add(name)
    if not chosen:
        raise Effsam2Error(f"no output format given (choose from {', '.join(OUTPUT_FORMATS)})")
    return tuple(f for f in OUTPUT_FORMATS if f in chosen)


def check_object_id(obj_id: Any, formats: tuple[str, ...]) -> int:
    """``obj_id`` as an int the chosen formats can store: 1..255 with "png" or "mp4" (uint8 label maps),
    any integer with "rle" alone. ``PromptError`` otherwise."""
    if tuple(formats) == ("rle",):
        return operator.index(obj_id)
    try:
        return check_label_id(obj_id)
    except PromptError as err:
        raise PromptError(f"{err}; the png and mp4 outputs need such ids (rle alone stores any id)") from None


def check_output_folder(out_dir: str | os.PathLike[str], overwrite: bool) -> None:
    """``Effsam2Error`` when ``out_dir`` cannot take a new result: a file, or a non-empty folder without
    ``overwrite`` (call it before any slow work; ``OutputWriter`` checks again)."""
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise Effsam2Error(f"{path}: output path exists and is not a folder")
    if path.is_dir() and not overwrite and any(path.iterdir()):
        raise Effsam2Error(f"{path} is not empty: pass --overwrite (overwrite=True) to replace it whole, which "
                           "happens only once the new result is complete, or choose another folder")


def staging_folder(out_dir: Path, kind: str = "partial") -> Path:
    """The hidden folder beside ``out_dir`` where a run is written before it is swapped in."""
    return out_dir.parent / f".{out_dir.name}.effsam2-{kind}-{os.getpid()}"


def fresh_staging_folder(out_dir: Path) -> Path:
    """An empty staging folder for ``out_dir`` (a leftover of a killed run with our pid is removed)."""
    staging = staging_folder(out_dir)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def swap_in(staging: Path, out_dir: Path) -> None:
    """Make ``staging`` the new ``out_dir``; an earlier ``out_dir`` is removed only after the swap."""
    if out_dir.exists():
        old = staging_folder(out_dir, "old")
        os.replace(out_dir, old)
        os.replace(staging, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out_dir)


class OutputWriter:
    """Writes masks for the frames of one ``FrameSource`` in the chosen formats.

    Args:
        out_dir: output folder (created if missing; a non-empty one needs ``overwrite``).
        formats: subset of {"png", "rle", "mp4"} (iterable or comma-separated string).
        frames: the source the masks belong to (size, frame names, overlay pixels).
        overwrite: replace a non-empty ``out_dir`` whole when the run completes.
        fps: overlay frame rate (default: the source's).
        alpha: overlay opacity.

    Files are written into ``staging_dir`` and moved to ``out_dir`` together by ``close()``. Use as a
    context manager: a clean exit calls ``close()``; an exception calls ``abort()``, which removes the
    staging folder and any parent folders this writer created, so ``out_dir`` stays as it was. After a
    successful ``close()`` nothing is removed.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        formats: str | Iterable[str],
        frames: FrameSource,
        *,
        overwrite: bool = False,
        fps: float | None = None,
        alpha: float = 0.5,
    ):
        self.formats = parse_formats(formats)
        self.out_dir = Path(out_dir)
        check_output_folder(self.out_dir, overwrite)
        self.staging_dir = staging_folder(self.out_dir)
        self.frames = frames
        self.fps = fps
        self.alpha = alpha
        self.masks_dir = self.staging_dir / "masks"
        self.json_path = self.staging_dir / "masks.json"
        self.video_path = self.staging_dir / "overlay.mp4"
        # parent folders this run creates, so that abort() can remove exactly those (outermost first)
        self._created_dirs: list[Path] = []
        try:
            self._make_dir(self.out_dir.parent)
            fresh_staging_folder(self.out_dir)
            if "png" in self.formats:
                self.masks_dir.mkdir()
        except (FileExistsError, NotADirectoryError):
            raise Effsam2Error(f"{self.out_dir}: cannot create the output folder (a parent is a file)") from None
        except OSError as e:
            raise Effsam2Error(f"{self.out_dir}: cannot create output folder ({e.strerror or e})") from None
        # One RLE store serves masks.json and the overlay (which decodes it back at close()).
        self._store = RleJsonWriter(
            self.json_path, height=frames.height, width=frames.width, num_frames=len(frames),
            frame_names=frames.frame_names, fps=frames.fps,
        )
        self._added: set[int] = set()
        self._closed = False

    def add(self, frame_idx: int, masks: Mapping[int, Any]) -> None:
        """Record the masks of frame ``frame_idx``: obj_id -> (H, W) bool mask.

        Ids must be 1..255 when writing "png" or "mp4" (label maps are uint8), >= 0 for "rle"
        alone. An empty mapping marks the frame as processed with no object visible.
        """
        if self._closed:
            raise ValueError("OutputWriter is closed")
        n = len(self.frames)
        i = operator.index(frame_idx)
        if not 0 <= i < n:
            raise FrameIndexError(f"frame index {i} out of range for {self.frames.name} ({n} frames: 0..{n - 1})")
        shape = (self.frames.height, self.frames.width)
        bools = {}
        for obj_id, mask in masks.items():
            oid = check_object_id(obj_id, self.formats)
            m = as_bool_mask(mask, f"mask of object {oid} in frame {i}")
            if m.shape != shape:
                raise ValueError(f"mask of object {oid} in frame {i} has shape {m.shape}, expected {shape}")
            bools[oid] = m
        if "png" in self.formats:
            save_label_png(self.masks_dir / f"{self.frames.frame_names[i]}.png", labels_from_masks(bools, shape=shape))
        self._store.clear_frame(i)  # re-adding a frame replaces all its objects
        for oid, m in bools.items():
            self._store.add_rle(i, oid, encode_rle(m))
        self._added.add(i)

    def _labels(self, i: int) -> np.ndarray | None:
        if i not in self._added:
            return None
        rles = self._store.frame_rles(i) or {}
        shape = (self.frames.height, self.frames.width)
        return labels_from_masks({o: decode_rle(r) for o, r in rles.items()}, shape=shape)

    @property
    def overlay_frames(self) -> range:
        """The frames overlay.mp4 shows: the first to the last frame added (the whole source before any add).

        A bounded run (e.g. ``--max-frames``) gets an overlay of the frames it tracked, not of the whole video.
        """
        if not self._added:
            return range(len(self.frames))
        return range(min(self._added), max(self._added) + 1)

    def close(self, on_frame: Callable[[int], Any] | None = None) -> list[Path]:
        """Write masks.json and overlay.mp4 (as selected) and swap the result in; returns its paths.

        ``on_frame(i)`` is called after each overlay frame is encoded (for a progress bar).
        """
        if self._closed:
            return []
        written = []
        if "png" in self.formats:
            written += [Path("masks") / f"{self.frames.frame_names[i]}.png" for i in sorted(self._added)]
        try:
            if "rle" in self.formats:
                self._store.write()
                written.append(Path(self.json_path.name))
            if "mp4" in self.formats:
                write_overlay_video(self.video_path, self.frames, self._labels, fps=self.fps, alpha=self.alpha,
                                    on_frame=on_frame, frame_range=self.overlay_frames)
                written.append(Path(self.video_path.name))
            swap_in(self.staging_dir, self.out_dir)
        except BaseException:
            self.abort()
            raise
        self._store.abort()  # frees the stored RLE
        self._closed = True
        self._created_dirs.clear()  # the run is complete: nothing of it is removed any more
        return [self.out_dir / p for p in written]

    def abort(self) -> None:
        """Stop without swapping anything in and remove what this run created (see the class)."""
        self._store.abort()
        self._closed = True
        # best effort: the run is failing already, its own error is the one to report
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        for folder in reversed(self._created_dirs):
            try:
                folder.rmdir()
            except OSError:
                pass  # not empty: something else was put there meanwhile, so it stays
        self._created_dirs.clear()

    def _make_dir(self, folder: Path) -> None:
        """mkdir -p, remembering the folders that did not exist (outermost first)."""
        missing = [d for d in (folder, *folder.parents) if not d.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        self._created_dirs += reversed(missing)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
