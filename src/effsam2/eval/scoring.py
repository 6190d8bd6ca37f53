"""Score predicted masks against a dataset with the DAVIS semi-supervised protocol.

Protocol (both layouts):

* Each object is scored on its annotated frames minus the first and the last one (the first is
  the prompt, the last is dropped by convention): for DAVIS every frame of the sequence
  (``davis2017-evaluation``: ``all_gt_masks[:, 1:-1]``), for SA-V the object's own annotated frames
  (``sav_benchmark.VideoEvaluator``: ``all_frames[1:-1]`` per object folder). Frames without ground
  truth are never read. ``skip_first_last=False`` scores all annotated frames.
* Per object: J and F per frame, then their means over frames (plus J/F recall and decay).
* Per sequence: the mean over its objects.
* Overall, two numbers, both reported: ``global`` = mean over *all objects of all sequences*
  (what davis2017-evaluation and the SA-V evaluator report as J&F), and ``sequence_mean`` = mean
  over sequences of the per-sequence means (each sequence weighs the same).
* J&F = (J + F) / 2 at every level.

Predictions (``PredictionFolder``): ``<pred>/<seq>/<frame>.png`` label maps (palette or binary,
read with ``read_label_png``), an ``effsam2 track --out <pred>/<seq>`` result (its
``<pred>/<seq>/masks/<frame>.png``), or SA-V style ``<pred>/<seq>/<obj>/<frame>.png`` binary masks. A
prediction file missing for a scored frame is an error naming it (as in both official tools).
Objects absent from a prediction (an id that does not occur, or an object folder that does not
exist) are empty masks; ids in a prediction that are not ground-truth objects are ignored and
reported in ``EvalResults.notes`` (the official DAVIS tool aborts instead).

For a model-driven evaluation, pass ``score_dataset`` any ``predictions(sequence) -> MaskSource``
callable instead of a folder, e.g. one that runs a tracker on the sequence (prompted with
``sequence.gt_masks(first frame)``) and serves its output; a ``MaskSource`` is called as
``source(frame, object_ids)`` and answers a label map or ``{object id: mask}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from effsam2.errors import DatasetError
from effsam2.eval.metrics import boundary_f_measure, region_similarity
from effsam2.eval.results import EvalResults, ObjectScore, SequenceScore
from effsam2.io.datasets import VOSDataset, VOSSequence
from effsam2.io.png_labels import read_label_png

__all__ = ["MaskSource", "PredictionFolder", "score_dataset", "score_sequence"]

# (frame name, ids of the objects scored on it) -> (H, W) integer label map, or
# {object id: (H, W) mask}; objects missing from the answer are empty masks.
MaskSource = Callable[[str, tuple[int, ...]], np.ndarray | Mapping[int, np.ndarray]]

# Mask pairs per metrics call: bounds memory (two (B, H, W) bool stacks plus dilation buffers).
_CHUNK = 32


class _FolderSource:
    """Predictions of one sequence read from ``<pred>/<seq>/``; collects notes for the report."""

    def __init__(self, seq_dir: Path, object_ids: tuple[int, ...]) -> None:
        self.seq_dir = seq_dir
        self.notes: list[str] = []
        obj_dirs = [d for d in sorted(seq_dir.iterdir()) if d.is_dir() and not d.name.startswith(".")]
        self.per_object = bool(obj_dirs)
        self.object_dirs: dict[int, Path] = {}
        for d in obj_dirs:
            if not d.name.isdigit():
                raise DatasetError(
                    f"unexpected folder {d} in the predictions: expected {seq_dir}/<frame>.png (DAVIS), "
                    f"{seq_dir}/masks/<frame>.png (an effsam2 track result) or {seq_dir}/<object id>/<frame>.png "
                    f"(SA-V); found a folder named {d.name!r}")
            if int(d.name) in object_ids:
                self.object_dirs[int(d.name)] = d
            else:
                self.notes.append(f"{d}: not a ground-truth object of this sequence, ignored")
        for oid in object_ids:
            if self.per_object and oid not in self.object_dirs:
                self.notes.append(f"{seq_dir}: no folder for object {oid:03d}, scored as empty")

    def __call__(self, frame: str, object_ids: tuple[int, ...]) -> np.ndarray | dict[int, np.ndarray]:
        if not self.per_object:
            return read_label_png(_existing(self.seq_dir / f"{frame}.png", frame))
        # Only the objects scored on this frame: SA-V objects need no prediction elsewhere.
        return {
            oid: read_label_png(_existing(d / f"{frame}.png", frame)) != 0
            for oid, d in self.object_dirs.items()
            if oid in object_ids
        }


def _existing(path: Path, frame: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"missing prediction for scored frame {frame}: {path}")
    return path


class PredictionFolder:
    """A predictions folder; calling it with a sequence gives that sequence's ``MaskSource``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"predictions folder not found: {self.root}")

    def __call__(self, seq: VOSSequence) -> MaskSource:
        seq_dir = self.root / seq.name
        if not seq_dir.is_dir():
            raise DatasetError(f"no predictions for sequence {seq.name}: {seq_dir} not found")
        if is_track_result(seq_dir):
            seq_dir = seq_dir / "masks"
        return _FolderSource(seq_dir, seq.object_ids)


