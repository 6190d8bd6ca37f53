"""SMR in real tracking runs: identity at s = 0, one pattern per (object, frame, layer), top-k of the
first-recall attention, whole prompt / newest frames, separate objects, compaction, closeness to dense.

A seeded sam2.1_hiera_t at 256 px (non-degenerate random weights, tests/helpers/oracle.py recipe) tracks
8 real frames of bedroom.mp4 with ``track_step``, prompted by clicks on frames 0 and 4, so that memory
frames are re-read up to five times, one frame is first recalled in an old slot (after the prompt step 4,
which reads no memory), and two prompt frames are read together.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter

import pytest
import torch

from effsam2.accel.smr_policy import TopKSaliency
from effsam2.accel.sparse_memory import CACHE_KEY, SparseMemoryBackend, stored_bytes
from effsam2.build import build_model
from effsam2.modeling.memory import MemoryOwner
from effsam2.modeling.memory_attention import DenseMemoryBackend
from effsam2.modeling.sam2_model import PointPrompt
from effsam2.modeling.tracker import ObjectMemory, track_step
from tests.helpers.frames import decode_frames, to_model_input
from tests.helpers.oracle import perturb_weights

IMAGE = 256
NUM_FRAMES = 8
PROMPT_FRAMES = (0, 4)
OBJECTS = {  # two objects prompted on both prompt frames (pixels of the 256 input): a click; a click + a negative
    "a": PointPrompt(torch.tensor([[[115.0, 128.0]]]), torch.tensor([[1]], dtype=torch.int32)),
    "b": PointPrompt(torch.tensor([[[200.0, 60.0], [100.0, 200.0]]]), torch.tensor([[1, 0]], dtype=torch.int32)),
}


class NamedOwner(MemoryOwner):
    """A bank identity that carries the test's object name, so counts read ("a", frame, layer)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _key(frame) -> tuple:
    owner, frame_idx = frame.key
    return owner.name, frame_idx


class CountingTopK(TopKSaliency):
    """The official policy, counting pattern picks and sparse reads per (object key, frame, layer)."""

    def __init__(self, sparsity: float) -> None:
        super().__init__(sparsity)
        self.picks: Counter = Counter()
        self.sparse_reads: Counter = Counter()

    def keep_whole(self, layer_idx, frame, memory) -> bool:
        # the backend asks only about frames that have a pattern on this layer: False means a sparse read
        whole = super().keep_whole(layer_idx, frame, memory)
        if not whole:
            self.sparse_reads[(*_key(frame), layer_idx)] += 1
        return whole

    def select(self, layer_idx, frame, saliency):
        self.picks[(*_key(frame), layer_idx)] += 1
        return super().select(layer_idx, frame, saliency)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model("sam2.1_hiera_t", image_size=IMAGE)
    perturb_weights(m)
    return m.eval()


@pytest.fixture(scope="module")
def features(model, videos_dir):
    frames = decode_frames(videos_dir / "bedroom.mp4", NUM_FRAMES)
    with torch.inference_mode():
        return [model.encode_image(to_model_input(f, IMAGE)) for f in frames]


@contextlib.contextmanager
def using_backend(model, backend):
    previous = model.memory_attention.backend
    model.memory_attention.backend = backend
    try:
        yield
    finally:
        model.memory_attention.backend = previous


def track(model, features, backend, objects=("a",), num_frames=NUM_FRAMES, capture=None):
    """Track each object in its own memory bank (as the official predictor does), frame by frame."""
    memories = {name: ObjectMemory(owner=NamedOwner(name)) for name in objects}
    steps = {name: [] for name in objects}
    with using_backend(model, backend), torch.inference_mode():
        for t in range(num_frames):
            for name in objects:
                prompted = t in PROMPT_FRAMES
                with capture(t, name) if capture is not None else contextlib.nullcontext():
                    step = track_step(model, t, features[t], memories[name], is_init_cond_frame=prompted,
                                      points=OBJECTS[name] if prompted else None, num_frames=NUM_FRAMES)
                (memories[name].cond if prompted else memories[name].non_cond)[t] = step.entry
                steps[name].append(step)
    return memories, steps


def expected_recalls(frame: int, num_maskmem: int = 7) -> list[int]:
    """Steps at which non-prompt ``frame`` is read: the next num_maskmem - 1 steps that read memory."""
    return [t for t in range(frame + 1, min(frame + num_maskmem, NUM_FRAMES)) if t not in PROMPT_FRAMES]


