"""Parity of our SAM 2 / 2.1 core with the official sam2==1.1.0 code (random, non-degenerate weights).

Each test feeds the same real frames (from ../shared/data/videos) through the reference implementation's
own functions and through ours, and compares the outputs after checking they are not degenerate.
"""

from __future__ import annotations

import pytest
import torch

from effsam2.modeling.sam2_model import PointPrompt
from effsam2.modeling.tracker import ObjectMemory, track_step
from tests.helpers.frames import decode_frames, to_model_input
from tests.helpers.oracle import CONFIG_FILES, build_reference, reference_and_ours, require_oracle

pytestmark = pytest.mark.oracle

OFFICIAL_TENSOR_COUNTS = {"sam2.1_hiera_t": 471, "sam2.1_hiera_s": 519, "sam2.1_hiera_b+": 615}


def assert_not_degenerate(t: torch.Tensor, what: str, min_std: float = 1e-2) -> None:
    assert torch.isfinite(t).all(), f"{what} has non-finite values"
    assert t.float().std() > min_std, f"{what} is (nearly) constant: std {t.float().std():.3g}"


def assert_mask_logits_not_degenerate(masks: torch.Tensor, what: str) -> None:
    assert_not_degenerate(masks, what, min_std=0.05)
    positive = (masks > 0).float().mean().item()
    assert 0.005 < positive < 0.995, f"{what}: {positive:.1%} positive pixels, the mask is trivially empty/full"


@pytest.mark.parametrize("name", list(CONFIG_FILES))
def test_state_dict_layout_matches_reference(name):
    from effsam2.build import model_schema

    ref = build_reference(name)
    ref_schema = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    ours = dict(model_schema(name))
    assert list(ours) == list(ref_schema), "key sets or order differ"
    assert ours == ref_schema
    if name in OFFICIAL_TENSOR_COUNTS:
        assert len(ours) == OFFICIAL_TENSOR_COUNTS[name]


@pytest.fixture(scope="module")
def frames(videos_dir):
    return decode_frames(videos_dir / "bedroom.mp4", 3)


@pytest.mark.parametrize("name,image_size", [("sam2.1_hiera_t", 512), ("sam2.1_hiera_b+", 384),
                                             ("sam2_hiera_s", 256)])
def test_image_encoder_matches_reference(name, image_size, frames):
    ref, ours = reference_and_ours(name, image_size)
    x = to_model_input(frames[0], image_size)
    with torch.inference_mode():
        ref_out = ref.forward_image(x)
        enc = ours.image_encoder(x)
        feats = ours.features_from_encoder(enc)
    ours_levels = [*feats.high_res, feats.vision_feats]
    assert len(ref_out["backbone_fpn"]) == len(ours_levels) == 3
    for level, (a, b) in enumerate(zip(ref_out["backbone_fpn"], ours_levels)):
        assert_not_degenerate(a, f"reference FPN level {level}")
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, atol=1e-4, rtol=0, msg=f"FPN level {level}")
    for level, (a, b) in enumerate(zip(ref_out["vision_pos_enc"], enc.vision_pos_enc)):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0, msg=f"position encoding level {level}")


@pytest.fixture(scope="module")
def tiny_pair():
    return reference_and_ours("sam2.1_hiera_t", 512)


def _reference_features(ref, x):
    backbone = ref.forward_image(x)
    _, vision_feats, vision_pos, feat_sizes = ref._prepare_backbone_features(backbone)
    return vision_feats, vision_pos, feat_sizes


