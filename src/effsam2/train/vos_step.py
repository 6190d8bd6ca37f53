"""One training forward pass: track a batch of clips with the model's own tracking step and sum the losses.

The clip is run exactly as inference runs it (``effsam2.modeling.tracker.track_step``, the model's memory
backend, training-mode memory selection): frame 0 is prompted, every later frame is conditioned on the
memory of the frames before it; on ``corrected_frames`` random frames a corrective click from the error
region is added and the frame becomes a conditioning frame, as in SAM 2's training. Gradients flow through
the memory into earlier frames. B clips are tracked together as B objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from effsam2.modeling.sam2_model import FrameFeatures, SAM2Model
from effsam2.modeling.tracker import ObjectMemory, track_step
from effsam2.preprocess import IMAGENET_MEAN, IMAGENET_STD
from effsam2.train.losses import FrameLoss, frame_loss, memory_mask_loss
from effsam2.train.prompts import PromptSettings, corrective_click, first_frame_prompt


@dataclass
class ClipLoss:
    total: torch.Tensor  # scalar: mean over supervised frames
    terms: dict[str, float]  # focal, dice, iou, score: means over supervised frames
    mean_iou: float  # IoU of the final masks over tracked frames (a training-progress signal)


def normalise(frames: torch.Tensor) -> torch.Tensor:
    """(..., 3, S, S) in [0, 1] -> ImageNet-normalised model input."""
    mean = frames.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = frames.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return (frames - mean) / std


def encode_clip(model: SAM2Model, frames: torch.Tensor) -> list[FrameFeatures]:
    """(T, B, 3, S, S) normalised frames -> per-frame :class:`FrameFeatures` for the B clips, one batch."""
    t, b = frames.shape[:2]
    feats = model.encode_image(frames.flatten(0, 1))

    def frame(tensor: torch.Tensor, i: int) -> torch.Tensor:
        return tensor[i * b:(i + 1) * b]

    return [FrameFeatures(frame(feats.vision_feats, i), frame(feats.vision_pos, i),
                          None if feats.high_res is None else [frame(h, i) for h in feats.high_res])
            for i in range(t)]


def _accumulate(terms: dict[str, float], loss: FrameLoss) -> None:
    for name in ("focal", "dice", "iou", "score"):
        terms[name] = terms.get(name, 0.0) + getattr(loss, name)


def clip_loss(model: SAM2Model, rng: np.random.Generator, frames: torch.Tensor, masks: torch.Tensor,
              prompts: PromptSettings, memory_mask_weight: float = 0.0) -> ClipLoss:
    """Loss of B clips: frames (T, B, 3, S, S) normalised, masks (T, B, 1, S, S) in {0, 1}.

    ``memory_mask_weight`` > 0 adds that weight times :func:`memory_mask_loss`, averaged over the frames
    whose memory was encoded (frame 0 included), to the total and logs it as the ``memory`` term."""
    t = frames.shape[0]
    feats = encode_clip(model, frames)
    memory = ObjectMemory()
    kind, points = first_frame_prompt(rng, masks[0], prompts)
    num_corrected = min(prompts.corrected_frames, t - 1)
    corrected = set(rng.choice(np.arange(1, t), size=num_corrected, replace=False).tolist()) if num_corrected else set()
    losses: list[torch.Tensor] = []
    terms: dict[str, float] = {}
    ious: list[float] = []
    readouts: list[torch.Tensor] = []

    def read_out(out) -> None:
        if memory_mask_weight > 0 and out.entry.maskmem_features is not None:
            readouts.append(memory_mask_loss(out.entry.maskmem_features, out.high_res_masks))

    for i in range(t):
        target = masks[i]
        if i == 0:
            out = track_step(model, 0, feats[0], memory, is_init_cond_frame=True, points=points,
                             mask_inputs=target if kind == "mask" else None, num_frames=t,
                             memory_dtype=torch.float32)
            memory.cond[0] = out.entry
            read_out(out)
            if kind == "mask":  # the output is the prompt itself: nothing to learn on this frame's masks
                continue
        else:
            out = track_step(model, i, feats[i], memory, is_init_cond_frame=False, num_frames=t,
                             run_mem_encoder=i not in corrected, memory_dtype=torch.float32)
            if i in corrected:
                loss = frame_loss(out.heads.high_res_multimasks, out.heads.ious, out.heads.object_score_logits,
                                  target)
                losses.append(loss.total)
                _accumulate(terms, loss)
                click = corrective_click(rng, out.high_res_masks, target)
                out = track_step(model, i, feats[i], memory, is_init_cond_frame=False, points=click,
                                 num_frames=t, prev_sam_mask_logits=out.heads.low_res_masks,
                                 memory_dtype=torch.float32)
                memory.cond[i] = out.entry
            else:
                memory.non_cond[i] = out.entry
            read_out(out)
        loss = frame_loss(out.heads.high_res_multimasks, out.heads.ious, out.heads.object_score_logits, target)
        losses.append(loss.total)
        _accumulate(terms, loss)
        pred = out.high_res_masks.detach() > 0
        gt = target > 0.5
        union = (pred | gt).flatten(1).sum(-1).float()
        inter = (pred & gt).flatten(1).sum(-1).float()
        ious.append(float(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter)).mean()))
    n = len(losses)
    total = torch.stack(losses).mean()
    terms = {k: v / n for k, v in terms.items()}
    if readouts:
        readout = torch.stack(readouts).mean()
        total = total + memory_mask_weight * readout
        terms["memory"] = float(readout.detach())
    return ClipLoss(total, terms, float(np.mean(ious)) if ious else float("nan"))
