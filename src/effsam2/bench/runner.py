"""Run the benchmark grid: models x image sizes x object counts x accelerations (+ the official row).

Every model's rows share one set of weights (a checkpoint, or tracking-ready random weights) and one set
of decoded frames; the dense row of each (model, size, objects) is measured first as the baseline.
An acceleration the model cannot run (SWR without a Hiera trunk) gives a row with ``error`` set (and one
line on stderr) instead of numbers.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from effsam2.accel.spec import AccelSpec
from effsam2.bench.frames import decode_video, model_inputs
from effsam2.bench.memory import PeakMemory, current_mb
from effsam2.bench.official import OfficialTracker, iter_official_pass
from effsam2.bench.predictor_loop import iter_predictor_pass
from effsam2.bench.records import (
    OFFICIAL,
    OURS,
    BenchRecord,
    attach_speedups,
    load_average,
    machine_info,
    mask_iou,
    summarise_timings,
)
from effsam2.bench.session import (
    DensePassEncoder,
    PassEncoder,
    PassResult,
    PassSteps,
    RoutedPassEncoder,
    drain,
    iter_pass,
    spread_clicks,
    window_stats,
)
from effsam2.bench.timer import FrameTimer, mean_per_frame
from effsam2.bench.weights import reference_state
from effsam2.build import build_model
from effsam2.errors import ConfigError, Effsam2Error
from effsam2.modeling.sam2_model import SAM2Model
from effsam2.registry import get_config

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class AccelUnavailable(Effsam2Error):
    """An acceleration whose implementation is not in this build."""


@dataclass
class BenchOptions:
    """Everything one ``effsam2 bench`` run measures (validated by the CLI)."""

    models: list[str]
    video: Path
    image_sizes: list[int | None] = field(default_factory=lambda: [None])  # None: the model's own size
    accels: list[AccelSpec] = field(default_factory=lambda: [AccelSpec()])
    objects: list[int] = field(default_factory=lambda: [1])
    frames: int = 8
    warmup: int = 1
    repeats: int = 3
    dtype: str = "fp32"
    compile: bool = False
    device: str = "cpu"
    checkpoints: dict[str, str] = field(default_factory=dict)
    loops: list[str] = field(default_factory=lambda: ["steps"])
    against_official: bool = False
    seed: int = 0

    def accel_list(self) -> list[AccelSpec]:
        """The requested accelerations with dense first (always measured: it is every row's baseline)."""
        rest = [s for s in self.accels if not s.is_dense]
        return [AccelSpec(), *dict.fromkeys(rest)]


def build_accel_model(name: str, image_size: int, spec: AccelSpec, state: dict,
                      device: torch.device) -> SAM2Model:
    """Our model with ``spec``'s accelerations and the shared weights, in eval mode on ``device``.

    A spec the model cannot run (SWR on a trunk without Hiera windows) is AccelUnavailable: the row is
    reported, not measured."""
    try:
        model = build_model(name, image_size=image_size, accel=spec)
    except ConfigError as err:
        raise AccelUnavailable(f"{spec.label} unavailable for {name}: {err}") from None
    model.load_state_dict(state, strict=True)
    model = model.to(device).eval()
    model.frame_encoder.to(device)  # SWR's shortcut lives outside the module tree
    return model


def make_frame_encoder(model: SAM2Model) -> PassEncoder:
    """The timed wrapper of the model's own frame encoder: dense, or SWR's routed one."""
    if not model.frame_encoder.routes:
        return DensePassEncoder(model)
    return RoutedPassEncoder(model, model.frame_encoder)


def compile_components(model: SAM2Model) -> None:
    """``torch.compile`` each component in place (the state dict and the module tree are unchanged)."""
    for module in (model.image_encoder, model.memory_attention, model.memory_encoder,
                   model.sam_prompt_encoder, model.sam_mask_decoder):
        module.compile()


def _sync_for(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _autocast_for(device: torch.device, dtype: str) -> Callable[[], contextlib.AbstractContextManager]:
    if dtype == "fp32":
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


@dataclass
class Row:
    """What one row measures."""

    model: str
    image_size: int
    objects: int
    loop: str  # "steps" (our loop over the model functions) or "predictor" (the VideoPredictor API)
    spec: AccelSpec | None  # None: the official row


@dataclass
class Clip:
    """Inputs shared by every row of one model and image size."""

    rgb: list  # (H, W, 3) uint8 frames
    images: list[torch.Tensor]  # (1, 3, S, S) model inputs on the device
    state: dict[str, torch.Tensor]  # the weights
    weights: str  # their description


@dataclass
class Prepared:
    """A row ready to measure: its record, a function starting one pass, and its encoder's report."""

    record: BenchRecord
    start_pass: Callable[[int], PassSteps]  # pass index -> a pass that yields after each frame
    stats: Callable[[], dict]
    passes: list[PassResult] = field(default_factory=list)


class Runner:
    """Measures the rows of :class:`BenchOptions`; ``log`` receives one line per row (stderr by default).

    Per group (model, image size, object count): each row is built and run once as a warm-up pass (its
    peak memory is measured there), then the timed passes run frame by frame interleaved across the rows,
    in alternating order (frame t of A B C, frame t+1 of C B A, ...), so that a change in machine load
    hits every row alike.
    """

    def __init__(self, options: BenchOptions, log: Callable[[str], None] | None = None) -> None:
        self.opt = options
        self.device = torch.device(options.device)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.machine = machine_info(options.device)

    def rows(self, name: str, size: int, objects: int) -> list[Row]:
        """Dense first in every loop, then the accelerations, then the official row."""
        rows = [Row(name, size, objects, loop, spec) for loop in self.opt.loops for spec in self.opt.accel_list()]
        if self.opt.against_official:
            rows.append(Row(name, size, objects, "steps", None))
        return rows

    def run(self) -> list[BenchRecord]:
        opt = self.opt
        rgb = decode_video(opt.video, opt.frames)
        records: list[BenchRecord] = []
        for name in opt.models:
            for size in opt.image_sizes:
                size = size or get_config(name).image_size
                state, weights = reference_state(name, size, opt.checkpoints.get(name), opt.seed)
                clip = Clip(rgb, [x.to(self.device) for x in model_inputs(rgb, size)], state, weights)
                for objects in opt.objects:
                    records.extend(self._group(self.rows(name, size, objects), clip))
        attach_speedups(records)
        return records

    def _group(self, rows: list[Row], clip: Clip) -> list[BenchRecord]:
        baseline_mb = current_mb(self.device)
        records, ready = [], []
        for row in rows:
            record = self._record(row, clip)
            records.append(record)
            mem = PeakMemory(self.device)
            mem.start()
            try:
                prepared = self._prepare(row, clip, record)
                with torch.inference_mode():
                    drain(prepared.start_pass(0))  # warm-up: first-call costs, compilation, allocator growth
            except AccelUnavailable as err:
                record.error = str(err)
                self.log(f"bench: {_describe(record)}: {err}")
                continue
            finally:
                mem.stop()
            record.peak_mem_mb, record.base_mem_mb = mem.peak_over(baseline_mb), baseline_mb
            record.peak_mem_kind = mem.kind
            ready.append(prepared)
        with torch.inference_mode():
            for r in range(self.opt.repeats):
                for prepared, result in zip(ready, interleave([p.start_pass(r + 1) for p in ready], r)):
                    prepared.passes.append(result)
        for prepared in ready:
            self._summarise(prepared)
        _compare_masks([(p.record, p.passes[-1].masks) for p in ready])
        return records

    def _record(self, row: Row, clip: Clip) -> BenchRecord:
        opt, spec = self.opt, row.spec
        return BenchRecord(
            model=row.model, accel="official" if spec is None else spec.short_label, image_size=row.image_size,
            device=opt.device, dtype=opt.dtype, objects=row.objects, frames=opt.frames, warmup=opt.warmup,
            repeats=opt.repeats, compile=opt.compile and spec is not None, loop=row.loop,
            implementation=OFFICIAL if spec is None else OURS,
            accel_options={} if spec is None else _options(spec), weights=clip.weights,
            video=Path(opt.video).name, machine=dict(self.machine, **load_average()))

    def _summarise(self, prepared: Prepared) -> None:
        record, passes = prepared.record, prepared.passes
        per_repeat = [mean_per_frame(p.frames, self.opt.warmup) for p in passes]
        summarise_timings(record, per_repeat)
        record.accel_stats = prepared.stats()
        last = passes[-1]
        tracked = slice(1, None) if last.scores.shape[0] > 1 else slice(None)
        record.mask_fg_fraction = last.masks[tracked].float().mean().item()
        record.object_score_mean = last.scores[tracked].mean().item()
        if last.bank_bytes_per_object is not None:
            record.bank_kb_per_object = last.bank_bytes_per_object / 1024
        self.log(f"bench: {_describe(record)} {record.dtype}: {record.ms['frame']:.1f} ms/frame "
                 f"({record.fps:.2f} FPS)")

    def _prepare(self, row: Row, clip: Clip, record: BenchRecord) -> Prepared:
        """Build what the row runs (raises AccelUnavailable when an acceleration is not in the build)."""
        prompts = spread_clicks(row.objects, row.image_size, self.device)
        context = _autocast_for(self.device, self.opt.dtype)
        if row.spec is None:
            try:
                tracker = OfficialTracker(get_config(row.model, row.image_size), clip.state, self.device)
            except Effsam2Error as err:
                raise AccelUnavailable(f"official row unavailable: {err}") from None
            return Prepared(record, lambda r: iter_official_pass(tracker, clip.images, prompts, self._timer(),
                                                                 context), dict)
        model = build_accel_model(row.model, row.image_size, row.spec, clip.state, self.device)
        if self.opt.compile:
            compile_components(model)
        if row.loop == "predictor":  # the VideoPredictor routes SWR models by itself
            prepared = Prepared(record, lambda r: iter_predictor_pass(model, clip.rgb, prompts, self._timer(),
                                                                      dtype=self.opt.dtype), dict)
            prepared.stats = lambda: window_stats(prepared.passes[-1].window_fractions, self.opt.warmup)
            return prepared
        encoder = make_frame_encoder(model)
        return Prepared(record, lambda r: iter_pass(model, clip.images, prompts, encoder, self._timer(), context),
                        lambda: encoder.stats(self.opt.warmup))

    def _timer(self) -> FrameTimer:
        return FrameTimer(sync=_sync_for(self.device), cpu_clock=time.process_time)


def interleave(passes: list[PassSteps], first_order: int = 0) -> list[PassResult]:
    """Advance every pass one frame at a time, alternating the order on each frame; their results.

    All passes of a group have the same number of frames; ``first_order`` odd starts with the reverse order.
    """
    results: list[PassResult | None] = [None] * len(passes)
    live = list(range(len(passes)))
    turn = first_order
    while live:
        for i in (live if turn % 2 == 0 else live[::-1]):
            try:
                next(passes[i])
            except StopIteration as done:
                results[i] = done.value
        live = [i for i in live if results[i] is None]
        turn += 1
    return results


def _describe(record: BenchRecord) -> str:
    return f"{record.model} {record.accel} {record.image_size}px {record.objects} obj ({record.loop} loop)"


def _compare_masks(group: list[tuple[BenchRecord, torch.Tensor]]) -> None:
    """Set each row's ``mask_iou_vs_dense``: against the dense row of the steps loop (1.0: same masks)."""
    dense = next((masks for r, masks in sorted(group, key=lambda g: g[0].loop != "steps") if r.is_baseline),
                 None)
    if dense is None:
        return
    for record, masks in group:
        record.mask_iou_vs_dense = mask_iou(masks, dense)


def _options(spec: AccelSpec) -> dict:
    """The settings that matter for the acceleration(s) of ``spec`` (none for dense)."""
    out: dict = {}
    if spec.pool is not None:
        out["pool_window"] = spec.pool_window
    if spec.smr:
        out["smr_sparsity"] = spec.smr_sparsity
    if spec.swr:
        out.update(swr_shortcut=spec.swr_shortcut, swr_fraction=spec.swr_fraction)
    return out