def is_track_result(folder: Path) -> bool:
    """An ``effsam2 track`` output folder: ``masks/`` of label PNGs and no PNGs of its own."""
    return (folder / "masks").is_dir() and not any(folder.glob("*.png"))


def _frames_to_score(seq: VOSSequence, skip_first_last: bool) -> dict[int, tuple[str, ...]]:
    out = {}
    for oid in seq.object_ids:
        frames = seq.annotated_frames(oid)
        if skip_first_last:
            if len(frames) < 3:
                raise DatasetError(
                    f"sequence {seq.name} object {oid} has {len(frames)} annotated frames; "
                    "at least 3 are needed when the first and last are skipped"
                )
            frames = frames[1:-1]
        out[oid] = tuple(frames)
    return out


def _unknown_ids(labels: np.ndarray, object_ids: tuple[int, ...]) -> list[int]:
    """Non-zero ids in ``labels`` that are not in ``object_ids`` (fast path for DAVIS's 1..K)."""
    top = int(labels.max()) if labels.size else 0
    if top == 0 or set(range(1, top + 1)) <= set(object_ids):
        return []
    return sorted(set(np.unique(labels).tolist()) - set(object_ids) - {0})


def _split_prediction(
    pred: np.ndarray | Mapping[int, np.ndarray],
    wanted: list[int],
    known: tuple[int, ...],
    shape: tuple[int, ...],
    where: str,
    notes: list[str],
) -> dict[int, np.ndarray]:
    """Normalise a MaskSource answer to ``{object id: (H, W) bool}`` for the ``wanted`` objects.

    ``known`` are all ground-truth ids of the sequence: label-map ids outside it are noted.
    """
    if isinstance(pred, Mapping):
        masks = {oid: np.asarray(pred[oid]) != 0 for oid in wanted if oid in pred}
    else:
        if 0 in known:
            raise DatasetError(
                f"{where}: object id 0 (SA-V) cannot be told from background in a label map; "
                "give one binary mask per object (<pred>/<video>/<obj>/<frame>.png)"
            )
        labels = np.asarray(pred)
        extra = _unknown_ids(labels, known)
        if extra:
            notes.append(f"{where}: ids {extra} are not ground-truth objects, ignored")
        masks = {oid: labels == oid for oid in wanted}
    for oid in wanted:
        if oid not in masks:
            masks[oid] = np.zeros(shape, dtype=bool)
        elif masks[oid].shape != shape:
            raise DatasetError(
                f"{where}: prediction size {masks[oid].shape[::-1]} differs from ground truth {shape[::-1]}"
            )
    return masks


