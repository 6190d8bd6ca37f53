"""The semi-supervised protocol run by effsam2 itself: prompt each object with its first ground-truth mask,
propagate, and write one palette PNG per frame (``<out>/<sequence>/<frame>.png``) for the scorer.

``prepare`` (optional) turns the model into the one that tracks a given sequence, e.g. a copy adapted to
its first-frame masks (``effsam2 eval --adapt-steps``, built by the command from ``effsam2.train.adapt``);
the model handed in is shared by every sequence and never changed.

Objects appearing later (SA-V) are prompted on their own first annotated frame, as the official SAM 2
``vos_inference`` does with ``--track_object_appearing_later_in_video``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from effsam2.errors import DatasetError
from effsam2.eval.prompts import add_first_prompt
from effsam2.io.datasets import VOSDataset, VOSSequence
from effsam2.io.frames import open_frames
from effsam2.io.masks import labels_from_masks, save_label_png
from effsam2.modeling.sam2_model import SAM2Model
from effsam2.predictor.mirror import MirrorAveragingPredictor, with_tta
from effsam2.predictor.video import VideoPredictor

PrepareModel = Callable[[SAM2Model, VOSSequence], SAM2Model]


def _frame_paths(seq: VOSSequence) -> list[Path]:
    paths = [seq.image_path(frame) for frame in seq.frames]
    missing = [frame for frame, path in zip(seq.frames, paths) if path is None]
    if missing:
        raise DatasetError(f"sequence {seq.name}: no image for frame {missing[0]} (the dataset needs its JPEGImages)")
    return paths


@torch.inference_mode()
def predict_sequence(predictor: VideoPredictor | MirrorAveragingPredictor, seq: VOSSequence, out_dir: Path, prompt: str = "mask") -> int:
    """Track every object of ``seq`` from its first annotated mask (or that mask's box or deepest point,
    ``prompt``); returns the number of PNGs written."""
    frames = open_frames(_frame_paths(seq))
    try:
        state = predictor.init_state(frames)
        index = {name: i for i, name in enumerate(seq.frames)}
        gt_by_frame: dict[str, dict] = {}  # each first frame's ground truth is read once, not once per object
        for obj_id in seq.object_ids:
            annotated = seq.annotated_frames(obj_id)
            if not annotated:
                continue
            first = annotated[0]
            if first not in gt_by_frame:
                gt_by_frame[first] = seq.gt_masks(first)
            add_first_prompt(predictor, state, index[first], obj_id, gt_by_frame[first][obj_id], prompt)
        if not state.objects:
            raise DatasetError(f"sequence {seq.name} has no annotated object to prompt")
        seq_dir = out_dir / seq.name
        seq_dir.mkdir(parents=True, exist_ok=True)
        written = 0
        for frame_idx, obj_ids, logits in predictor.propagate_in_video(state):
            masks = (logits[:, 0] > 0).cpu().numpy()
            labels = labels_from_masks({o: masks[i] for i, o in enumerate(obj_ids)}, scores={
                o: logits[i, 0].cpu().numpy() for i, o in enumerate(obj_ids)})
            save_label_png(seq_dir / f"{seq.frames[frame_idx]}.png", labels)
            written += 1
        return written
    finally:
        frames.close()


def predict_dataset(model: SAM2Model, dataset: VOSDataset, names: list[str], out_dir: Path,
                    progress: bool = True, prompt: str = "mask", prepare: PrepareModel | None = None,
                    tta: str = "none") -> Path:
    """Run the tracker on every named sequence (with ``prepare(model, sequence)`` when given, and the
    test-time augmentation ``tta``, see ``predictor.mirror``); returns the predictions folder."""
    predictor = with_tta(VideoPredictor(model), tta)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in tqdm(names, desc="sequences", unit="seq", disable=not progress, file=sys.stderr):
        seq = dataset.sequence(name)
        if prepare is not None:
            predictor = with_tta(VideoPredictor(prepare(model, seq)), tta)
        predict_sequence(predictor, seq, out_dir, prompt)
    return out_dir
