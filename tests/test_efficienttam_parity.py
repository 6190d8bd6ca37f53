"""EfficientTAM-Ti parity with tensors produced by the official EfficientTAM code (fixtures/efficienttam).

The fixture README gives the weights, the exact API calls and the tolerances used here. Three variants with
the same weights: dense (efficienttam_ti_512x512), pooled_1 (efficienttam_ti_1, exact pooled cross-attention)
and pooled_2 (efficienttam_ti_2, pooled keys with the bias on the key vectors), both pooled at image size 512.
The dense and pooled references differ by >= 0.0058 where pooling engages, 10x the 5e-4 tolerance, so a
run with the wrong variant (or pooling at the wrong calls) fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from effsam2.accel.pooled_memory import PooledMemoryBackend
from effsam2.build import build_model
from effsam2.modeling.memory_attention import DenseMemoryBackend
from effsam2.modeling.sam2_model import PointPrompt
from effsam2.modeling.tracker import ObjectMemory, track_step, write_memory
from effsam2.preprocess import preprocess_frame

MODELS = {"dense": "efficienttam_ti_512x512", "pooled_1": "efficienttam_ti_1", "pooled_2": "efficienttam_ti_2"}
OBJ_IDS = (1, 2, 3)
NUM_FRAMES = 6
# README tolerances for an fp32 re-implementation
ATOL_MASK, ATOL_SCORE, ATOL_PTR = 5e-4, 1e-4, 2e-4


@pytest.fixture(scope="module")
def etam_dir(shared_dir: Path) -> Path:
    return shared_dir / "fixtures" / "efficienttam"


@pytest.fixture(scope="module")
def weights(etam_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(etam_dir / "weights_ti_512.safetensors").items()}


def load_model(variant: str, weights: dict[str, torch.Tensor]):
    model = build_model(MODELS[variant], image_size=512)
    model.load_state_dict(weights, strict=True)
    return model


def reference(etam_dir: Path, variant: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(etam_dir / variant / "tracking.safetensors")


def assert_memory_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """README statistical check for bf16 memory features (binarised prompt masks may flip a few pixels)."""
    d = (ours.float() - ref.float()).abs()
    assert d.mean() <= 1e-3, f"{what}: mean abs diff {d.mean():.3g}"
    assert (d > 0.02).float().mean() < 0.01, f"{what}: {(d > 0.02).float().mean():.2%} elements off by > 0.02"
    assert d.max() <= 0.5, f"{what}: max abs diff {d.max():.3g}"


def prompts(etam_dir: Path) -> dict:
    calls = json.loads((etam_dir / "inputs" / "prompts.json").read_text())["calls_in_order"]
    mask = np.asarray(Image.open(etam_dir / "inputs" / "obj3_frame2_mask.png")) > 127
    assert mask.shape == (540, 960) and mask.sum() == calls[2]["foreground_pixels"]
    return {"points": calls[0], "box": calls[1], "mask": mask}


# ---- the whole official session through VideoPredictor ------------------------------------------------

class RecordingBackend:
    """Delegates to the model's backend and records (spatial tokens, pointer tokens) per memory-attention call."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[tuple[int, int]] = []

    def begin_read(self, memory):
        self.inner.begin_read(memory)

    def cross_attend(self, layer_idx, attn, q, table, memory):
        if layer_idx == 0:
            self.calls.append((memory.num_spatial_tokens(), memory.num_ptr_tokens))
        return self.inner.cross_attend(layer_idx, attn, q, table, memory)