@pytest.mark.parametrize("prompt", ["point", "box"])
def test_mask_decoder_matches_reference(tiny_pair, frames, prompt):
    ref, ours = tiny_pair
    x = to_model_input(frames[0], 512)
    if prompt == "point":  # one positive click on the 512x512 model input: multimask output
        coords, labels, multimask = [[[200.0, 300.0]]], [[1]], True
    else:  # a box as two corner points: single-mask output with the stability fallback
        coords, labels, multimask = [[[250.0, 120.0], [420.0, 400.0]]], [[2, 3]], False
    coords = torch.tensor(coords)
    labels = torch.tensor(labels, dtype=torch.int32)
    with torch.inference_mode():
        vision_feats, _, feat_sizes = _reference_features(ref, x)
        h, w = feat_sizes[-1]
        pix = (vision_feats[-1] + ref.no_mem_embed).permute(1, 2, 0).view(1, 256, h, w)
        high = [f.permute(1, 2, 0).view(1, -1, *s) for f, s in zip(vision_feats[:-1], feat_sizes[:-1])]
        ref_out = ref._forward_sam_heads(pix, {"point_coords": coords, "point_labels": labels}, None, high,
                                         multimask)
        ours_out = ours.forward_sam_heads(pix, PointPrompt(coords, labels), None, high, multimask)
    ref_multi, _, ref_iou, ref_low, _, ref_ptr, ref_score = ref_out
    assert_mask_logits_not_degenerate(ref_low, "reference mask")
    assert ref_score.item() > 0, "reference object score is negative: every mask would be -1024"
    torch.testing.assert_close(ours_out.low_res_multimasks, ref_multi, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours_out.low_res_masks, ref_low, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours_out.ious, ref_iou, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours_out.obj_ptr, ref_ptr, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours_out.object_score_logits, ref_score, atol=1e-5, rtol=0)


def test_tracking_step_with_two_memory_frames_matches_reference(tiny_pair, frames):
    """Frame 0 prompted with a click, frame 1 tracked, frame 2 tracked from the memory of frames 0 and 1."""
    ref, ours = tiny_pair
    num_frames = 6
    ref_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    memory = ObjectMemory()
    click = PointPrompt(torch.tensor([[[230.0, 260.0]]]), torch.tensor([[1]], dtype=torch.int32))
    for frame_idx in range(3):
        x = to_model_input(frames[frame_idx], 512)
        prompted = frame_idx == 0
        with torch.inference_mode():
            vision_feats, vision_pos, feat_sizes = _reference_features(ref, x)
            ref_out = ref.track_step(
                frame_idx=frame_idx, is_init_cond_frame=prompted, current_vision_feats=vision_feats,
                current_vision_pos_embeds=vision_pos, feat_sizes=feat_sizes,
                point_inputs={"point_coords": click.coords, "point_labels": click.labels} if prompted else None,
                mask_inputs=None, output_dict=ref_dict, num_frames=num_frames)
            # the official predictor stores memories in bf16; do the same so both read identical memory
            ref_out["maskmem_features"] = ref_out["maskmem_features"].to(torch.bfloat16)
            ref_dict["cond_frame_outputs" if prompted else "non_cond_frame_outputs"][frame_idx] = ref_out

            feats = ours.encode_image(x)
            step = track_step(ours, frame_idx, feats, memory, is_init_cond_frame=prompted,
                              points=click if prompted else None, num_frames=num_frames)
            (memory.cond if prompted else memory.non_cond)[frame_idx] = step.entry

        assert_mask_logits_not_degenerate(ref_out["pred_masks"], f"reference frame {frame_idx}")
        torch.testing.assert_close(step.entry.pred_masks, ref_out["pred_masks"], atol=1e-3, rtol=0)
        torch.testing.assert_close(step.entry.obj_ptr, ref_out["obj_ptr"], atol=1e-4, rtol=0)
        torch.testing.assert_close(step.entry.object_score_logits, ref_out["object_score_logits"], atol=1e-4,
                                   rtol=0)
        diff = (step.entry.maskmem_features.float() - ref_out["maskmem_features"].float()).abs()
        assert diff.mean() < 1e-3 and diff.max() < 0.1, f"memory features differ: {diff.max():.3g}"
        torch.testing.assert_close(step.entry.maskmem_pos_enc, ref_out["maskmem_pos_enc"][0], atol=1e-5, rtol=0)


def test_oracle_is_importable_when_required():
    require_oracle()
