"""Ways to combine the two views of mirror test-time augmentation (benchmarks/eval_heldout_mirror_variants.md).

Adapts the default model once per sequence (as ``effsam2 eval --adapt-steps 100`` does), tracks the video and
its mirror image with two plain ``VideoPredictor`` sessions, and writes PNG predictions of each combination
into OUT/<combination>/<sequence>/ for ``effsam2 eval --predictions``. Single-object sequences (DAVIS-2016).

    python benchmarks/mirror_variants.py ../shared/data/davis2016-train dance-jump,kite-walk,motorbike OUT [STEPS]
"""
import sys
from pathlib import Path

import numpy as np
import torch

import effsam2
from effsam2.dtypes import resolve_dtype
from effsam2.io.datasets import open_dataset
from effsam2.io.frames import open_frames
from effsam2.io.masks import save_label_png
from effsam2.predictor.mirror import MirroredFrames
from effsam2.train.adapt import AdaptSettings, adapt_to_sequence

data, names, out = sys.argv[1], sys.argv[2].split(","), Path(sys.argv[3])
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 100
dataset = open_dataset(data)
base = effsam2.build_model()
settings = AdaptSettings(steps=steps, dtype=resolve_dtype("auto", base.device))


def track(predictor, frames, mask):
    state = predictor.init_state(frames)
    predictor.add_new_mask(state, 0, 1, mask)
    return torch.stack([lg[0, 0] for _, _, lg in predictor.propagate_in_video(state)])


VARIANTS = {
    "plain": lambda o, m: o > 0,
    "mirror_only": lambda o, m: m > 0,
    "logit_mean": lambda o, m: (o + m) > 0,
    "prob_mean": lambda o, m: (torch.sigmoid(o) + torch.sigmoid(m)) > 1,
    "union": lambda o, m: (o > 0) | (m > 0),
    "intersection": lambda o, m: (o > 0) & (m > 0),
}
for name in names:
    seq = dataset.sequence(name)
    model = adapt_to_sequence(base, seq, settings) if steps else base
    paths = [seq.image_path(f) for f in seq.frames]
    frames = open_frames(paths)
    obj = seq.object_ids[0]
    gt0 = seq.gt_masks(seq.frames[0])[obj]
    with torch.inference_mode():
        pred = effsam2.VideoPredictor(model)
        o = track(pred, frames, gt0)
        m = track(pred, MirroredFrames(frames), np.ascontiguousarray(gt0[:, ::-1])).flip(-1)
    for variant, combine in VARIANTS.items():
        folder = out / variant / name
        folder.mkdir(parents=True, exist_ok=True)
        masks = combine(o, m).numpy()
        for i, f in enumerate(seq.frames):
            save_label_png(folder / f"{f}.png", masks[i].astype(np.uint8) * obj)
    print(f"{name} done", flush=True)