def assert_mask_not_degenerate(masks: torch.Tensor, what: str) -> None:
    assert torch.isfinite(masks).all() and masks.std() > 0.05, f"{what}: (nearly) constant logits"
    positive = (masks > 0).float().mean().item()
    assert 0.005 < positive < 0.995, f"{what}: {positive:.1%} positive, trivially empty/full"


@pytest.fixture(scope="module")
def dense_run(model, features):
    return track(model, features, DenseMemoryBackend(), objects=("a", "b"))


@pytest.fixture(scope="module")
def sparse_run(model, features):
    policy = CountingTopK(0.95)
    memories, steps = track(model, features, SparseMemoryBackend(policy), objects=("a", "b"))
    return policy, memories, steps


def test_zero_sparsity_is_exactly_dense_over_a_tracking_run(model, features, dense_run):
    policy = CountingTopK(0.0)
    _, steps = track(model, features, SparseMemoryBackend(policy))
    for t, (ours, ref) in enumerate(zip(steps["a"], dense_run[1]["a"])):
        assert_mask_not_degenerate(ref.entry.pred_masks, f"dense frame {t}")
        for name in ("pred_masks", "obj_ptr", "object_score_logits", "maskmem_features"):
            assert torch.equal(getattr(ours.entry, name), getattr(ref.entry, name)), f"{name} differs at frame {t}"
        assert torch.equal(ours.high_res_masks, ref.high_res_masks)
    # the machinery ran (a saliency and a pattern per object, frame and layer), and every pattern keeps all
    # tokens, which the backend reads as the whole frame: s = 0 is the inner backend, whatever it is
    assert policy.picks == {("a", f, layer): 1 for f in (1, 2, 3, 5, 6) for layer in range(4)}
    assert not policy.sparse_reads


def test_patterns_are_picked_once_per_object_frame_and_layer_and_reused(sparse_run):
    policy, memories, _ = sparse_run
    non_prompt = [f for f in range(NUM_FRAMES) if f not in PROMPT_FRAMES]
    expected_picks, expected_sparse = Counter(), Counter()
    for name in ("a", "b"):
        for f in non_prompt:
            recalls = expected_recalls(f)
            for layer in range(4):
                if recalls:  # read whole and picked at the first recall, sparse at every later one
                    expected_picks[(name, f, layer)] = 1
                    if len(recalls) > 1:
                        expected_sparse[(name, f, layer)] = len(recalls) - 1
    assert policy.picks == expected_picks
    assert policy.sparse_reads == expected_sparse
    assert expected_recalls(3) == [5, 6, 7], "frame 3 should be first recalled in an old slot"
    for name in ("a", "b"):
        for f in (0, 4):  # prompt frames: no pattern, never compacted
            entry = memories[name].cond[f]
            assert CACHE_KEY not in entry.backend_cache and entry.token_index is None
            assert entry.maskmem_features.shape[-2:] == (16, 16)


def test_compaction_reads_the_same_tokens_and_shrinks_the_bank(model, features, sparse_run):
    _, memories, steps = sparse_run
    # the same object alone, with the memory bank kept whole: outputs must be bit-identical
    _, kept_whole = track(model, features, SparseMemoryBackend(TopKSaliency(0.95), compact=False))
    for t, (ours, ref) in enumerate(zip(steps["a"], kept_whole["a"])):
        assert torch.equal(ours.entry.pred_masks, ref.entry.pred_masks), f"frame {t} differs"
        assert torch.equal(ours.entry.obj_ptr, ref.entry.obj_ptr)
    full = 64 * 16 * 16 * 2  # one object's (64, 16, 16) bf16 memory
    for f in (1, 2, 3, 5):  # read sparse at least once
        entry = memories["a"].non_cond[f]
        pattern = entry.backend_cache[CACHE_KEY]
        torch.testing.assert_close(entry.token_index, pattern.union())
        assert entry.maskmem_features.shape == (1, 64, entry.token_index.numel())
        assert 12 <= entry.token_index.numel() <= 48
        assert stored_bytes(entry) < full
        # the accounting counts the kept bf16 features, the int64 kept-token index and the int64 patterns
        kept, index_entries = entry.token_index.numel(), sum(i.numel() for i in pattern.grid_index.values())
        assert stored_bytes(entry) == 64 * kept * 2 + kept * 8 + index_entries * 8
    for f in (6, 7):  # 6 was only read once (as the newest), 7 never: still whole
        assert memories["a"].non_cond[f].token_index is None


