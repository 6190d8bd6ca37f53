"""Readers for video object segmentation datasets: DAVIS-2016, DAVIS-2017 and SA-V layouts.

Two annotation layouts are understood, detected from the folder (``open_dataset``):

* ``davis``: one label-map PNG per frame, ``Annotations/<res>/<seq>/<frame>.png`` with images in
  ``JPEGImages/<res>/<seq>/<frame>.jpg`` (``<res>`` is ``480p``, ``Full-Resolution``, ``1080p`` or
  absent). DAVIS-2016 masks (0/255) and DAVIS-2017 palette masks (object ids) both read through
  ``read_label_png``. Following the official davis2017-evaluation: the value 255 (void) is
  background, the objects of a sequence are ids ``1..max`` of its *first* annotated frame, and
  every video frame is annotated (a frame with an image but no mask is a missing mask file).
* ``sav``: SA-V val/test, ``Annotations_6fps/<video>/<obj>/<frame>.png`` (one binary PNG per
  object per annotated frame, every 4th frame of the 24 fps ``JPEGImages_24fps/<video>/``), with
  ``sav_val.txt`` / ``sav_test.txt`` listing the videos. Object ids are the folder names as
  integers; an object's annotated frames are the PNGs in its folder.

Either layout may also be given as a bare annotation folder (``<root>/<seq>/...``, what the SA-V
evaluator calls ``gt_root``); frames are then the annotated frames only.

Everything is lazy: listing sequences reads folder names, ground truth is read per frame.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath

import numpy as np

from effsam2.errors import DatasetError
from effsam2.io.png_labels import read_label_png

__all__ = ["DavisSequence", "SavSequence", "VOSDataset", "VOSSequence", "open_dataset", "read_split_file"]

VOID_ID = 255
_RESOLUTIONS = ("480p", "360p", "Full-Resolution", "1080p")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _stems(folder: Path, suffixes: tuple[str, ...]) -> tuple[str, ...]:
    """Sorted file stems in ``folder`` with one of ``suffixes`` (hidden files skipped)."""
    return tuple(
        sorted(
            p.stem for p in folder.iterdir() if p.suffix.lower() in suffixes and not p.name.startswith(".")
        )
    )


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


class VOSSequence(abc.ABC):
    """One video: its frames, objects and (lazily read) ground truth.

    Attributes:
        name: sequence (video) name, the folder name.
        frames: all frame names (file stems) of the video in order: the images if the dataset has
            an image folder, else the annotated frames.
    """

    name: str

    @property
    @abc.abstractmethod
    def frames(self) -> tuple[str, ...]: ...

    @property
    @abc.abstractmethod
    def object_ids(self) -> tuple[int, ...]:
        """The ground-truth object ids, ascending."""

    @abc.abstractmethod
    def annotated_frames(self, object_id: int) -> tuple[str, ...]:
        """Frames with ground truth for ``object_id``, in video order."""

    @abc.abstractmethod
    def gt_masks(self, frame: str) -> dict[int, np.ndarray]:
        """``{object id: (H, W) bool mask}`` for the objects annotated on ``frame``."""

    @abc.abstractmethod
    def image_path(self, frame: str) -> Path | None:
        """The image of ``frame``, or None when the dataset has no image folder."""


class DavisSequence(VOSSequence):
    """A DAVIS-layout sequence: one label map per frame, shared by all objects."""

    def __init__(self, name: str, ann_dir: Path, image_dir: Path | None) -> None:
        self.name, self.ann_dir, self.image_dir = name, ann_dir, image_dir

    @cached_property
    def _annotated(self) -> tuple[str, ...]:
        return _stems(self.ann_dir, (".png",))

    @cached_property
    def _images(self) -> dict[str, Path]:
        if self.image_dir is None:
            return {}
        return {p.stem: p for p in sorted(self.image_dir.iterdir()) if p.suffix.lower() in _IMAGE_SUFFIXES}

    @property
    def frames(self) -> tuple[str, ...]:
        return tuple(self._images) if self._images else self._annotated

    @property
    def mask_frames(self) -> tuple[str, ...]:
        """The frames that have a mask file."""
        return self._annotated

    @cached_property
    def object_ids(self) -> tuple[int, ...]:
        if not self.frames:
            raise DatasetError(f"sequence {self.name} has no frames: {self.image_dir or self.ann_dir}")
        first = self.frames[0]
        labels = self.label_map(first)
        n_objects = int(labels.max())
        if n_objects == 0:
            raise DatasetError(f"first annotated frame has no object: {self.mask_path(first)}")
        # Official rule (davis2017 DAVIS.get_all_masks): objects are 1..max id of the first frame.
        return tuple(range(1, n_objects + 1))

    def mask_path(self, frame: str) -> Path:
        return self.ann_dir / f"{frame}.png"

    def label_map(self, frame: str) -> np.ndarray:
        """``(H, W) uint8`` object ids of ``frame``, void (255) set to background as officially."""
        labels = read_label_png(self.mask_path(frame))
        if (labels == VOID_ID).any():
            labels = np.where(labels == VOID_ID, 0, labels).astype(np.uint8)
        return labels

    def annotated_frames(self, object_id: int) -> tuple[str, ...]:
        # DAVIS annotates every frame: when images exist each one must have a mask, and a missing
        # one surfaces as a DatasetError naming it when read.
        return self.frames

    def gt_masks(self, frame: str) -> dict[int, np.ndarray]:
        labels = self.label_map(frame)
        return {oid: labels == oid for oid in self.object_ids}

    def image_path(self, frame: str) -> Path | None:
        return self._images.get(frame)


class SavSequence(VOSSequence):
    """An SA-V-layout video: one folder of binary PNGs per object, sparse frames."""

    def __init__(self, name: str, ann_dir: Path, image_dir: Path | None) -> None:
        self.name, self.ann_dir, self.image_dir = name, ann_dir, image_dir

    @cached_property
    def object_dirs(self) -> dict[int, Path]:
        """``{object id: its annotation folder}``; ids are the folder names (``000`` -> 0)."""
        dirs: dict[int, Path] = {}
        for d in _subdirs(self.ann_dir):
            if not d.name.isdigit():
                raise DatasetError(f"object folder name is not a number: {d}")
            dirs[int(d.name)] = d
        if not dirs:
            raise DatasetError(f"no object folders in {self.ann_dir}")
        return dirs

    @cached_property
    def _annotated(self) -> dict[int, tuple[str, ...]]:
        return {oid: _stems(d, (".png",)) for oid, d in self.object_dirs.items()}

    @property
    def object_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self.object_dirs))

    @cached_property
    def frames(self) -> tuple[str, ...]:
        if self.image_dir is not None and self.image_dir.is_dir():
            return _stems(self.image_dir, _IMAGE_SUFFIXES)
        return tuple(sorted(set().union(*self._annotated.values())))

    def annotated_frames(self, object_id: int) -> tuple[str, ...]:
        return self._annotated[object_id]

    def mask_path(self, object_id: int, frame: str) -> Path:
        return self.object_dirs[object_id] / f"{frame}.png"

    def gt_masks(self, frame: str) -> dict[int, np.ndarray]:
        # SA-V evaluator: each PNG holds one object, foreground is any value > 0.
        return {
            oid: read_label_png(self.mask_path(oid, frame)) != 0
            for oid in self.object_ids
            if frame in self._annotated[oid]
        }

    def image_path(self, frame: str) -> Path | None:
        if self.image_dir is None:
            return None
        for suffix in _IMAGE_SUFFIXES:
            p = self.image_dir / f"{frame}{suffix}"
            if p.is_file():
                return p
        return None


def read_split_file(path: Path) -> list[str]:
    """Sequence names listed in a split file, in order, without duplicates.

    Accepts one name a line (``bear``, SA-V ``sav_000001``) and the official DAVIS-2016 lines of
    path pairs (``/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png``), where the
    name is the folder of the first path. Blank lines and ``#`` comments are skipped.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"cannot read split file {path}: {err.__class__.__name__}") from None
    names: dict[str, None] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        token = PurePosixPath(line.split()[0].replace("\\", "/"))
        name = token.parent.name if token.suffix.lower() in _IMAGE_SUFFIXES else token.name
        if name:
            names[name] = None
    if not names:
        raise DatasetError(f"split file lists no sequences: {path}")
    return list(names)


