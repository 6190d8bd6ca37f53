"""SWR in a tracking loop: several objects share one routed encoding (their windows united), and the
memory-attention backend (dense, pooled, SMR) is independent of the routed encoder."""

import importlib.util

import pytest
import torch

from effsam2.accel.swr import WindowRouting
from effsam2.accel.window_routing import RouterConfig, RouterEvidence, route_windows
from effsam2.build import build_model
from effsam2.modeling.sam2_model import PointPrompt
from effsam2.modeling.tracker import ObjectMemory, track_step
from tests.helpers.frames import decode_frames, to_model_input
from tests.helpers.weights import perturb_weights

SIZE = 512
BACKENDS = {"swr": None, "swr+smr": "effsam2.accel.sparse_memory", "swr+pool": "effsam2.accel.pooled_memory"}


def small_mask_model(accel):
    """Non-degenerate random weights (REFERENCE recipe) with mask logits lowered, so that objects cover a
    few of the 9 stage-3 windows instead of all of them."""
    torch.manual_seed(0)
    model = build_model("sam2.1_hiera_t", image_size=SIZE, accel=accel)
    perturb_weights(model)
    with torch.no_grad():
        for mlp in model.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].bias.sub_(0.5)
    return model


@pytest.mark.parametrize("accel", list(BACKENDS))
def test_two_objects_with_routing_and_any_memory_backend(accel, videos_dir):
    module = BACKENDS[accel]
    if module is not None and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not in this checkout")
    model = small_mask_model(accel)
    swr = WindowRouting.from_model(model, RouterConfig(score_threshold=3.0))
    assert swr is not None and swr.shortcut is None and swr.grid.num_windows == 9
    frames = [to_model_input(f, SIZE) for f in decode_frames(videos_dir / "01_dog.mp4", 3, start=20)]
    clicks = [(256.0, 256.0), (120.0, 380.0)]
    memories = [ObjectMemory() for _ in clicks]
    router = swr.new_router()
    selections = []
    with torch.inference_mode():
        for t, image in enumerate(frames):
            feats, selection = swr.encode(model, image, router, prompted=t == 0)
            selections.append(selection)
            steps = []
            for (x, y), memory in zip(clicks, memories):
                points = PointPrompt(torch.tensor([[[x, y]]]), torch.ones(1, 1, dtype=torch.int32)) if t == 0 else None
                step = track_step(model, t, feats, memory, is_init_cond_frame=t == 0, points=points,
                                  num_frames=len(frames), return_token_attention=True)
                (memory.cond if t == 0 else memory.non_cond)[t] = step.entry
                steps.append(step)
                masks = step.high_res_masks
                assert torch.isfinite(masks).all() and (masks > 0).any() and (masks < 0).any()
            # the next frame's windows: the union of what each object alone would route
            union = route_windows(swr.grid, RouterEvidence.from_outputs(steps), swr.config)
            alone = [route_windows(swr.grid, RouterEvidence.from_outputs([s]), swr.config) for s in steps]
            assert torch.equal(union.selected, alone[0].selected | alone[1].selected)
            router.observe(steps)
            assert torch.equal(router.next_selection(swr.grid).selected, union.selected)
    assert selections[0].is_full  # the prompted frame
    assert all(not s.is_full for s in selections[1:])  # routed frames skipped windows
    assert type(model.memory_attention.backend).__name__ != "DenseMemoryBackend" or accel == "swr"
