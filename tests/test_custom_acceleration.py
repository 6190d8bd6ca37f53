"""Accelerations are open: a memory backend and a frame encoder written here, outside the package, plug into
``build_model`` and run through the ``VideoPredictor`` unchanged; at their identity settings they compute
exactly what dense computes, and what they keep per video lives in the session, not on the model. Declared
through ``effsam2.accel.plugins``, they get a name with a checked setting, on the command line too."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import effsam2
import effsam2.registry
from effsam2.accel.plugins import Acceleration, register_acceleration, unregister_acceleration
from effsam2.accel.spec import AccelSpec
from effsam2.cli import main
from effsam2.errors import Effsam2Error
from effsam2.modeling.frame_encoder import DenseFrameEncoder
from effsam2.modeling.memory_attention import DenseMemoryBackend
from effsam2.predictor.video import VideoPredictor
from tests.helpers.davis import first_frames


class NewestFramesOnly(DenseMemoryBackend):
    """Cross-attend to the prompted frames and only the ``keep`` newest tracked frames (all: dense)."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.frames_read = 0

    def cross_attend(self, layer_idx, attn, q, table, memory):
        frames = [f for f in memory.frames if f.is_cond or f.t_pos > memory.newest_t_pos - self.keep]
        self.frames_read += len(frames)
        return super().cross_attend(layer_idx, attn, q, table, dataclasses.replace(memory, frames=frames))

    def __repr__(self) -> str:
        return f"newest@{self.keep}"


class SkipState:
    """One session's evidence: the last encoded image and its features."""

    def __init__(self) -> None:
        self.image = self.features = None
        self.skipped = 0

    def reset(self) -> None:
        self.image = self.features = None

    def observe(self, outputs) -> None:
        pass


class SkipStillFrames(DenseFrameEncoder):
    """Reuse the last frame's features when the image changed by at most ``threshold`` (mean |diff|)."""

    routes = True

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def new_router(self) -> SkipState:
        return SkipState()

    def encode(self, model, images, router, *, prompted=False):
        still = router.image is not None and (images - router.image).abs().mean() <= self.threshold
        if still and not prompted:
            router.skipped += 1
            return router.features, None
        router.image, router.features = images, model.encode_image(images)
        return router.features, None

    def __repr__(self) -> str:
        return f"skip@{self.threshold:g}"