def _axial_rotations(side: int, dim: int, theta: float = 10000.0) -> torch.Tensor:
    """SAM 2's 2-D RoPE written out: half the pairs rotate with x, half with y, row-major tokens."""
    freqs = 1.0 / theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim)
    idx = torch.arange(side * side)
    x, y = (idx % side).float(), torch.div(idx, side, rounding_mode="floor").float()
    angles = torch.cat([torch.outer(x, freqs), torch.outer(y, freqs)], dim=-1)
    return torch.polar(torch.ones_like(angles), angles)


def _rotate(v: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(torch.view_as_complex(v.reshape(*v.shape[:-1], -1, 2)) * cis).flatten(-2)


def test_kept_tokens_are_the_top_k_of_each_objects_first_recall_attention(model, features):
    """Frame 1 is first recalled at step 2 (next to prompt frame 0 only), for two objects tracked with one
    backend: recompute each object's and each layer's saliency here from the layer weights."""
    layers = model.memory_attention.layers
    queries_in = {}

    @contextlib.contextmanager
    def capture(t, name):
        if t != 2:
            yield
            return
        hooks = [layer.norm2.register_forward_hook(
            lambda mod, args, out, key=(name, i): queries_in.__setitem__(key, out)) for i, layer in enumerate(layers)]
        try:
            yield
        finally:
            for h in hooks:
                h.remove()

    memories, _ = track(model, features, SparseMemoryBackend(TopKSaliency(0.95)), objects=("a", "b"), num_frames=3,
                        capture=capture)
    cis = _axial_rotations(16, 256)
    kept = {}
    for name in ("a", "b"):
        entry = memories[name].non_cond[1]
        tokens = entry.maskmem_features.float().flatten(2).transpose(1, 2)  # (1, 256, 64)
        # frame 1 sits in the newest slot (t_pos 6), whose temporal encoding is maskmem_tpos_enc[7 - 6 - 1]
        pos = entry.maskmem_pos_enc.flatten(2).transpose(1, 2) + model.maskmem_tpos_enc[0].view(1, 1, -1)
        for i, layer in enumerate(layers):
            attn = layer.cross_attn_image
            with torch.inference_mode():
                q = _rotate(torch.nn.functional.linear(queries_in[name, i], attn.q_proj.weight, attn.q_proj.bias), cis)
                k = _rotate(torch.nn.functional.linear(tokens + pos, attn.k_proj.weight, attn.k_proj.bias), cis)
                saliency = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(256), dim=-1).mean(1)[0]  # (256,)
            top = torch.topk(saliency, 12).indices
            ours = entry.backend_cache[CACHE_KEY].grid_index[i][0]
            kept[name, i] = ours
            assert ours.shape == (12,)  # floor(0.05 * 256)
            assert saliency.std() > 1e-4, "saliency is flat: the check would not distinguish tokens"
            # the same set, up to exchanging tokens whose saliency ties with the 12th within float noise
            threshold = saliency[top].min()
            assert torch.all(saliency[ours] >= threshold - 1e-6), f"{name} layer {i}: a kept token is not in the top"
            assert len(set(ours.tolist()) & set(top.tolist())) >= 11, f"{name} layer {i}"
    # the objects' memories differ, and so do their patterns (not one cache shared by frame index)
    assert memories["a"].non_cond[1].backend_cache is not memories["b"].non_cond[1].backend_cache
    assert any(not torch.equal(kept["a", i], kept["b", i]) for i in range(4)), "both objects got the same pattern"


def test_sparse_tracking_stays_close_to_dense_on_real_frames(dense_run, sparse_run):
    _, _, steps = sparse_run
    agreements = []
    for name in ("a", "b"):
        for t, (ours, ref) in enumerate(zip(steps[name], dense_run[1][name])):
            a, b = ours.high_res_masks > 0, ref.high_res_masks > 0
            iou = (a & b).sum().item() / max((a | b).sum().item(), 1)
            agreements.append((name, t, (a == b).float().mean().item(), iou))
    print("\nSMR s=0.95 vs dense (object, frame, pixel agreement, IoU):")
    for row in agreements:
        print("  {} {} {:.4f} {:.4f}".format(*row))
    # frames 0-2 and the prompt frame 4 read no sparse memory: identical; later frames drift slightly
    assert all(agree == 1.0 for _, t, agree, _ in agreements if t in (0, 1, 2, 4))
    assert min(iou for *_, iou in agreements) > 0.8