def score_sequence(
    seq: VOSSequence,
    predicted: MaskSource,
    *,
    bound_th: float = 0.008,
    skip_first_last: bool = True,
) -> tuple[SequenceScore, list[str]]:
    """Per-object, per-frame J and F of one sequence.

    Args:
        seq: the ground-truth sequence.
        predicted: ``(frame, scored object ids) -> label map or {object id: mask}``
            (see ``MaskSource``); called once per scored frame, in video order.
        bound_th: boundary tolerance for F (see ``boundary_f_measure``).
        skip_first_last: drop each object's first and last annotated frame (the protocol).

    Returns:
        the sequence score and a list of notes (ignored ids, objects scored as empty).
    """
    per_object = _frames_to_score(seq, skip_first_last)
    scored_on = {oid: set(frames) for oid, frames in per_object.items()}
    wanted = set().union(*scored_on.values())
    order = [f for f in seq.frames if f in wanted]
    order += sorted(wanted - set(order))  # annotated frames without an image, if any
    notes: list[str] = []
    noted = False
    values: dict[int, dict[str, tuple[float, float]]] = {oid: {} for oid in per_object}
    pending: list[tuple[int, str, np.ndarray, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        p = np.stack([item[2] for item in pending])
        g = np.stack([item[3] for item in pending])
        j = region_similarity(p, g)
        f = boundary_f_measure(p, g, bound_th)
        for k, (oid, frame, _, _) in enumerate(pending):
            values[oid][frame] = (float(j[k]), float(f[k]))
        pending.clear()

    for frame in order:
        objs = [oid for oid, frames in scored_on.items() if frame in frames]
        gt = seq.gt_masks(frame)
        shape = next(iter(gt.values())).shape
        if pending and pending[-1][3].shape != shape:  # frames of another size: stack separately
            flush()
        frame_notes: list[str] = []
        where = f"{seq.name}/{frame}"
        pred = _split_prediction(
            predicted(frame, tuple(objs)), objs, seq.object_ids, shape, where, frame_notes
        )
        if frame_notes and not noted:  # one note per sequence is enough
            notes.extend(frame_notes)
            noted = True
        for oid in objs:
            pending.append((oid, frame, pred[oid], gt[oid]))
        if len(pending) >= _CHUNK:
            flush()
    flush()

    notes.extend(getattr(predicted, "notes", ()))
    objects = []
    for oid, frames in per_object.items():
        jf = np.array([values[oid][f] for f in frames], dtype=np.float64).reshape(-1, 2)
        objects.append(ObjectScore(object_id=oid, frames=frames, j=jf[:, 0], f=jf[:, 1]))
    return SequenceScore(name=seq.name, objects=tuple(objects)), notes


def score_dataset(
    dataset: VOSDataset,
    predictions: str | Path | Callable[[VOSSequence], MaskSource],
    *,
    sequences: Iterable[str] | None = None,
    split: str | Path | None = None,
    bound_th: float = 0.008,
    skip_first_last: bool = True,
    progress: bool = False,
) -> EvalResults:
    """Score every selected sequence of ``dataset``.

    Args:
        dataset: from ``open_dataset``.
        predictions: a predictions folder, or ``sequence -> MaskSource`` (model-driven mode).
        sequences: names to score (in this order); default: the sequences of ``split``.
        split: split file or name (see ``VOSDataset.sequence_names``); default all folders.
        bound_th, skip_first_last: see ``score_sequence``.
        progress: show a progress bar on stderr.

    Raises:
        DatasetError: unknown sequence, missing/unreadable ground truth or prediction file.
    """
    source = PredictionFolder(predictions) if isinstance(predictions, (str, Path)) else predictions
    names = dataset.sequence_names(split)
    if sequences is not None:
        chosen = list(dict.fromkeys(sequences))
        unknown = [n for n in chosen if n not in names]
        if unknown:
            where = f"split {split}" if split is not None else str(dataset.annotations_dir)
            raise DatasetError(f"unknown sequence(s) {', '.join(unknown)} (not in {where})")
        names = chosen
    if not names:
        raise DatasetError("no sequences selected")
    seq_scores, notes = [], []
    iterator: Iterable[str] = names
    if progress:
        from tqdm import tqdm

        iterator = tqdm(names, desc="eval", unit="seq", disable=None)  # None: off when not a TTY
    for name in iterator:
        seq = dataset.sequence(name)
        score, seq_notes = score_sequence(
            seq, source(seq), bound_th=bound_th, skip_first_last=skip_first_last
        )
        seq_scores.append(score)
        notes.extend(seq_notes)
    return EvalResults(
        dataset=str(dataset.root),
        layout=dataset.layout,
        predictions=str(predictions) if isinstance(predictions, (str, Path)) else None,
        bound_th=bound_th,
        skip_first_last=skip_first_last,
        sequences=tuple(seq_scores),
        notes=tuple(notes),
    )
