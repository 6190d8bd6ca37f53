"""Tracking image size after first-frame adaptation (benchmarks/eval_heldout_size_variants.md).

Adapts the default model once per sequence at its own size (as ``effsam2 eval --adapt-steps 100`` does), loads
the adapted weights into the model built at each image size, tracks from the first-frame mask and writes PNG
predictions per size (OUT/s<size>/) and for logit means of sizes, for ``effsam2 eval --predictions``.
Single-object sequences (DAVIS-2016).

    python benchmarks/size_variants.py ../shared/data/davis2016-train dance-jump,kite-walk,motorbike OUT 384,448,512
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
from effsam2.train.adapt import AdaptSettings, adapt_to_sequence

data, names, out = sys.argv[1], sys.argv[2].split(","), Path(sys.argv[3])
sizes = [int(s) for s in sys.argv[4].split(",")]
steps = int(sys.argv[5]) if len(sys.argv) > 5 else 100
dataset = open_dataset(data)
base = effsam2.build_model()
settings = AdaptSettings(steps=steps, dtype=resolve_dtype("auto", base.device))
models = {s: effsam2.build_model(image_size=s) for s in sizes}

for name in names:
    seq = dataset.sequence(name)
    adapted = adapt_to_sequence(base, seq, settings) if steps else base
    frames = open_frames([seq.image_path(f) for f in seq.frames])
    obj = seq.object_ids[0]
    gt0 = seq.gt_masks(seq.frames[0])[obj]
    logits = {}
    with torch.inference_mode():
        for s, m in models.items():
            m.load_state_dict(adapted.state_dict(), strict=True)
            pred = effsam2.VideoPredictor(m)
            state = pred.init_state(frames)
            pred.add_new_mask(state, 0, 1, gt0)
            logits[s] = torch.stack([lg[0, 0] for _, _, lg in pred.propagate_in_video(state)])
    variants = {f"s{s}": v > 0 for s, v in logits.items()}
    if len(sizes) > 1:
        variants["mean"] = sum(logits.values()) > 0
        if 384 in logits:
            for s in sizes:
                if s != 384:
                    variants[f"mean384_{s}"] = (logits[384] + logits[s]) > 0
    for variant, masks in variants.items():
        folder = out / variant / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(seq.frames):
            save_label_png(folder / f"{f}.png", masks[i].numpy().astype(np.uint8) * obj)
    print(f"{name} done", flush=True)
