"""Pooled memory attention inside whole tracking runs: identity at window 1, and pool-once == pool-at-read.

Runs track one clicked object over 5 real frames with ``track_step`` (memory up to 5 frames, so pooling
engages from frame 2 under the official rule), on SAM 2.1-t with non-degenerate random weights and on
EfficientTAM-Ti with the fixture weights (also at a 15x15 grid, which no window of 2 or 4 divides).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from effsam2.accel.pooled_memory import PooledMemoryBackend
from effsam2.build import build_model
from effsam2.modeling.memory_attention import DenseMemoryBackend
from effsam2.modeling.sam2_model import PointPrompt
from effsam2.modeling.tracker import ObjectMemory, track_step
from tests.helpers.frames import decode_frames, to_model_input
from tests.helpers.oracle import perturb_weights

NUM_FRAMES = 5


@pytest.fixture(scope="module")
def frames(videos_dir: Path):
    return decode_frames(videos_dir / "bedroom.mp4", NUM_FRAMES)


def encode(model, frames, size: int):
    with torch.inference_mode():
        return [model.encode_image(to_model_input(f, size)) for f in frames]


def track(model, feats, size: int, backend) -> tuple[list, ObjectMemory]:
    """Frame 0 prompted with a click, frames 1.. tracked; returns the entries and the memory bank."""
    model.memory_attention.backend = backend
    memory = ObjectMemory()
    click = PointPrompt(torch.tensor([[[0.45 * size, 0.5 * size]]]), torch.tensor([[1]], dtype=torch.int32))
    entries = []
    with torch.inference_mode():
        for i, f in enumerate(feats):
            step = track_step(model, i, f, memory, is_init_cond_frame=i == 0, points=click if i == 0 else None,
                              num_frames=len(feats))
            (memory.cond if i == 0 else memory.non_cond)[i] = step.entry
            entries.append(step.entry)
    return entries, memory


def assert_not_degenerate(entries) -> None:
    for i, e in enumerate(entries):
        m = e.pred_masks
        assert m.min() < 0 < m.max() and m.std() > 0.05, f"frame {i}: degenerate mask"
        assert 0.01 < (m > 0).float().mean() < 0.99, f"frame {i}: trivially empty/full mask"


def assert_same_outputs(a, b, atol: float) -> None:
    for i, (x, y) in enumerate(zip(a, b)):
        torch.testing.assert_close(x.pred_masks, y.pred_masks, atol=atol, rtol=0, msg=f"frame {i} masks")
        torch.testing.assert_close(x.obj_ptr, y.obj_ptr, atol=atol, rtol=0, msg=f"frame {i} pointer")
        torch.testing.assert_close(x.object_score_logits, y.object_score_logits, atol=atol, rtol=0)


def max_mask_diff(a, b) -> float:
    return max((x.pred_masks - y.pred_masks).abs().max().item() for x, y in zip(a, b))


@pytest.fixture(scope="module")
def sam21(frames):
    torch.manual_seed(0)
    model = build_model("sam2.1_hiera_t", image_size=256)
    perturb_weights(model)  # REFERENCE.md recipe: non-degenerate masks on every frame
    return model, encode(model, frames, 256)


@pytest.mark.parametrize("form", ["exact", "sdpa"])
def test_window_one_is_dense_on_sam21(sam21, form: str) -> None:
    model, feats = sam21
    dense, _ = track(model, feats, 256, DenseMemoryBackend())
    assert_not_degenerate(dense)
    plain, _ = track(model, feats, 256, PooledMemoryBackend(window=1, form=form, engage="always", cache=False))
    cached, memory = track(model, feats, 256, PooledMemoryBackend(window=1, form=form, engage="always", cache=True))
    for run in (plain, cached):  # nothing is pooled, nothing is biased: the very same computation
        for x, y in zip(run, dense):
            assert torch.equal(x.pred_masks, y.pred_masks) and torch.equal(x.obj_ptr, y.obj_ptr)
    assert not any(e.backend_cache for e in memory.non_cond.values())  # and nothing cached


def test_pooling_changes_sam21_outputs(sam21) -> None:
    """The window-1 identity above would be vacuous if pooling did not matter on this run."""
    model, feats = sam21
    dense, _ = track(model, feats, 256, DenseMemoryBackend())
    pooled, _ = track(model, feats, 256, PooledMemoryBackend(window=2))
    assert_not_degenerate(pooled)
    assert max_mask_diff(pooled[:2], dense[:2]) == 0.0  # 0-1 memory frames: the official rule keeps dense
    assert max_mask_diff(pooled, dense) > 1e-3


@pytest.fixture(scope="module")
def etam(frames, shared_dir: Path):
    from safetensors.torch import load_file

    weights = {k: v.float() for k, v in
               load_file(shared_dir / "fixtures" / "efficienttam" / "weights_ti_512.safetensors").items()}
    models = {}
    # the ViT encoder takes any multiple of 16: 240 gives a 15x15 grid, ragged for windows 2 and 4
    for size in (256, 240):
        model = build_model("efficienttam_ti_1", image_size=size)
        model.load_state_dict(weights, strict=True)
        models[size] = model, encode(model, frames, size)
    return models


@pytest.mark.parametrize("size, window, form, engage", [
    (256, 2, "exact", "official"),
    (256, 4, "sdpa", "always"),
    (240, 2, "exact", "always"),
    (240, 4, "exact", "official"),
    (240, 2, "sdpa", "official"),
])
def test_pool_once_equals_pool_at_read(etam, size: int, window: int, form: str, engage: str) -> None:
    """Keys pooled once per memory entry (+ the temporal term at each read) == pooled at every read."""
    model, feats = etam[size]
    at_read, _ = track(model, feats, size, PooledMemoryBackend(window, form, engage, cache=False))
    backend = PooledMemoryBackend(window, form, engage, cache=True)
    once, memory = track(model, feats, size, backend)
    assert_not_degenerate(at_read)
    assert_same_outputs(once, at_read, atol=1e-4)
    assert max_mask_diff(once, at_read) < 1e-4
    # the cache was filled and is what later reads used (every older entry holds pooled keys for 4 layers)
    cached = [backend.cache_nbytes(e) for e in [*memory.cond.values(), *memory.non_cond.values()][:-1]]
    assert all(n > 0 for n in cached)
    dense, _ = track(model, feats, size, DenseMemoryBackend())
    assert max_mask_diff(at_read, dense) > 1e-3, "pooling did not engage: the comparison would prove nothing"


def test_two_sessions_on_one_model_keep_their_own_pooled_caches(davis_dir):
    """Backend caches are keyed by each session's bank, not by object id: tracking object 1 in another
    session in between does not evict this session's caches (before, both were "object 1" on the model)."""
    import effsam2
    from effsam2.predictor.video import VideoPredictor
    from tests.helpers.davis import first_frames

    frames, mask = first_frames(davis_dir, "cows", 5)
    model = effsam2.build_model(accel="pool")
    predictor = VideoPredictor(model)
    states = [predictor.init_state(frames), predictor.init_state(frames[::-1])]
    for state in states:
        predictor.add_new_mask(state, 0, 1, mask)
    runs = [predictor.propagate_in_video(state) for state in states]
    for _ in frames:
        for run in runs:
            next(run)
        for state in states:  # each session's last tracked entry was read by its own next step: still cached
            tracked = state.objects[1].memory.non_cond
            if len(tracked) >= 2:
                assert tracked[max(tracked) - 1].backend_cache, "a session's pooled cache was evicted"
