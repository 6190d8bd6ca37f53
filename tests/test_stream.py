"""StreamTracker: same masks as the offline VideoPredictor, and bounded memory on a long real clip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from effsam2 import PromptError, VideoError
from effsam2.build import build_model
from effsam2.predictor.stream import StreamTracker
from effsam2.predictor.video import VideoPredictor
from tests.helpers.frames import decode_frames
from tests.helpers.weights import perturb_weights


def _model(image_size):
    torch.manual_seed(0)
    model = build_model("sam2.1_hiera_t", image_size=image_size)
    perturb_weights(model)
    return model.eval()


def _strided_model(image_size, **tracker_settings):
    """sam2.1_hiera_t with other memory settings (same random weights as ``_model``)."""
    from dataclasses import replace

    from effsam2.build import build_from_config
    from effsam2.registry import get_config

    config = get_config("sam2.1_hiera_t", image_size)
    config = replace(config, tracker=replace(config.tracker, **tracker_settings))
    torch.manual_seed(0)
    model = build_from_config(config)
    perturb_weights(model)
    return model.eval()


@pytest.mark.parametrize("settings", [{}, {"memory_temporal_stride": 3}, {"max_obj_ptrs_in_encoder": 1}],
                         ids=["official", "stride3", "one-pointer"])
def test_stream_gives_the_offline_masks(videos_dir, settings):
    """Also where the spatial memory reaches further back than the pointers (stride 3: 16 frames against 15;
    a single pointer: 6 against 0): the stream must keep what the next step reads."""
    frames = decode_frames(videos_dir / "bedroom.mp4", 20)
    model = _model(256) if not settings else _strided_model(256, **settings)
    offline = VideoPredictor(model)
    state = offline.init_state(frames)
    offline.add_new_points_or_box(state, 0, 1, points=[[210, 350], [330, 470]], labels=[1, 0])
    offline.add_new_points_or_box(state, 0, 2, box=[600, 200, 800, 450])
    expected = {f: m for f, _, m in offline.propagate_in_video(state)}

    tracker = StreamTracker(model)
    idx, ids, masks = tracker.step(frames[0])
    assert (idx, ids, masks.shape[0]) == (0, [], 0)
    tracker.add_new_points_or_box(1, points=[[210, 350], [330, 470]], labels=[1, 0])
    tracker.add_new_points_or_box(2, box=[600, 200, 800, 450])
    for i, frame in enumerate(frames[1:], start=1):
        idx, ids, masks = tracker.step(frame)
        assert idx == i and ids == [1, 2]
        positive = (masks > 0).float().mean(dim=(1, 2, 3))
        assert ((positive > 0.001) & (positive < 0.999)).all(), f"degenerate masks on frame {i}"
        torch.testing.assert_close(masks, expected[i], atol=1e-5, rtol=0, msg=f"frame {i}")


def test_stream_memory_stops_growing(videos_dir):
    """289 real frames: after the memory window fills, the session holds a constant number of bytes."""
    import av

    model = _model(128)
    tracker = StreamTracker(model)
    sizes = {}
    with av.open(str(videos_dir / "01_dog.mp4")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            tracker.step(frame.to_ndarray(format="rgb24"))
            if i == 0:
                tracker.add_new_points_or_box(1, points=[[640, 400]], labels=[1])
                tracker.add_new_points_or_box(2, box=[100, 100, 500, 600])
            sizes[i] = tracker.state_bytes()
            obj = tracker.state.objects[1]
            assert len(obj.memory.non_cond) <= tracker.pointer_reach + 1
            assert sum(e.maskmem_features is not None for e in obj.memory.non_cond.values()) <= \
                tracker.memory_reach + 1
    assert i == 288
    plateau = sizes[40]
    assert max(sizes[j] for j in range(40, 289)) == plateau, "the stream state grew after the window filled"
    assert len(tracker.frames._recent) <= 2


def test_stream_errors(videos_dir):
    tracker = StreamTracker(_model(128))
    with pytest.raises(VideoError, match="no frame yet"):
        tracker.add_new_points_or_box(1, points=[[10, 10]], labels=[1])
    tracker.step(np.zeros((100, 120, 3), np.uint8))
    with pytest.raises(VideoError, match="120x100"):
        tracker.step(np.zeros((90, 120, 3), np.uint8))
    # a stream state has no frame count: a negative index is still a one-line prompt error
    with pytest.raises(PromptError, match="frame index -1 is out of range: frame indices start at 0"):
        tracker.predictor.add_new_points_or_box(tracker.state, -1, 1, points=[[10, 10]], labels=[1])