def _session(model, backend, frames, features) -> list[tuple[int, list[int], torch.Tensor]]:
    """Two objects clicked on frame 0, forward propagation, a refinement click on tracked frame 4,
    reverse propagation from the last frame: every output the predictor returns."""
    from effsam2.predictor.video import VideoPredictor

    outputs = []
    with using_backend(model, backend):
        predictor = VideoPredictor(model)
        state = predictor.init_state(frames)
        state.features = features  # image features do not depend on the backend: encode each frame once
        outputs.append(predictor.add_new_points_or_box(state, 0, 1, points=[[430, 270]], labels=[1]))
        outputs.append(predictor.add_new_points_or_box(state, 0, 2, points=[[750, 130], [380, 420]], labels=[1, 0]))
        outputs += list(predictor.propagate_in_video(state))
        outputs.append(predictor.add_new_points_or_box(state, 4, 1, points=[[450, 300]], labels=[1]))
        outputs += list(predictor.propagate_in_video(state, start_frame_idx=len(frames) - 1, reverse=True))
    return outputs


def test_video_predictor_sessions_with_smr(model, videos_dir):
    """Through the VideoPredictor (prompt, propagate, refine, propagate in reverse): s = 0 returns exactly
    the dense outputs; s = 0.95 runs the same session and stays close."""
    from effsam2.predictor.state import FeatureCache

    frames = decode_frames(videos_dir / "bedroom.mp4", 6)
    features = FeatureCache(capacity=len(frames))
    dense = _session(model, DenseMemoryBackend(), frames, features)
    identity = _session(model, SparseMemoryBackend(TopKSaliency(0.0)), frames, features)
    sparse = _session(model, SparseMemoryBackend(TopKSaliency(0.95)), frames, features)
    assert len(dense) == len(identity) == len(sparse) == 2 + len(frames) + 1 + len(frames)
    ious = []
    for (f_d, ids_d, m_d), (f_i, ids_i, m_i), (f_s, ids_s, m_s) in zip(dense, identity, sparse):
        assert f_d == f_i == f_s and ids_d == ids_i == ids_s
        assert torch.equal(m_i, m_d), f"frame {f_d}: s=0 differs from dense"
        a, b = m_s > 0, m_d > 0
        ious.append((a & b).sum().item() / max((a | b).sum().item(), 1))
    assert_mask_not_degenerate(dense[len(frames)][2][0], "dense predictor output")
    print(f"\nVideoPredictor session, SMR s=0.95 vs dense mask IoU: min {min(ious):.4f}, mean "
          f"{sum(ious) / len(ious):.4f} over {len(ious)} outputs")
    assert min(ious) > 0.8


def test_smr_over_pooled_memory_attention(model, features):
    """pool+smr: frames kept whole go through EfficientTAM pooling. s = 0 is exactly pooling alone; at
    s = 0.95 old frames are read through their kept tokens and lose their pooled-key caches."""
    pooled_memory = pytest.importorskip("effsam2.accel.pooled_memory")
    from effsam2.accel.sparse_memory import make_sparse_backend
    from effsam2.accel.spec import AccelSpec

    # the spec at s = 0 is the pooled backend itself; the SMR class at s = 0 must compute the same
    assert isinstance(make_sparse_backend(AccelSpec.parse("pool+smr", smr_sparsity=0.0)),
                      pooled_memory.PooledMemoryBackend)
    backend = SparseMemoryBackend(TopKSaliency(0.0), inner=pooled_memory.PooledMemoryBackend(window=2))
    _, pooled = track(model, features, pooled_memory.PooledMemoryBackend(window=2), objects=("a",))
    _, identity = track(model, features, backend, objects=("a",))
    for t, (ours, ref) in enumerate(zip(identity["a"], pooled["a"])):
        assert torch.equal(ours.entry.pred_masks, ref.entry.pred_masks), f"frame {t}: s=0 differs from pooling"
        assert torch.equal(ours.entry.obj_ptr, ref.entry.obj_ptr)

    sparse = make_sparse_backend(AccelSpec.parse("pool+smr", smr_sparsity=0.95))
    memories, steps = track(model, features, sparse, objects=("a",))
    ious = []
    for ours, ref in zip(steps["a"], pooled["a"]):
        a, b = ours.high_res_masks > 0, ref.high_res_masks > 0
        ious.append((a & b).sum().item() / max((a | b).sum().item(), 1))
    print(f"\npool+smr s=0.95 vs pool: mask IoU per frame {[round(i, 4) for i in ious]}")
    assert min(ious) > 0.8
    bank = memories["a"].non_cond
    for f in (1, 2, 3, 5):  # read sparse: compacted, only the SMR pattern left in the cache
        assert bank[f].token_index is not None and list(bank[f].backend_cache) == [CACHE_KEY]
