"""Two-pass adaptation with pseudo-labels (OnAVOS's idea, offline): benchmarks/eval_heldout_pseudo_labels.md.

Per sequence: the default model is adapted to the first-frame mask (as ``effsam2 eval --adapt-steps 100``)
and tracks the video (OUT/pass1/); K frames spread evenly over the video then take that tracking's masks
as labels, and the adapted weights take STEPS2 more steps at LR2 on clips from frame 0 (half of the clips)
and from those K frames (the other half); the result tracks the video again (OUT/pass2/). A pseudo frame
whose mask is too small to train on is skipped. Single-object sequences (DAVIS-2016); score each folder
with ``effsam2 eval --predictions``.

    python benchmarks/pseudo_label_adapt.py ../shared/data/davis2016-train dance-jump,kite-walk,motorbike OUT
"""
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from first_frame_tracking import save_masks, single_object, track_logits

import effsam2
from effsam2.dtypes import resolve_dtype
from effsam2.errors import Effsam2Error
from effsam2.io.datasets import open_dataset
from effsam2.train.adapt import AdaptSettings, adapt_to_prompt, adapt_to_sequence, prompt_video

data, names, out = sys.argv[1], sys.argv[2].split(","), Path(sys.argv[3])
pseudo_count = int(sys.argv[4]) if len(sys.argv) > 4 else 4
steps2 = int(sys.argv[5]) if len(sys.argv) > 5 else 50
lr2 = float(sys.argv[6]) if len(sys.argv) > 6 else 1e-4
dataset = open_dataset(data)
base = effsam2.build_model()
first = AdaptSettings(dtype=resolve_dtype("auto", base.device))
second = replace(first, steps=steps2, lr=lr2, seed=1)


for name in names:
    start = time.time()
    seq = dataset.sequence(name)
    obj, gt0, frames = single_object(seq)
    adapted = adapt_to_sequence(base, seq, first)
    masks = (track_logits(adapted, frames, gt0) > 0).numpy()
    save_masks(masks, out / "pass1", seq, obj)
    n = len(seq.frames)
    picks = sorted({round(i * (n - 1) / pseudo_count) for i in range(1, pseudo_count + 1)})
    pseudo = []
    for i in picks:
        try:
            pseudo.append(prompt_video(f"{name} frame {i}", np.asarray(frames.get(i)), masks[i], base.image_size))
        except Effsam2Error as e:  # too small a mask to train on
            print(f"{name}: pseudo frame {i} skipped ({e})", flush=True)
    truth = prompt_video(f"{name} frame 0", np.asarray(frames.get(0)), gt0, base.image_size)
    videos = [truth] * max(1, len(pseudo)) + pseudo
    readapted = adapt_to_prompt(adapted, videos, second).model
    save_masks((track_logits(readapted, frames, gt0) > 0).numpy(), out / "pass2", seq, obj)
    print(f"{name} done: pseudo frames {picks}, {len(pseudo)} used, {time.time() - start:.0f} s", flush=True)
