"""Sparse Window Routing through the VideoPredictor and the StreamTracker."""

from __future__ import annotations

import torch

from effsam2.accel.window_routing import RouterConfig
from effsam2.build import build_model
from effsam2.predictor.stream import StreamTracker
from effsam2.predictor.video import VideoPredictor
from tests.helpers.frames import decode_frames
from tests.helpers.weights import perturb_weights

SIZE = 512  # a 3x3 grid of stage-3 windows (256 would give 2x2)


def _models(**accel):
    torch.manual_seed(0)
    dense = build_model("sam2.1_hiera_t", image_size=SIZE)
    perturb_weights(dense)
    # lower the mask logits a little so that objects do not cover every window (routing has something to skip)
    with torch.no_grad():
        for mlp in dense.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].bias.sub_(0.5)
    routed = build_model("sam2.1_hiera_t", image_size=SIZE, **accel)
    routed.load_state_dict(dense.state_dict())
    return dense.eval(), routed.eval()


# random weights give object scores of about 3.5-4: below the default threshold of 5 every frame would fall
# back to the (diffuse) saliency windows
ROUTER = RouterConfig(score_threshold=3.0)


def _track(model, frames):
    predictor = VideoPredictor(model, router_config=ROUTER)
    state = predictor.init_state(frames)
    predictor.add_new_points_or_box(state, 0, 1, box=[600, 200, 800, 450])
    selections = []
    masks = {}
    for f, _, m in predictor.propagate_in_video(state):
        masks[f] = m
        selections.append(state.window_selection)
    return masks, selections


def test_all_windows_is_the_dense_predictor(videos_dir):
    frames = decode_frames(videos_dir / "bedroom.mp4", 5)
    dense, routed = _models(accel="swr", swr_fraction=1.0)
    expected, _ = _track(dense, frames)
    got, selections = _track(routed, frames)
    assert all(s is not None and s.is_full for s in selections[1:])
    for f in expected:
        # every window selected is the identity setting: the same masks, bit for bit
        assert torch.equal(got[f], expected[f]), f"frame {f}"


def test_routing_skips_windows_after_the_first_frame(videos_dir):
    frames = decode_frames(videos_dir / "bedroom.mp4", 5)
    _, routed = _models(accel="swr")
    masks, selections = _track(routed, frames)
    assert selections[0] is None  # the prompted frame is not re-encoded (its output is stored)
    # the first encoded frame is routed from the prompt's own output (the official loop runs it densely)
    assert selections[1].reason == "mask"
    assert all(s.count < s.grid.num_windows for s in selections[1:]), [s.count for s in selections[1:]]
    assert all(torch.isfinite(m).all() for m in masks.values())


def test_stream_keeps_routing_between_steps_and_resets_on_prompts(videos_dir):
    frames = decode_frames(videos_dir / "bedroom.mp4", 6)
    _, routed = _models(accel="swr")
    tracker = StreamTracker(routed, router_config=ROUTER)
    tracker.step(frames[0])
    tracker.add_new_points_or_box(1, box=[600, 200, 800, 450])
    counts = []
    for frame in frames[1:4]:
        tracker.step(frame)
        counts.append(tracker.state.window_selection.count)
    assert counts[0] == tracker.state.window_selection.grid.num_windows
    assert min(counts[1:]) < counts[0]
    tracker.add_new_points_or_box(2, points=[[300, 300]], labels=[1])  # a new object: route from scratch
    tracker.step(frames[4])
    assert tracker.state.window_selection.is_full
