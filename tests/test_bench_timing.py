"""Timing and recording logic of the benchmark, driven by a fake clock (no model, no speed assertions)."""

from __future__ import annotations

import pytest

from effsam2.bench.records import BenchRecord, attach_speedups, mask_iou, summarise_timings
from effsam2.bench.session import readable_horizon, spread_clicks, store_entry
from effsam2.bench.timer import FRAME, FRAME_CPU, FrameTimer, mean_per_frame, median_of_repeats
from effsam2.configs import TrackerConfig
from effsam2.modeling.tracker import ObjectMemory


class FakeClock:
    """A clock that only moves when told to; logs every read (and every sync) in ``events``."""

    def __init__(self) -> None:
        self.now = 0.0
        self.events: list[str] = []

    def __call__(self) -> float:
        self.events.append("clock")
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds

    def sync(self) -> None:
        self.events.append("sync")


def test_nested_sections_record_inclusive_times_per_frame():
    clock = FakeClock()
    timer = FrameTimer(clock=clock)
    with timer.frame():
        clock.tick(1)
        with timer.section("a"):
            clock.tick(2)
            with timer.section("b"):
                clock.tick(3)
            with timer.section("a"):  # re-entered inside itself: only the outer entry counts
                clock.tick(4)
        with timer.section("b"):
            clock.tick(5)
    with timer.frame():
        clock.tick(7)
    assert timer.frames == [{FRAME: 15.0, "a": 9.0, "b": 8.0}, {FRAME: 7.0}]


def test_sync_runs_before_every_clock_read():
    clock = FakeClock()
    timer = FrameTimer(clock=clock, sync=clock.sync)
    with timer.frame(), timer.section("a"):
        clock.tick(1)
    assert clock.events == ["sync", "clock"] * 4  # frame start, a start, a end, frame end


def test_sections_outside_frames_and_failed_frames_are_not_recorded():
    clock = FakeClock()
    timer = FrameTimer(clock=clock)
    with timer.section("setup"):
        clock.tick(100)
    with pytest.raises(RuntimeError, match="boom"), timer.frame():
        clock.tick(1)
        raise RuntimeError("boom")
    with timer.frame():
        clock.tick(2)
    assert timer.frames == [{FRAME: 2.0}]
    with pytest.raises(RuntimeError, match="nest"), timer.frame(), timer.frame():
        pass


def test_cpu_clock_adds_the_frame_cpu_time():
    wall, cpu = FakeClock(), FakeClock()
    timer = FrameTimer(clock=wall, cpu_clock=cpu)
    with timer.frame():
        wall.tick(1.0)
        cpu.tick(1.8)  # two threads busy most of the second
    assert timer.frames == [{FRAME: 1.0, FRAME_CPU: 1.8}]


def test_warmup_frames_are_excluded_and_missing_sections_count_zero():
    frames = [{FRAME: 10.0, "a": 9.0}, {FRAME: 2.0, "a": 1.0, "b": 1.0}, {FRAME: 4.0, "a": 3.0}]
    assert mean_per_frame(frames, warmup=1) == {FRAME: 3.0, "a": 2.0, "b": 0.5}
    assert mean_per_frame(frames, warmup=0)[FRAME] == pytest.approx(16 / 3)
    with pytest.raises(ValueError, match="no frame left"):
        mean_per_frame(frames, warmup=3)


def test_median_of_repeats_per_section():
    repeats = [{FRAME: 1.0, "a": 0.5}, {FRAME: 5.0, "a": 4.0}, {FRAME: 2.0}]
    assert median_of_repeats(repeats) == {FRAME: 2.0, "a": 0.5}  # "a" missing in one repeat counts 0
    assert median_of_repeats([{FRAME: 1.0}, {FRAME: 3.0}]) == {FRAME: 2.0}


def _record(accel="dense", size=512, frame_ms=100.0, error=None, implementation="effsam2", **ms):
    r = BenchRecord(model="m", accel=accel, image_size=size, device="cpu", dtype="fp32", objects=1, frames=4,
                    warmup=1, repeats=3, implementation=implementation, error=error)
    if error is None:
        r.ms = {FRAME: frame_ms, **ms}
    return r


