"""First-frame adaptation: fine-tune a copy of a model on the prompt frame and its mask before tracking.

OSVOS's idea applied to a SAM 2-style tracker: the one annotated frame becomes synthetic clips (the
object moved along a random affine path over its own frame, then zoom-crop, flip and colour jitter;
``clip_sampler``'s synthetic clips with no occluder, no distractor, no disappearance), and the trained
parts of the model (at its input size, or at ``image_size`` and then loaded back into the model's
size; and, with ``trunk_blocks``, the last blocks of its image trunk or all of them; the
trunk's stem and batch norm statistics stay as they are) take a few AdamW steps of the training loss on them, the first
frame prompted by that mask; with ``average_last`` the result is the mean of the weights after each of the
last steps instead of the last step's, and with ``seeds`` the mean of several such copies adapted with
different seeds. The model handed in is never changed; ``steps == 0`` returns it as it is.

Everything is drawn from generators seeded by (``seed``, step): the same frame, mask and settings give
the same adapted weights.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from PIL import Image

from effsam2.dtypes import autocast
from effsam2.errors import DatasetError, Effsam2Error
from effsam2.io.datasets import VOSSequence
from effsam2.modeling.sam2_model import SAM2Model
from effsam2.train.clip_sampler import MIN_FIRST_FRAME_PIXELS, ClipSettings, sample_clip
from effsam2.train.prompts import PromptSettings
from effsam2.train.vos_data import TrainVideo, read_rgb, resize_mask
from effsam2.train.vos_step import clip_loss, normalise

ADAPT_CLIPS = ClipSettings(synthetic_fraction=1.0, paste_fraction=0.0, occlusion_prob=0.0,
                           leave_frame_prob=0.0, distractor_prob=0.0)
ADAPT_PROMPTS = PromptSettings(mask_prob=1.0, corrected_frames=0)


@dataclass(frozen=True)
class AdaptSettings:
    """How a model is adapted to its prompt; the defaults are the ones chosen on held-out training
    sequences (docs/models.md)."""

    steps: int = 100
    lr: float = 2e-4
    batch_size: int = 2  # clips per step
    clip_frames: int = 4  # frames per clip, the prompt frame first
    grad_clip: float = 1.0
    seed: int = 0
    dtype: str = "bf16"  # autocast during adaptation: bf16 or fp32
    trunk_blocks: int | None = 0  # the last N trunk blocks are adapted too; 0: none (the trunk frozen), None: all
    # the input size adaptation runs at (None: the model's); the adapted weights then track at the model's size
    image_size: int | None = None
    # the adapted weights are the mean of those after each of the last N steps (stochastic weight
    # averaging over the adaptation's own path); 0: the last step's weights
    average_last: int = 0
    # copies adapted with the seeds seed, seed + 1, ...; the result's trained weights are their mean (a
    # soup of adaptations, which evens out how one seed's clips happen to fall); 1: one copy
    seeds: int = 1

    @property
    def total_steps(self) -> int:
        """The steps taken in all: ``steps`` for each seed."""
        return self.steps * self.seeds

    def check(self) -> None:
        """One-line errors for settings that cannot run."""
        if self.steps < 0:
            raise Effsam2Error(f"adaptation steps must be >= 0, got {self.steps}")
        if not self.lr > 0:
            raise Effsam2Error(f"adaptation learning rate must be > 0, got {self.lr}")
        if self.batch_size < 1 or self.clip_frames < 2:
            raise Effsam2Error(f"adaptation needs a batch of >= 1 clip of >= 2 frames, got {self.batch_size} "
                               f"x {self.clip_frames}")
        if self.trunk_blocks is not None and self.trunk_blocks < 0:
            raise Effsam2Error(f"adapted trunk blocks must be >= 0, got {self.trunk_blocks}")
        if self.image_size is not None and self.image_size <= 0:
            raise Effsam2Error(f"adaptation image size must be > 0, got {self.image_size}")
        if self.seeds < 1:
            raise Effsam2Error(f"adaptation needs >= 1 seed, got {self.seeds}")
        if not 0 <= self.average_last <= self.steps:
            raise Effsam2Error(f"adaptation can average the weights of 0 to {self.steps} last steps, "
                               f"got {self.average_last}")
        if self.dtype not in ("bf16", "fp32"):
            raise Effsam2Error(f"adaptation dtype must be bf16 or fp32, got {self.dtype}")


def prompt_video(name: str, image: np.ndarray, mask: np.ndarray, size: int) -> TrainVideo:
    """One (H, W, 3) uint8 frame and its (H, W) bool mask as a one-frame training video at S x S, resized
    as the predictors resize (PIL bicubic for the frame, nearest for the mask)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise Effsam2Error(f"adaptation frame of {name} must be an (H, W, 3) uint8 RGB array, got "
                           f"{image.shape} {image.dtype}")
    frame = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))
    return _one_frame_video(name, frame, image.shape[:2], mask)


