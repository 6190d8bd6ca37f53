"""Helpers shared by the held-out adaptation scripts (adapt_variants.py, pseudo_label_adapt.py): one object
of a DAVIS-2016 sequence tracked from its first-frame mask, and masks written for ``effsam2 eval --predictions``."""
from pathlib import Path

import numpy as np
import torch

import effsam2
from effsam2.io.frames import open_frames
from effsam2.io.masks import save_label_png


def single_object(seq):
    """(object id, its first-frame mask, the frames) of a one-object sequence."""
    obj = seq.object_ids[0]
    return obj, seq.gt_masks(seq.frames[0])[obj], open_frames([seq.image_path(f) for f in seq.frames])


def track_logits(model, frames, gt0):
    """Logits (T, H, W) of ``model`` tracking ``frames`` from the first-frame mask ``gt0``."""
    with torch.inference_mode():
        pred = effsam2.VideoPredictor(model)
        state = pred.init_state(frames)
        pred.add_new_mask(state, 0, 1, gt0)
        return torch.stack([lg[0, 0] for _, _, lg in pred.propagate_in_video(state)])


def save_masks(masks, folder: Path, seq, obj):
    """(T, H, W) bool masks as ``folder/<sequence>/<frame>.png`` label maps of object ``obj``."""
    folder = folder / seq.name
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(seq.frames):
        save_label_png(folder / f"{f}.png", np.asarray(masks[i]).astype(np.uint8) * obj)