@pytest.fixture(scope="module", params=list(MODELS))
def session(request, etam_dir: Path, weights):
    """Run the README's API calls once per variant; keep every output the tests compare."""
    from effsam2 import VideoPredictor

    variant = request.param
    model = load_model(variant, weights)
    recorder = RecordingBackend(model.memory_attention.backend)
    model.memory_attention.backend = recorder
    p = prompts(etam_dir)
    predictor = VideoPredictor(model)
    out = {"variant": variant, "inner_backend": recorder.inner, "prompt_returns": [], "yields": {}}
    with torch.inference_mode():
        state = predictor.init_state(str(etam_dir / "inputs" / "frames"))
        out["prompt_returns"].append(predictor.add_new_points_or_box(
            state, frame_idx=0, obj_id=1, points=np.array(p["points"]["points"], dtype=np.float32),
            labels=np.array(p["points"]["labels"], dtype=np.int32)))
        out["prompt_returns"].append(predictor.add_new_points_or_box(
            state, frame_idx=0, obj_id=2, box=np.array(p["box"]["box"], dtype=np.float32)))
        out["prompt_returns"].append(predictor.add_new_mask(state, frame_idx=2, obj_id=3, mask=p["mask"]))
        for pass_name, kwargs in (("fwd", {}), ("rev", {"start_frame_idx": 5, "reverse": True})):
            order = []
            for frame_idx, obj_ids, masks in predictor.propagate_in_video(state, **kwargs):
                assert list(obj_ids) == list(OBJ_IDS)
                out["yields"][(pass_name, frame_idx)] = masks
                order.append(frame_idx)
            out[f"{pass_name}.order"] = order
            # entries are replaced, never modified, so references are a snapshot of this pass
            out[pass_name] = {(f, o): state.objects[o].memory.get(f) for f in range(NUM_FRAMES) for o in OBJ_IDS}
            out[f"{pass_name}.is_cond"] = {(f, o): f in state.objects[o].memory.cond
                                           for f in range(NUM_FRAMES) for o in OBJ_IDS}
    out["memory_calls"] = recorder.calls
    out["ref"] = reference(etam_dir, variant)
    out["run_info"] = json.loads((etam_dir / variant / "run_info.json").read_text())
    return out


def test_backend_is_the_official_variant(session) -> None:
    backend = session["inner_backend"]
    if session["variant"] == "dense":
        assert type(backend) is DenseMemoryBackend
    else:
        assert isinstance(backend, PooledMemoryBackend)
        assert (backend.window, backend.engage) == (2, "official")
        assert backend.form == {"pooled_1": "exact", "pooled_2": "sdpa"}[session["variant"]]


def test_reference_is_not_degenerate(session) -> None:
    ref = session["ref"]
    for p in ("fwd", "rev"):
        masks = ref[f"{p}.pred_masks"]
        for f in range(NUM_FRAMES):
            for i in range(3):
                m = masks[f, i]
                assert m.min() < 0 < m.max() and m.max() - m.min() > 1.0, (p, f, i)
        assert (ref[f"{p}.object_score_logits"] > 0.1).all()


@pytest.mark.parametrize("pass_name", ["fwd", "rev"])
def test_outputs_match_official(session, pass_name: str) -> None:
    ref = session["ref"]
    assert session[f"{pass_name}.order"] == ([0, 1, 2, 3, 4, 5] if pass_name == "fwd" else [5, 4, 3, 2, 1, 0])
    worst = 0.0
    for f in range(NUM_FRAMES):
        for i, obj in enumerate(OBJ_IDS):
            entry = session[pass_name][(f, obj)]
            where = f"{session['variant']} {pass_name} frame {f} object {obj}"
            assert session[f"{pass_name}.is_cond"][(f, obj)] == bool(ref[f"{pass_name}.is_cond_frame"][f, i]), where
            d = (entry.pred_masks[0, 0] - ref[f"{pass_name}.pred_masks"][f, i]).abs().max().item()
            worst = max(worst, d)
            assert d <= ATOL_MASK, f"{where}: mask logits differ by {d:.3g}"
            torch.testing.assert_close(entry.object_score_logits[0, 0], ref[f"{pass_name}.object_score_logits"][f, i],
                                       atol=ATOL_SCORE, rtol=0, msg=where)
            torch.testing.assert_close(entry.obj_ptr[0], ref[f"{pass_name}.obj_ptr"][f, i], atol=ATOL_PTR, rtol=0,
                                       msg=where)
    print(f"{session['variant']} {pass_name}: max |mask logit diff| {worst:.3g}")


def test_memory_features_match_official(session) -> None:
    ref = session["ref"]["fwd.maskmem_features"]
    for f in range(3):  # frames 0 (point/box prompts), 1 (tracked), 2 (mask prompt of object 3)
        for i, obj in enumerate(OBJ_IDS):
            feats = session["fwd"][(f, obj)].maskmem_features
            assert feats.dtype == torch.bfloat16
            assert_memory_close(feats[0], ref[f, i], f"{session['variant']} memory frame {f} object {obj}")


def test_memory_bank_per_call_matches_official(session) -> None:
    expected = [(c["spatial_memory_tokens"], c["obj_ptr_tokens"])
                for c in session["run_info"]["memory_bank_per_memory_attention_call"]]
    assert session["memory_calls"] == expected