@dataclass(frozen=True)
class VOSDataset:
    """A dataset folder with a known layout.

    Attributes:
        root: the folder given by the user.
        layout: ``"davis"`` or ``"sav"``.
        annotations_dir: the folder holding one subfolder per sequence.
        images_dir: the folder holding one image subfolder per sequence, or None.
    """

    root: Path
    layout: str
    annotations_dir: Path
    images_dir: Path | None

    def all_sequences(self) -> list[str]:
        """Every sequence folder under the annotations folder, sorted."""
        return [d.name for d in _subdirs(self.annotations_dir)]

    def split_candidates(self, name: str) -> list[Path]:
        """Where a split called ``name`` (e.g. ``val``, ``2016/val``) is looked for, in order."""
        res = self.annotations_dir.name if self.annotations_dir.name in _RESOLUTIONS else None
        sets = self.root / "ImageSets"
        cands = [sets / f"{name}.txt", sets / "2017" / f"{name}.txt"]
        if res:
            cands.append(sets / res / f"{name}.txt")
        cands += [sets / "2016" / f"{name}.txt", self.root / f"{name}.txt", self.root / f"sav_{name}.txt"]
        return cands

    def sequence_names(self, split: str | Path | None = None) -> list[str]:
        """Sequence names of ``split``: None = all folders; an existing file; or a split name.

        Raises DatasetError when the split cannot be found or lists a missing sequence.
        """
        if split is None:
            names = self.all_sequences()
            if not names:
                raise DatasetError(f"no sequence folders in {self.annotations_dir}")
            return names
        split_path = Path(split)
        if not split_path.is_file():
            found = [p for p in self.split_candidates(str(split)) if p.is_file()]
            if not found:
                raise DatasetError(f"split {split!r} is neither a file nor a split of {self.root}")
            split_path = found[0]
        names = read_split_file(split_path)
        for name in names:
            if not (self.annotations_dir / name).is_dir():
                raise DatasetError(
                    f"sequence {name} listed in {split_path} has no folder in {self.annotations_dir}"
                )
        return names

    def sequence(self, name: str) -> VOSSequence:
        """The sequence ``name``; DatasetError if its annotation folder does not exist."""
        ann_dir = self.annotations_dir / name
        if not ann_dir.is_dir():
            raise DatasetError(f"sequence {name} not found: {ann_dir}")
        image_dir = self.images_dir / name if self.images_dir is not None else None
        if image_dir is not None and not image_dir.is_dir():
            image_dir = None
        cls = DavisSequence if self.layout == "davis" else SavSequence
        return cls(name, ann_dir, image_dir)