def test_summarise_timings_converts_to_ms_and_fps():
    r = _record()
    per_repeat = [{FRAME: 0.2, "image_encoder": 0.1, FRAME_CPU: 0.3}, {FRAME: 0.4, "image_encoder": 0.1,
                                                                       FRAME_CPU: 0.7}]
    summarise_timings(r, per_repeat)
    assert r.ms[FRAME] == pytest.approx(300.0)
    assert r.ms["image_encoder"] == pytest.approx(100.0)
    assert r.ms["memory_attention"] is None  # never timed: not measured, not zero
    assert r.ms_min[FRAME] == pytest.approx(200.0) and r.ms_min["memory_attention"] is None
    assert r.fps == pytest.approx(1000 / 300)
    assert r.frame_ms_repeats == pytest.approx([200.0, 400.0])
    assert r.cpu_ms_frame == pytest.approx(500.0)


def test_speedups_against_the_matching_dense_row():
    dense = _record(frame_ms=100.0, image_encoder=60.0, memory_attention=30.0)
    smr = _record("smr", frame_ms=50.0, image_encoder=60.0, memory_attention=6.0)
    official = _record("official", frame_ms=125.0, image_encoder=50.0, implementation="official")
    other_size = _record("smr", size=1024, frame_ms=10.0)  # no dense row at 1024
    broken = _record("swr", error="swr unavailable")
    records = [dense, smr, official, other_size, broken]
    attach_speedups(records)
    assert dense.speedup_vs_dense == 1.0
    assert smr.speedup_vs_dense == pytest.approx(2.0)
    assert smr.speedup_components["memory_attention"] == pytest.approx(5.0)
    assert smr.speedup_components["image_encoder"] == pytest.approx(1.0)
    assert smr.speedup_components["memory_encoder"] is None  # not measured on either side
    assert official.speedup_vs_dense == pytest.approx(0.8)  # slower than our dense
    assert other_size.speedup_vs_dense is None
    assert broken.speedup_vs_dense is None
    # a failed dense row is no baseline
    failed = [_record(error="boom"), _record("smr", frame_ms=50.0)]
    attach_speedups(failed)
    assert failed[1].speedup_vs_dense is None


def test_record_has_the_documented_fields():
    d = _record().to_dict()
    for key in ("model", "accel", "image_size", "device", "dtype", "objects", "frames", "ms", "fps",
                "peak_mem_mb", "speedup_vs_dense", "machine", "error"):
        assert key in d


def test_mask_iou():
    import torch

    a = torch.tensor([[True, True], [False, False]])
    b = torch.tensor([[True, False], [True, False]])
    assert mask_iou(a, b) == pytest.approx(1 / 3)
    assert mask_iou(a, a) == 1.0
    assert mask_iou(torch.zeros(2, 2, dtype=torch.bool), torch.zeros(2, 2, dtype=torch.bool)) == 1.0
    assert mask_iou(a, torch.ones(3, 2, dtype=torch.bool)) is None


