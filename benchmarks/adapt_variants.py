"""Variance reduction for first-frame adaptation (benchmarks/eval_heldout_adapt_variants.md).

Per sequence the default model is adapted to the first-frame mask as ``effsam2 eval --adapt-steps 100`` does
(seed 0), again with another seed (seed 1), and once more with seed 0 averaging the weights of its last
AVG steps (``AdaptSettings.average_last``); each tracks the video. From these come, with no further
adaptation: the two seeds' weights averaged (a soup of two adaptations), the two seeds' logits averaged
(an ensemble), and the seed-0 weights interpolated towards the unadapted ones (WiSE-FT: base + a (adapted -
base)). PNG predictions go to OUT/<variant>/<sequence>/ for ``effsam2 eval --predictions``. Single-object
sequences (DAVIS-2016).

    python benchmarks/adapt_variants.py ../shared/data/davis2016-train dance-jump,kite-walk,motorbike OUT [AVG [soup [SEED]]]

With ``soup``, only the two seeds and their weight soup are computed; SEED (default 0) is then the first of
the two seeds (seeds SEED and SEED + 1; the folders keep the names seed0 and seed1).
"""
import copy
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from first_frame_tracking import save_masks, single_object, track_logits

import effsam2
from effsam2.dtypes import resolve_dtype
from effsam2.io.datasets import open_dataset
from effsam2.train.adapt import AdaptSettings, adapt_to_sequence

data, names, out = sys.argv[1], sys.argv[2].split(","), Path(sys.argv[3])
average = int(sys.argv[4]) if len(sys.argv) > 4 else 50
soup_only = len(sys.argv) > 5 and sys.argv[5] == "soup"
first_seed = int(sys.argv[6]) if len(sys.argv) > 6 else 0
dataset = open_dataset(data)
base = effsam2.build_model()
seed0 = AdaptSettings(dtype=resolve_dtype("auto", base.device), seed=first_seed)
seed1 = replace(seed0, seed=first_seed + 1)
swa = replace(seed0, average_last=average)


def mixed(a, b, weight_b):
    """A copy of model ``a`` whose floating-point weights are (1 - weight_b) a + weight_b b."""
    sa, sb = a.state_dict(), b.state_dict()
    model = copy.deepcopy(a)
    model.load_state_dict({k: torch.lerp(v, sb[k], weight_b) if v.is_floating_point() else v
                           for k, v in sa.items()})
    return model


def save(logits, variant, seq, obj):
    save_masks((logits > 0).numpy(), out / variant, seq, obj)


for name in names:
    start = time.time()
    seq = dataset.sequence(name)
    obj, gt0, frames = single_object(seq)
    a0 = adapt_to_sequence(base, seq, seed0)
    a1 = adapt_to_sequence(base, seq, seed1)
    logits0, logits1 = track_logits(a0, frames, gt0), track_logits(a1, frames, gt0)
    save(logits0, "seed0", seq, obj)
    save(logits1, "seed1", seq, obj)
    save(track_logits(mixed(a0, a1, 0.5), frames, gt0), "weight_soup", seq, obj)
    if soup_only:
        print(f"{name} done, {time.time() - start:.0f} s", flush=True)
        continue
    save(logits0 + logits1, "logit_ensemble", seq, obj)
    for a in (0.5, 0.75):
        save(track_logits(mixed(base, a0, a), frames, gt0), f"wise_{a:g}", seq, obj)
    save(track_logits(adapt_to_sequence(base, seq, swa), frames, gt0), f"average_last_{average}", seq, obj)
    print(f"{name} done, {time.time() - start:.0f} s", flush=True)