def _one_frame_video(name: str, frame: np.ndarray, frame_hw: tuple[int, int], mask: np.ndarray) -> TrainVideo:
    """The (S, S, 3) frame (resized from ``frame_hw``) with its full-size mask, checked and resized."""
    mask = np.asarray(mask).astype(bool)
    if mask.shape != tuple(frame_hw):
        raise Effsam2Error(f"adaptation mask of {name} is {mask.shape[1]}x{mask.shape[0]}, its frame "
                           f"{frame_hw[1]}x{frame_hw[0]}")
    size = frame.shape[0]
    small = resize_mask(mask, size)
    if small.sum() < MIN_FIRST_FRAME_PIXELS:
        raise Effsam2Error(f"adaptation mask of {name} covers {int(small.sum())} pixels at {size}x{size}; "
                           f"it needs at least {MIN_FIRST_FRAME_PIXELS}")
    return TrainVideo(name, frame[None], small[None, None])


@dataclass
class Adapted:
    model: SAM2Model  # the adapted copy in eval mode (the model itself when no step was taken)
    losses: list[float] = field(default_factory=list)  # the training loss of each step


def adapt_to_prompt(model: SAM2Model, videos: list[TrainVideo], s: AdaptSettings,
                    on_step: Callable[[int, float], None] | None = None) -> Adapted:
    """A copy of ``model`` fine-tuned on the prompt frames ``videos`` (one object each, see
    :func:`prompt_video`); ``model`` itself is left as it was. With ``s.seeds`` above 1, that many copies
    are adapted, one seed each, and their trained weights averaged. ``on_step(step, loss)`` is called after
    each step, counted over all the copies up to ``s.total_steps`` (a progress bar)."""
    s.check()
    if s.steps == 0:
        return Adapted(model)
    if not videos:
        raise Effsam2Error("adaptation needs at least one prompted object")
    size = adapt_size(model, s)
    for video in videos:
        if video.frames.shape[1:3] != (size, size):
            raise Effsam2Error(f"adaptation frame of {video.name} is {video.frames.shape[2]}x{video.frames.shape[1]}; "
                               f"adapting at {size} needs {size}x{size} (prompt_video(..., size={size}))")
    losses: list[float] = []
    adapted, params = _adapt_copy(model, videos, s, size, 0, losses, on_step)
    if s.seeds > 1:  # a soup: the trained weights of the copies averaged, into the first
        totals = _zeros_like(params)
        _add_into(totals, params)
        for i in range(1, s.seeds):
            _add_into(totals, _adapt_copy(model, videos, replace(s, seed=s.seed + i), size, i * s.steps,
                                          losses, on_step)[1])
        _set_mean(params, totals, s.seeds)
    if adapted.image_size != model.image_size:  # the adapted weights, tracking at the model's own size
        tracking = copy.deepcopy(model)
        tracking.load_state_dict(adapted.state_dict())
        adapted = tracking
    return Adapted(adapted.eval(), losses)


