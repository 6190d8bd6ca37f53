"""Prototype (issue 14, not in the package): OSVOS-style adaptation of the default model on the prompt frame.

Each sequence's frame 0 and its ground-truth mask become synthetic clips (``effsam2.train``'s sampler, no
other video), the trained parts are fine-tuned on them with ``clip_loss`` for ``STEPS`` steps, then the
sequence is tracked from that mask and its mean J (frames 1 .. N-2) printed. Run it on held-out *training*
sequences only; ``STEPS`` 0 is the shipped model.

    python benchmarks/adapt_prototype.py STEPS LR BATCH FRAMES [DATASET] [SEQ,SEQ,...]
"""

import copy
import sys
import time

import numpy as np
import torch

from effsam2 import build_model
from effsam2.dtypes import autocast
from effsam2.eval.datasets import open_dataset
from effsam2.eval.metrics import region_similarity
from effsam2.io.frames import open_frames
from effsam2.predictor.video import VideoPredictor
from effsam2.train.clip_sampler import ClipSettings, sample_clip
from effsam2.train.prompts import PromptSettings
from effsam2.train.vos_data import TrainVideo, read_video
from effsam2.train.vos_step import clip_loss, normalise

HELD_OUT = "dance-jump,kite-walk,motorbike"


def adapt(model, video: TrainVideo, steps: int, lr: float, batch: int, frames: int):
    """A fine-tuned copy of ``model`` (the original is untouched) and its (loss, IoU) per step."""
    model = copy.deepcopy(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    clips = ClipSettings(frames=frames, synthetic_fraction=1.0, paste_fraction=0.0, occlusion_prob=0.0,
                         leave_frame_prob=0.0, distractor_prob=0.0)
    prompts = PromptSettings(mask_prob=1.0, corrected_frames=0)
    model.train()
    history = []
    for step in range(steps):
        rng = np.random.default_rng([7, step])
        drawn = [sample_clip(rng, [video], clips) for _ in range(batch)]
        x = torch.stack([c[0] for c in drawn], 1)
        y = torch.stack([c[1] for c in drawn], 1)
        with autocast("cpu", "bf16"):
            loss = clip_loss(model, rng, normalise(x), y, prompts)
        opt.zero_grad()
        loss.total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        history.append((float(loss.total.detach()), loss.mean_iou))
    return model.eval(), history


@torch.inference_mode()
def sequence_j(model, seq) -> float:
    predictor = VideoPredictor(model)
    frames = open_frames([seq.image_path(f) for f in seq.frames])
    try:
        state = predictor.init_state(frames)
        predictor.add_new_mask(state, 0, 1, seq.gt_masks(seq.frames[0])[1])
        scores = [region_similarity(logits[0, 0] > 0, seq.gt_masks(seq.frames[f])[1])
                  for f, _, logits in predictor.propagate_in_video(state) if 0 < f < len(seq.frames) - 1]
    finally:
        frames.close()
    return float(np.mean(scores))


def main(argv: list[str]) -> None:
    steps, lr, batch, frames = int(argv[0]), float(argv[1]), int(argv[2]), int(argv[3])
    dataset = open_dataset(argv[4] if len(argv) > 4 else "../shared/data/davis2016-train")
    names = (argv[5] if len(argv) > 5 else HELD_OUT).split(",")
    base = build_model()
    results = []
    for name in names:
        start = time.time()
        model = base
        if steps > 0:
            video = read_video(dataset, name, base.image_size)
            model, history = adapt(base, TrainVideo(name, video.frames[:1], video.masks[:1, :1]),
                                   steps, lr, batch, frames)
            print(f"{name}: adapted in {time.time() - start:.1f} s, loss {history[0][0]:.3f} -> {history[-1][0]:.3f}")
        results.append(sequence_j(model, dataset.sequence(name)))
        print(f"{name}: J {results[-1]:.3f} ({time.time() - start:.1f} s)", flush=True)
    print(f"mean J {np.mean(results):.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
