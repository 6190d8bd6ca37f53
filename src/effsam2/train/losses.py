"""SAM 2's video training losses: focal and dice on masks (20 : 1), L1 on the IoU prediction, BCE on the
object score. Of a multimask output only the candidate with the lowest mask loss is supervised; the IoU
head is supervised on every candidate; mask losses count only where the object is present.

Where the model predicts the object absent (score <= 0) its masks are the constant "no object" placeholder
(as in SAM 2, training included), which carries no gradient; their mask and IoU terms are left out of the
loss (the gradient is the same as SAM 2's, and the logged loss is not swamped by a constant of ~10^3).

``memory_mask_loss`` is ours, not SAM 2's, and off unless asked for (``effsam2 train --memory-mask-loss``):
it asks the first channel of each frame's encoded memory to read out the mask that was encoded into it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

FOCAL_WEIGHT, DICE_WEIGHT, IOU_WEIGHT, SCORE_WEIGHT = 20.0, 1.0, 1.0, 1.0


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """(B, M, H, W) logits and (B, 1, H, W) targets -> (B, M) mean focal loss per mask."""
    target = target.expand_as(logits)
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(2).mean(-1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, M, H, W) logits, (B, 1, H, W) targets -> (B, M) 1 - soft dice."""
    prob = logits.sigmoid().flatten(2)
    target = target.expand_as(logits).flatten(2)
    inter = (prob * target).sum(-1)
    return 1 - (2 * inter + 1) / (prob.sum(-1) + target.sum(-1) + 1)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, M) IoU of the binarised masks with the target (1 when both are empty)."""
    pred = (logits > 0).flatten(2).float()
    target = target.expand_as(logits).flatten(2)
    inter = (pred * target).sum(-1)
    union = ((pred + target) > 0).float().sum(-1)
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


@dataclass
class FrameLoss:
    total: torch.Tensor  # scalar, averaged over the B objects
    focal: float
    dice: float
    iou: float
    score: float


def frame_loss(multimask_logits: torch.Tensor, iou_pred: torch.Tensor, score_logits: torch.Tensor,
               target: torch.Tensor) -> FrameLoss:
    """Loss of one frame for B objects: (B, M, S, S) logits, (B, M) IoU predictions, (B, 1) object scores,
    (B, 1, S, S) ground truth in {0, 1}."""
    present = (target.flatten(1).sum(-1) > 0).float()  # (B,)
    decoded = present * (score_logits.detach()[:, 0] > 0).float()  # present, and masks not the placeholder
    focal = focal_loss(multimask_logits, target)
    dice = dice_loss(multimask_logits, target)
    combined = FOCAL_WEIGHT * focal + DICE_WEIGHT * dice
    best = combined.argmin(dim=1)
    rows = torch.arange(target.shape[0])
    mask_term = combined[rows, best] * decoded
    actual = mask_iou(multimask_logits.detach(), target)
    iou_term = (iou_pred.float() - actual).abs().mean(-1) * decoded
    score_term = F.binary_cross_entropy_with_logits(score_logits.float()[:, 0], present, reduction="none")
    total = (mask_term + IOU_WEIGHT * iou_term + SCORE_WEIGHT * score_term).mean()
    weight = decoded / decoded.sum().clamp(min=1)  # logged mask terms: over decoded objects only
    return FrameLoss(total, float((focal[rows, best].detach() * weight).sum()),
                     float((dice[rows, best].detach() * weight).sum()),
                     float(iou_term.detach().mean()), float(score_term.detach().mean()))


def memory_mask_loss(memory_features: torch.Tensor, encoded_mask_logits: torch.Tensor) -> torch.Tensor:
    """BCE of memory channel 0 (B, C_mem, h, w) as logits against the encoded mask (B, 1, S, S logits),
    its probabilities area-averaged to h x w and detached: a readout that only a memory carrying the mask
    can satisfy (a model that ignores the mask it encodes cannot)."""
    target = F.adaptive_avg_pool2d(encoded_mask_logits.detach().float().sigmoid(), memory_features.shape[-2:])
    return F.binary_cross_entropy_with_logits(memory_features[:, :1].float(), target)