def _adapt_copy(model: SAM2Model, videos: list[TrainVideo], s: AdaptSettings, size: int, first_step: int,
                losses: list[float], on_step: Callable[[int, float], None] | None
                ) -> tuple[SAM2Model, list[torch.nn.Parameter]]:
    """One copy of ``model`` at ``size`` adapted with ``s.seed`` (its last-steps average with
    ``s.average_last``), and the parameters it trained; each step's loss is appended to ``losses`` and
    reported as step ``first_step + step``."""
    adapted = copy.deepcopy(model) if size == model.image_size else at_image_size(model, size)
    adapted.image_encoder.trunk.requires_grad_(False)
    for block in trunk_tail(adapted, s.trunk_blocks):
        block.requires_grad_(True)
    params = [p for p in adapted.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.0)
    clips = replace(ADAPT_CLIPS, frames=s.clip_frames)
    device = adapted.device
    averaged = _zeros_like(params) if s.average_last else []
    adapted.train()
    with torch.inference_mode(False), torch.enable_grad():
        for step in range(s.steps):
            rng = np.random.default_rng([s.seed, step])
            torch.manual_seed(s.seed * 1_000_003 + step)
            drawn = [sample_clip(rng, videos, clips) for _ in range(s.batch_size)]
            frames = torch.stack([c[0] for c in drawn], 1).to(device)
            masks = torch.stack([c[1] for c in drawn], 1).to(device)
            with autocast(device, s.dtype):
                loss = clip_loss(adapted, rng, normalise(frames), masks, ADAPT_PROMPTS)
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
            optimizer.step()
            losses.append(float(loss.total.detach()))
            if averaged and step >= s.steps - s.average_last:
                _add_into(averaged, params)
            if on_step is not None:
                on_step(first_step + step, losses[-1])
    if averaged:
        _set_mean(params, averaged, s.average_last)
    return adapted, params


def _zeros_like(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    """fp32 running sums, one per parameter."""
    return [torch.zeros_like(p, dtype=torch.float32) for p in params]


def _add_into(totals: list[torch.Tensor], params: list[torch.nn.Parameter]) -> None:
    for total, p in zip(totals, params):
        total.add_(p.detach().float())


def _set_mean(params: list[torch.nn.Parameter], totals: list[torch.Tensor], count: int) -> None:
    """Each parameter becomes its running sum divided by ``count``."""
    with torch.no_grad():
        for p, total in zip(params, totals):
            p.copy_(total / count)


def adapt_size(model: SAM2Model, s: AdaptSettings) -> int:
    """The input size ``model`` is adapted at under ``s``: the settings' or the model's own."""
    return model.image_size if s.image_size is None else s.image_size


def at_image_size(model: SAM2Model, image_size: int) -> SAM2Model:
    """A copy of ``model`` at another input size: the same config, weights, memory attention and device (the
    trained weights do not depend on the size; the position tables are built for it)."""
    from effsam2.build import build_from_config

    resized = build_from_config(model.config.with_image_size(image_size),
                                memory_backend=copy.deepcopy(model.memory_attention.backend))
    resized.load_state_dict(model.state_dict())
    resized.autocast_dtype = model.autocast_dtype
    return resized.to(model.device)


def trunk_tail(model: SAM2Model, n: int | None) -> list[torch.nn.Module]:
    """The last ``n`` blocks of the model's image trunk, all of them for ``None`` (a one-line error past
    the trunk's depth or for a trunk without a block list)."""
    if n == 0:
        return []
    trunk = model.image_encoder.trunk
    blocks = getattr(trunk, "blocks", None)
    if not isinstance(blocks, torch.nn.ModuleList):
        raise Effsam2Error(f"fine-tuning trunk blocks needs a trunk with a list of blocks; "
                           f"{type(trunk).__name__} has none")
    if n is None:
        return list(blocks)
    if n > len(blocks):
        raise Effsam2Error(f"cannot fine-tune the last {n} trunk blocks: the trunk has {len(blocks)}")
    return list(blocks[len(blocks) - n:])


def adapt_to_sequence(model: SAM2Model, seq: VOSSequence, s: AdaptSettings,
                      on_step: Callable[[int, float], None] | None = None) -> SAM2Model:
    """``model`` adapted to a dataset sequence's prompts: each object's first annotated frame and mask
    (what the semi-supervised protocol prompts with); ``on_step`` as in :func:`adapt_to_prompt`."""
    if s.steps == 0:
        return model
    videos = []
    for obj_id in seq.object_ids:
        annotated = seq.annotated_frames(obj_id)
        if not annotated:
            continue
        path = seq.image_path(annotated[0])
        if path is None:
            raise DatasetError(f"sequence {seq.name}: no image for frame {annotated[0]}")
        frame, frame_hw = read_rgb(path, adapt_size(model, s))
        videos.append(_one_frame_video(f"{seq.name} object {obj_id}", frame, frame_hw,
                                       seq.gt_masks(annotated[0])[obj_id]))
    return adapt_to_prompt(model, videos, s, on_step=on_step).model
