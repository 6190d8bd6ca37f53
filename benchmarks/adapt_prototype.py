"""Prototype: OSVOS-style test-time adaptation on the prompt frame; held-out TRAIN seqs only."""
import sys, time, copy, numpy as np, torch
from effsam2 import build_model
from effsam2.eval.datasets import open_dataset
from effsam2.io.frames import open_frames
from effsam2.predictor.video import VideoPredictor
from effsam2.train.vos_data import read_video, TrainVideo
from effsam2.train.clip_sampler import ClipSettings, sample_clip
from effsam2.train.prompts import PromptSettings
from effsam2.train.vos_step import clip_loss, normalise
from effsam2.dtypes import autocast

steps = int(sys.argv[1]); lr = float(sys.argv[2]); batch = int(sys.argv[3]); T = int(sys.argv[4])
twin = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
seqs = sys.argv[6].split(",") if len(sys.argv) > 6 else ["dance-jump", "kite-walk", "motorbike"]
base = build_model()
S = base.image_size
ds = open_dataset("/work/shared/data/davis2016-train")

def adapt(model, video):
    model = copy.deepcopy(model)
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    cs = ClipSettings(frames=T, synthetic_fraction=1.0, paste_fraction=0.0, occlusion_prob=0.0,
                      leave_frame_prob=0.0, distractor_prob=twin, twin_prob=1.0)
    ps = PromptSettings(mask_prob=1.0, corrected_frames=0)
    model.train()
    losses = []
    for step in range(steps):
        rng = np.random.default_rng([7, step])
        clips = [sample_clip(rng, [video], cs) for _ in range(batch)]
        frames = torch.stack([c[0] for c in clips], 1); masks = torch.stack([c[1] for c in clips], 1)
        with autocast("cpu", "bf16"):
            loss = clip_loss(model, rng, normalise(frames), masks, ps)
        opt.zero_grad(); loss.total.backward(); torch.nn.utils.clip_grad_norm_(params, 1.0); opt.step()
        losses.append((float(loss.total), loss.mean_iou))
    model.eval()
    return model, losses

def j(a, b):
    u = (a | b).sum(); return 1.0 if u == 0 else (a & b).sum() / u

res = []
for name in seqs:
    seq = ds.sequence(name)
    t0 = time.time()
    if steps > 0:
        v = read_video(ds, name, S)
        video = TrainVideo(name, v.frames[:1], v.masks[:1, :1])
        model, losses = adapt(base, video)
        print(name, "adapt %.1fs" % (time.time() - t0), "loss first/last", losses[0], losses[-1], flush=True)
    else:
        model = base
    with torch.inference_mode():
        pred = VideoPredictor(model)
        frames = open_frames([seq.image_path(f) for f in seq.frames])
        st = pred.init_state(frames)
        pred.add_new_mask(st, 0, 1, seq.gt_masks(seq.frames[0])[1])
        js = []
        for f, _, lg in pred.propagate_in_video(st):
            if 0 < f < len(seq.frames) - 1:
                js.append(j((lg[0, 0] > 0).cpu().numpy(), seq.gt_masks(seq.frames[f])[1]))
        frames.close()
    res.append(np.mean(js))
    print(name, "J %.3f" % res[-1], "total %.1fs" % (time.time() - t0), flush=True)
print("MEAN J %.3f" % np.mean(res), sys.argv[1:])
