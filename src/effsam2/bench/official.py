"""The ``--against-official`` row: the official SAM 2 code, same config and weights, timed the same way.

Needs the reference package (``import sam2``, the [oracle] extra). Our state dict is copied into the
official model (strict), so both compute the same thing; the row's ``mask_iou_vs_dense`` shows it.
Nothing of the official code is patched: :class:`OfficialTracker` wraps the two calls a session makes,
``forward_image`` (+ ``_prepare_backbone_features``) and ``track_step``, and this loop times around them.
The official ``track_step`` is one call, so its row has the ``image_encoder``, ``track_step`` and ``frame``
columns; memory attention, decoder and memory encoder are not separated (left None).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

from effsam2.bench.session import PassResult, PassSteps, drop_unreadable, readable_horizon
from effsam2.bench.timer import TRACK_STEP, FrameTimer
from effsam2.configs import ModelConfig
from effsam2.errors import Effsam2Error
from effsam2.modeling.sam2_model import PointPrompt
from effsam2.timing import IMAGE_ENCODER

# Official Hydra config files of the models the reference package knows (there is no EfficientTAM one).
# The fields of a step output that the official video predictor keeps per frame (its "compact" output).
KEPT_OUTPUTS = ("maskmem_features", "maskmem_pos_enc", "pred_masks", "obj_ptr", "object_score_logits")

OFFICIAL_CONFIGS = {
    f"{family}_hiera_{size}": f"configs/{family}/{family}_hiera_{size}.yaml"
    for family in ("sam2", "sam2.1") for size in ("t", "s", "b+", "l")
}


def official_available() -> str | None:
    """None when the reference package imports, else why not (one line)."""
    try:
        import sam2.build_sam  # noqa: F401
    except ImportError as err:
        return f"the official sam2 package is not installed ({err}); see the README's [oracle] set-up"
    return None


def _size_overrides(image_size: int) -> list[str]:
    side = image_size // 16  # RoPE tables of the official memory attention follow the feature grid
    return [f"++model.image_size={image_size}",
            f"++model.memory_attention.layer.self_attention.feat_sizes=[{side},{side}]",
            f"++model.memory_attention.layer.cross_attention.feat_sizes=[{side},{side}]"]


class OfficialTracker:
    """The official model behind the two calls a video session makes per frame and per object."""

    def __init__(self, config: ModelConfig, state: dict[str, torch.Tensor], device: torch.device) -> None:
        if config.name not in OFFICIAL_CONFIGS:
            raise Effsam2Error(f"no official reference for {config.name} (only SAM 2 / 2.1 Hiera models)")
        why = official_available()
        if why:
            raise Effsam2Error(why)
        from sam2.build_sam import build_sam2_video_predictor

        self.model = build_sam2_video_predictor(OFFICIAL_CONFIGS[config.name], None, device=str(device),
                                                hydra_overrides_extra=_size_overrides(config.image_size))
        self.model.load_state_dict(state, strict=True)
        self.model.eval()
        self.tracker_config = config.tracker

    def encode(self, image: torch.Tensor) -> tuple[list, list, list]:
        """(1, 3, S, S) -> the official (vision_feats, vision_pos, feat_sizes) lists."""
        _, feats, pos, sizes = self.model._prepare_backbone_features(self.model.forward_image(image))
        return feats, pos, sizes

    def step(self, frame_idx: int, encoded: tuple[list, list, list], prompt: PointPrompt | None,
             output_dict: dict, num_frames: int) -> dict:
        feats, pos, sizes = encoded
        points = None if prompt is None else {"point_coords": prompt.coords, "point_labels": prompt.labels}
        out = self.model.track_step(frame_idx=frame_idx, is_init_cond_frame=prompt is not None,
                                    current_vision_feats=feats, current_vision_pos_embeds=pos,
                                    feat_sizes=sizes, point_inputs=points, mask_inputs=None,
                                    output_dict=output_dict, num_frames=num_frames)
        # what the official video predictor keeps of a step (its compact output), memory features in bf16
        kept = {key: out[key] for key in KEPT_OUTPUTS}
        kept["maskmem_features"] = kept["maskmem_features"].to(torch.bfloat16)
        return kept


def iter_official_pass(tracker: OfficialTracker, images: Sequence[torch.Tensor],
                       prompts: Sequence[PointPrompt], timer: FrameTimer,
                       context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                       ) -> PassSteps:
    """The same loop as :func:`effsam2.bench.session.iter_pass`, through the official code."""
    num_frames = len(images)
    horizon = readable_horizon(tracker.tracker_config)
    banks = [{"cond_frame_outputs": {}, "non_cond_frame_outputs": {}} for _ in prompts]
    masks, scores = [], []
    for t, image in enumerate(images):
        prompted = t == 0
        outs = []
        with timer.frame(), context():
            with timer.section(IMAGE_ENCODER):
                encoded = tracker.encode(image)
            for bank, prompt in zip(banks, prompts):
                with timer.section(TRACK_STEP):
                    out = tracker.step(t, encoded, prompt if prompted else None, bank, num_frames)
                kind = "cond_frame_outputs" if prompted else "non_cond_frame_outputs"
                bank[kind][t] = out
                drop_unreadable(bank["non_cond_frame_outputs"], t, horizon)
                outs.append(out)
        masks.append(torch.cat([o["pred_masks"][:, 0] > 0 for o in outs]).cpu())
        scores.append(torch.cat([o["object_score_logits"][:, 0] for o in outs]).float().cpu())
        yield
    return PassResult(timer.frames, torch.stack(masks), torch.stack(scores))