class BlurredFrames(DenseFrameEncoder):
    """No router at all: every frame box-blurred over ``k`` x ``k`` pixels before the encoder (1: dense)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def encode(self, model, images, router=None, *, prompted=False):
        if self.k > 1:
            images = torch.nn.functional.avg_pool2d(images, self.k, stride=1, padding=self.k // 2,
                                                    count_include_pad=False)
        return model.encode_image(images), None


@pytest.fixture(scope="module")
def cows(davis_dir):
    return first_frames(davis_dir, "cows", 9)


def track(model, frames, mask):
    predictor = VideoPredictor(model)
    state = predictor.init_state(frames)
    predictor.add_new_mask(state, 0, 1, mask)
    logits = [m[0, 0].clone() for _, _, m in predictor.propagate_in_video(state)]
    return logits, state


@pytest.fixture(scope="module")
def dense(cows):
    logits, _ = track(effsam2.build_model(accel="dense"), *cows)
    for m in logits[1:]:
        assert 0.02 < (m > 0).float().mean() < 0.9  # the shipped model tracks the cow: not degenerate
    return logits


def test_a_memory_backend_of_our_own_is_dense_at_its_identity_and_changes_the_result_below_it(cows, dense):
    num_maskmem = effsam2.registry.get_config("default").tracker.num_maskmem
    everything = NewestFramesOnly(keep=num_maskmem)
    model = effsam2.build_model(accel="dense", memory_backend=everything)
    assert model.memory_attention.backend is everything and "newest@" in model.accel_label
    same, _ = track(model, *cows)
    assert everything.frames_read > 0
    assert all(torch.equal(a, b) for a, b in zip(same, dense))
    newest = NewestFramesOnly(keep=1)
    fewer, _ = track(effsam2.build_model(accel="dense", memory_backend=newest), *cows)
    assert newest.frames_read < everything.frames_read
    assert any(not torch.equal(a, b) for a, b in zip(fewer, dense))


def test_a_frame_encoder_without_a_router_is_the_one_that_runs(cows, dense):
    same, state = track(effsam2.build_model(accel="dense", frame_encoder=BlurredFrames(1)), *cows)
    assert state.router is None and all(torch.equal(a, b) for a, b in zip(same, dense))
    blurred, _ = track(effsam2.build_model(accel="dense", frame_encoder=BlurredFrames(9)), *cows)
    assert any(not torch.equal(a, b) for a, b in zip(blurred, dense))  # the blurred frames were encoded


def test_a_frame_encoder_of_our_own_keeps_its_state_in_the_session(cows, dense):
    model = effsam2.build_model(accel="dense", frame_encoder=SkipStillFrames(threshold=0.0))
    same, state = track(model, *cows)  # real frames always change: nothing is skipped, exactly dense
    assert state.router.skipped == 0 and all(torch.equal(a, b) for a, b in zip(same, dense))
    frames, mask = cows
    lazy = effsam2.build_model(accel="dense", frame_encoder=SkipStillFrames(threshold=1e9))
    _, state = track(lazy, [frames[0]] * len(frames), mask)
    moving, other = track(lazy, frames, mask)
    # every propagated frame but the first of each propagation reuses features; each session counts its own
    assert state.router.skipped == other.router.skipped == len(frames) - 2
    assert state.router is not other.router
    for m in moving[1:]:
        assert 0.0 < (m > 0).float().mean() < 0.9


def check_frame_count(value):
    if value is None or value < 1 or value != int(value):
        raise Effsam2Error(f"newest@N needs a whole number of frames N >= 1, got {value}")


@pytest.fixture
def declared():
    made = []

    def newest(value):
        made.append(NewestFramesOnly(int(value)))
        return made[-1]

    register_acceleration(Acceleration("newest", "read only the N newest tracked memory frames",
                                       make_memory_backend=newest, check_setting=check_frame_count))
    register_acceleration(Acceleration("skipstill", "reuse the features of still frames",
                                       make_frame_encoder=lambda value, config: SkipStillFrames(value or 0.0)))
    yield made
    unregister_acceleration("newest")
    unregister_acceleration("skipstill")


def test_a_declared_acceleration_is_a_name_with_a_checked_setting(declared, cows, dense):
    spec = AccelSpec.parse("newest@7+skipstill")
    assert spec.label == "newest+skipstill" and spec.description == "newest@7+skipstill" and not spec.is_dense
    for bad, why in (("newest@0", "whole number of frames"), ("newest@x", "must be a finite number"),
                     ("newest@nan", "finite"),
                     ("pool+newest@2", "both replace the memory backend"), ("swr+skipstill", "both replace"),
                     ("skipstill@1", "takes no setting"), ("nothing", "unknown acceleration 'nothing'.*newest")):
        with pytest.raises(Effsam2Error, match=why):
            AccelSpec.parse(bad)
    model = effsam2.build_model(accel="newest@7")
    assert model.memory_attention.backend is declared[-1] and model.accel_label == "newest@7"
    same, _ = track(model, *cows)
    assert all(torch.equal(a, b) for a, b in zip(same, dense))  # 7 >= num_maskmem: every frame, exactly dense


def test_a_declared_acceleration_runs_from_the_command_line(declared, davis_dir, tmp_path, capsys):
    frames = davis_dir / "JPEGImages" / "480p" / "cows"
    clip = tmp_path / "clip"
    clip.mkdir()
    for p in sorted(frames.glob("*.jpg"))[:4]:
        (clip / p.name).write_bytes(p.read_bytes())
    mask = davis_dir / "Annotations" / "480p" / "cows" / "00000.png"
    out = tmp_path / "out"
    assert main(["track", str(clip), "--mask", str(mask), "--accel", "newest@1", "--out", str(out),
                 "--no-progress"]) == 0
    assert len(list((out / "masks").rglob("*.png"))) == 4
    assert declared and declared[-1].keep == 1 and declared[-1].frames_read > 0  # the one the command asked for
    assert main(["track", str(clip), "--mask", str(mask), "--accel", "newest@0", "--out", str(tmp_path / "o2")]) == 2
    assert "newest@N needs a whole number" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_an_installed_package_declares_its_acceleration_through_an_entry_point(tmp_path, monkeypatch):
    from effsam2.accel.plugins import get_acceleration, load_declared_accelerations

    (tmp_path / "toy_accel_plugin.py").write_text(
        "from effsam2.accel.plugins import Acceleration, register_acceleration\n"
        "from effsam2.modeling.memory_attention import DenseMemoryBackend\n"
        "register_acceleration(Acceleration('toyep', 'dense under another name',\n"
        "                                   make_memory_backend=lambda value: DenseMemoryBackend()))\n")
    info = tmp_path / "toy_accel_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-accel-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[effsam2.accelerations]\ntoyep = toy_accel_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert "toyep" in load_declared_accelerations()
        assert get_acceleration("toyep") is not None and AccelSpec.parse("toyep").label == "toyep"
    finally:
        unregister_acceleration("toyep")
    (info / "entry_points.txt").write_text("[effsam2.accelerations]\nbroken = no_such_module_here\n")
    with pytest.raises(Effsam2Error, match="cannot load the acceleration plugin 'broken'"):
        load_declared_accelerations()


def test_builtin_accelerations_declare_themselves():
    """The built-ins are declared in their own modules; the spec parser uses exactly those declarations."""
    from effsam2.accel import plugins, pooled_memory, sparse_memory, spec, swr

    assert set(spec.KNOWN) == set(plugins.BUILTIN_NAMES)
    assert spec.BUILTINS == {"pool": pooled_memory.POOL, "pool-sdpa": pooled_memory.POOL_SDPA,
                             "smr": sparse_memory.SMR, "swr": swr.SWR}
    for text, value, check in (("pool@3", 3, pooled_memory.check_pool_window),
                               ("smr@1.5", 1.5, sparse_memory.check_sparsity),
                               ("smr:best", "best", sparse_memory.check_policy)):
        with pytest.raises(Effsam2Error) as from_parse:
            AccelSpec.parse(text)
        with pytest.raises(Effsam2Error) as from_check:
            check(value)
        assert str(from_parse.value) == str(from_check.value)
    with pytest.raises(Effsam2Error, match="fraction"):
        AccelSpec.parse("swr", swr_fraction=1.5)
    assert AccelSpec.parse("pool@4+smr@0.5:random").description == "pool@4+smr@0.5:random"