def test_video_resolution_masks(session, etam_dir: Path) -> None:
    ref = session["ref"]
    for (pass_name, f), masks in session["yields"].items():
        assert masks.shape == (3, 1, 540, 960)
        # every yield is the bilinear upsample of the official low-res logits (README consistency check)
        up = F.interpolate(ref[f"{pass_name}.pred_masks"][f][:, None], size=(540, 960), mode="bilinear",
                           align_corners=False)
        assert (masks - up).abs().max() <= ATOL_MASK, (pass_name, f)
    if session["variant"] == "dense":
        with np.load(etam_dir / "dense" / "video_res_fwd.npz") as vr:
            stored, frames = torch.from_numpy(vr["masks"]).float(), vr["frame_idx"].tolist()
        assert frames == [0, 2, 5]
        for j, f in enumerate(frames):
            want = stored[j][:, None]  # (objects, 1, H, W) like the yields
            d = (session["yields"][("fwd", f)] - want).abs()
            assert d.shape == want.shape
            assert (d <= 1e-3 + 5e-4 * want.abs()).all(), f"video-res frame {f}: max diff {d.max():.3g}"


def test_prompt_returns(session) -> None:
    """Each prompt call returns the forward yield of present objects and -1024 for the others."""
    returns = session["prompt_returns"]
    expected = [(0, [1], [0]), (0, [1, 2], [0, 1]), (2, [1, 2, 3], [2])]
    for (frame_idx, obj_ids, masks), (want_frame, want_ids, present) in zip(returns, expected):
        assert frame_idx == want_frame and list(obj_ids) == want_ids
        assert masks.shape == (len(want_ids), 1, 540, 960)
        yielded = session["yields"][("fwd", frame_idx)]
        for i in range(len(want_ids)):
            if i in present:
                torch.testing.assert_close(masks[i], yielded[i], atol=1e-5, rtol=0)
            else:
                assert (masks[i] == -1024.0).all()


# ---- one step at a time with track_step (independent of the predictor's bookkeeping) ---------------

def test_track_step_prompt_and_first_tracked_frame(etam_dir: Path, weights) -> None:
    """Frame 0 prompts for objects 1 and 2, their binarised memory, and frame 1 tracked from it (dense)."""
    model = load_model("dense", weights)
    ref = reference(etam_dir, "dense")
    p = prompts(etam_dir)
    frames = [np.asarray(Image.open(etam_dir / "inputs" / "frames" / f"{i:05d}.jpg").convert("RGB")) for i in (0, 1)]
    prompts_by_obj = {
        1: PointPrompt(torch.tensor([p["points"]["model_space_point_coords"]], dtype=torch.float32),
                       torch.tensor([p["points"]["model_space_point_labels"]], dtype=torch.int32)),
        2: PointPrompt(torch.tensor([p["box"]["model_space_point_coords"]], dtype=torch.float32),
                       torch.tensor([p["box"]["model_space_point_labels"]], dtype=torch.int32)),
    }
    with torch.inference_mode():
        feats = [model.encode_image(preprocess_frame(f, 512)[None]) for f in frames]
        for i, obj in enumerate((1, 2)):
            memory = ObjectMemory()
            step = track_step(model, 0, feats[0], memory, is_init_cond_frame=True, points=prompts_by_obj[obj],
                              run_mem_encoder=False, num_frames=NUM_FRAMES)
            entry = step.entry
            high = F.interpolate(entry.pred_masks, size=(512, 512), mode="bilinear", align_corners=False)
            write_memory(model, entry, feats[0], high, is_mask_from_pts=True)
            memory.cond[0] = entry
            tracked = track_step(model, 1, feats[1], memory, is_init_cond_frame=False, num_frames=NUM_FRAMES).entry
            for f, e in ((0, entry), (1, tracked)):
                torch.testing.assert_close(e.pred_masks[0, 0], ref["fwd.pred_masks"][f, i], atol=ATOL_MASK, rtol=0)
                torch.testing.assert_close(e.object_score_logits[0, 0], ref["fwd.object_score_logits"][f, i],
                                           atol=ATOL_SCORE, rtol=0)
                torch.testing.assert_close(e.obj_ptr[0], ref["fwd.obj_ptr"][f, i], atol=ATOL_PTR, rtol=0)
                assert_memory_close(e.maskmem_features[0], ref["fwd.maskmem_features"][f, i], f"frame {f} obj {obj}")