def _frames_read(t: int, num_maskmem: int, stride: int, max_ptrs: int) -> set[int]:
    """Past frames a forward step at ``t`` reads (official rule, written out independently)."""
    read = {t - 1}
    for t_rel in range(2, num_maskmem):
        read.add(((t - 2) // stride) * stride - (t_rel - 2) * stride)
    read.update(t - d for d in range(1, max_ptrs))
    return {f for f in read if f >= 0}


@pytest.mark.parametrize("stride", [1, 3, 5])
def test_bounded_memory_keeps_every_frame_the_tracker_reads(stride):
    tc = TrackerConfig(memory_temporal_stride=stride)
    horizon = readable_horizon(tc)
    memory = ObjectMemory()
    deepest = 0
    for t in range(80):
        needed = _frames_read(t, tc.num_maskmem, stride, tc.max_obj_ptrs_in_encoder) - {0}
        assert needed <= set(memory.non_cond), f"frame {t} needs {sorted(needed - set(memory.non_cond))}"
        deepest = max(deepest, max((t - f for f in needed), default=0))
        store_entry(memory, t, entry=object(), prompted=t == 0, horizon=horizon)
    assert set(memory.cond) == {0}
    assert deepest == horizon  # the horizon is tight: some frame reads exactly that far back
    assert len(memory.non_cond) == horizon  # bounded: only what the next frame can read is kept


def test_clicks_are_distinct_and_inside_the_image():
    prompts = spread_clicks(5, 256)
    coords = [tuple(p.coords[0, 0].tolist()) for p in prompts]
    assert len(set(coords)) == 5
    assert all(0 < x < 256 and 0 < y < 256 for x, y in coords)
    assert all(p.labels.item() == 1 for p in prompts)


class FakeRouter:
    def __init__(self, log):
        self.log = log

    def reset(self):
        self.log.append("reset")

    def observe(self, outputs):
        self.log.append(("observe", tuple(outputs)))


class FakeSelection:
    def __init__(self, fraction, reason):
        self.fraction, self.reason = fraction, reason


class FakeRouting:
    """Stands in for effsam2.accel.swr.WindowRouting: all windows on prompted frames, a quarter otherwise."""

    def __init__(self):
        self.log = []

    def new_router(self):
        return FakeRouter(self.log)

    def encode(self, model, image, router, *, prompted=False):
        self.log.append(("encode", prompted))
        return "features", FakeSelection(1.0 if prompted else 0.25, "all" if prompted else "mask")


def test_routed_encoder_routes_from_the_previous_frame_and_resets_per_pass():
    from effsam2.bench.session import RoutedPassEncoder

    routing = FakeRouting()
    encoder = RoutedPassEncoder(model=None, routing=routing)
    assert encoder.wants_token_attention
    for _ in range(2):  # two passes
        assert encoder.encode(0, "img0", None) == "features"
        encoder.encode(1, "img1", ["out0"])
        encoder.encode(2, "img2", ["out1"])
    pass_log = ["reset", ("encode", True), ("observe", ("out0",)), ("encode", False), ("observe", ("out1",)),
                ("encode", False)]
    assert routing.log == pass_log * 2
    assert encoder.stats(warmup=1) == {"swr_window_fraction": 0.25, "swr_reasons": ["mask"]}
    assert encoder.stats(warmup=0)["swr_window_fraction"] == pytest.approx(0.5)


def test_runner_interleaves_timed_frames_and_drops_the_warmup_pass(tmp_path):
    """Each row runs one whole warm-up pass; timed passes advance frame by frame, the order alternating."""
    import torch

    from effsam2.accel.spec import AccelSpec
    from effsam2.bench.runner import BenchOptions, Clip, Prepared, Row, Runner
    from effsam2.bench.session import PassResult

    calls = []

    class FakeRunner(Runner):
        def _prepare(self, row, clip, record):
            def start_pass(r):
                seconds = 100.0 if r == 0 else (1.0 if record.accel == "dense" else 0.5) * r
                frames = []
                for t in range(3):
                    calls.append((record.accel, r, t))
                    frames.append({FRAME: 50.0} if t == 0 else {FRAME: seconds, "image_encoder": seconds / 2})
                    yield
                return PassResult(frames, torch.ones(3, 1, 2, 2, dtype=torch.bool), torch.ones(3, 1))
            return Prepared(record, start_pass, dict)

    options = BenchOptions(models=["sam2.1_hiera_t"], video=tmp_path, accels=[AccelSpec.parse("smr")],
                           frames=3, warmup=1, repeats=2)
    runner = FakeRunner(options, log=lambda line: None)
    rows = [Row("sam2.1_hiera_t", 256, 1, "steps", spec) for spec in options.accel_list()]
    records = runner._group(rows, Clip(rgb=[], images=[], state={}, weights="none"))
    warmups = [("dense", 0, t) for t in range(3)] + [("smr", 0, t) for t in range(3)]
    pass1 = [("dense", 1, 0), ("smr", 1, 0), ("smr", 1, 1), ("dense", 1, 1), ("dense", 1, 2), ("smr", 1, 2)]
    pass2 = [("smr", 2, 0), ("dense", 2, 0), ("dense", 2, 1), ("smr", 2, 1), ("smr", 2, 2), ("dense", 2, 2)]
    assert calls == warmups + pass1 + pass2
    dense, smr = records
    assert dense.ms[FRAME] == pytest.approx(1500.0)  # median of passes 1, 2 (1 s, 2 s); warm-up frame dropped
    assert smr.ms[FRAME] == pytest.approx(750.0)
    assert smr.ms["image_encoder"] == pytest.approx(375.0)
    assert dense.frame_ms_repeats == pytest.approx([1000.0, 2000.0])
    assert smr.speedup_vs_dense is None  # attached by run(), over all groups
    assert dense.peak_mem_mb is not None and dense.mask_iou_vs_dense == 1.0
