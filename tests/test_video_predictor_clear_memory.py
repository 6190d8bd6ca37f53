"""``clear_non_cond_mem_around_input``: a prompt clears the prompted object's memory around it, no other's.

The official SAM 2.1 predictor clears per object (``_clear_obj_non_cond_mem_around_input(state, frame_idx,
obj_idx)``, called where a conditioning frame is stored and where propagation meets one). sam2 1.1.0 calls that
method without defining it, so the flag cannot be compared with the official predictor; these tests check the
per-object rule directly.
"""

from __future__ import annotations

import torch

from effsam2.build import build_model
from effsam2.predictor.video import VideoPredictor
from tests.helpers.frames import decode_frames
from tests.helpers.weights import perturb_weights

NUM_FRAMES = 5


def _run(frames, model, clear: bool):
    predictor = VideoPredictor(model, clear_non_cond_mem_around_input=clear)
    state = predictor.init_state(frames)
    predictor.add_new_points_or_box(state, 0, 1, points=[[210, 350]], labels=[1])
    predictor.add_new_points_or_box(state, 0, 2, box=[600, 200, 800, 450])
    predictor.add_new_points_or_box(state, 2, 2, points=[[700, 300]], labels=[1])  # object 2 only, on frame 2
    masks = [m for _, _, m in predictor.propagate_in_video(state)]
    return state, torch.stack(masks)


def test_a_prompt_clears_only_its_own_objects_memory(videos_dir):
    frames = decode_frames(videos_dir / "bedroom.mp4", NUM_FRAMES)
    torch.manual_seed(0)
    model = build_model("sam2.1_hiera_t", image_size=256)
    perturb_weights(model)
    state, cleared = _run(frames, model.eval(), clear=True)
    # reach = stride 1 x 7 memories: object 2's frame-1 memory goes when propagation meets its prompt on frame 2
    assert sorted(state.objects[2].memory.non_cond) == [3, 4]
    assert sorted(state.objects[2].memory.cond) == [0, 2]
    assert sorted(state.objects[1].memory.non_cond) == [1, 2, 3, 4]  # object 1 was not prompted on frame 2

    _, kept = _run(frames, model, clear=False)
    obj1 = cleared[:, 0]
    assert 0.002 < (obj1 > 0).float().mean() < 0.998, "object 1's masks are degenerate"
    torch.testing.assert_close(obj1, kept[:, 0], rtol=0, atol=0)  # object 1 tracks as without the flag