def _classify(ann_root: Path) -> str | None:
    """``"davis"`` if sequence folders hold PNGs, ``"sav"`` if they hold object folders."""
    for seq_dir in _subdirs(ann_root):
        entries = [p for p in seq_dir.iterdir() if not p.name.startswith(".")]
        if any(p.suffix.lower() == ".png" for p in entries):
            return "davis"
        if any(p.is_dir() for p in entries):
            return "sav"
    return None


def _pick_resolution(folder: Path) -> Path:
    for res in _RESOLUTIONS:
        if (folder / res).is_dir():
            return folder / res
    return folder


def open_dataset(root: str | Path, layout: str = "auto") -> VOSDataset:
    """Open a dataset folder, detecting its layout (see the module docstring).

    Args:
        root: dataset root (with ``Annotations`` or ``Annotations_6fps``) or a bare annotation
            folder of sequence subfolders.
        layout: ``"auto"``, ``"davis"`` or ``"sav"``.

    Raises:
        DatasetError: the folder does not exist or holds no recognisable annotations.
    """
    root = Path(root)
    if layout not in ("auto", "davis", "sav"):
        raise ValueError(f"unknown layout {layout!r}")
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    if (root / "Annotations_6fps").is_dir():
        ann = root / "Annotations_6fps"
        images: Path | None = root / "JPEGImages_24fps"
    elif (root / "Annotations").is_dir():
        ann = _pick_resolution(root / "Annotations")
        images = root / "JPEGImages" / ann.name if ann.name in _RESOLUTIONS else root / "JPEGImages"
    else:
        ann, images = root, None
    detected = _classify(ann)
    if detected is None:
        raise DatasetError(f"no annotated sequences found in {root} (expected Annotations/<sequence>/)")
    if layout != "auto" and layout != detected:
        raise DatasetError(f"{root} looks like a {detected} layout, not {layout}")
    if images is not None and not images.is_dir():
        images = None
    return VOSDataset(root=root, layout=detected, annotations_dir=ann, images_dir=images)
