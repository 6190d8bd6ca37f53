"""Benchmark records (one per measured configuration), speed-ups against the dense row, machine info.

A record is plain data that serialises to JSON as is. Times are milliseconds per frame: for each
section the median, over repeats, of the mean over the measured (non-warm-up) frames of one pass.
Components are summed over the objects of a frame, so they add up to the frame time minus bookkeeping.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from effsam2.bench.timer import FRAME, FRAME_CPU, TRACK_STEP, median_of_repeats
from effsam2.timing import IMAGE_ENCODER, MASK_DECODER, MEMORY_ATTENTION, MEMORY_ENCODER

# Columns of the ``ms`` dict, in report order (the four components, then the wholes).
COMPONENTS = (IMAGE_ENCODER, MEMORY_ATTENTION, MEMORY_ENCODER, MASK_DECODER)
MS_KEYS = (*COMPONENTS, TRACK_STEP, FRAME)

OURS = "effsam2"
OFFICIAL = "sam2==1.1.0 (official)"


@dataclass
class BenchRecord:
    """One row of the benchmark: a model x acceleration x image size x object count x dtype on a device."""

    model: str
    accel: str  # canonical label (``dense``, ``pool``, ``swr+smr``...), or ``official`` for the reference row
    image_size: int
    device: str
    dtype: str
    objects: int
    frames: int  # frames per pass (the first ``warmup`` of each pass are not measured)
    warmup: int
    repeats: int
    compile: bool = False
    loop: str = "steps"  # "steps": the model functions in our loop; "predictor": the VideoPredictor API
    implementation: str = OURS
    accel_options: dict[str, Any] = field(default_factory=dict)
    accel_stats: dict[str, Any] = field(default_factory=dict)  # what the acceleration did (e.g. windows routed)
    weights: str = ""  # checkpoint path, or how the random weights were made
    video: str = ""
    ms: dict[str, float | None] = field(default_factory=dict)  # MS_KEYS -> ms per frame (None: not measured)
    ms_min: dict[str, float | None] = field(default_factory=dict)  # the fastest pass instead of the median
    frame_ms_repeats: list[float] = field(default_factory=list)  # per-pass frame time (spread of the median)
    cpu_ms_frame: float | None = None  # process CPU time per frame, all threads (robust to a busy machine)
    fps: float | None = None
    peak_mem_mb: float | None = None  # process peak running this row alone (see effsam2.bench.memory)
    base_mem_mb: float | None = None  # before any model of the group: runtime, frames, shared weights
    peak_mem_kind: str = ""  # rss | cuda_allocated | rss_process_lifetime
    speedup_vs_dense: float | None = None  # dense frame time / this row's frame time (same model, size...)
    speedup_components: dict[str, float | None] = field(default_factory=dict)
    mask_fg_fraction: float | None = None  # mean fraction of positive low-res mask logits (tracked frames)
    object_score_mean: float | None = None  # mean object-score logit (tracked frames; > 0: object present)
    mask_iou_vs_dense: float | None = None  # IoU of binarised masks with the dense row's
    bank_kb_per_object: float | None = None  # memory bank at the end of a pass, per object (see session.py)
    error: str | None = None  # why the row has no numbers (e.g. acceleration not available)
    machine: dict[str, Any] = field(default_factory=dict)

    @property
    def baseline_key(self) -> tuple:
        """Rows sharing this key are compared with the same dense baseline."""
        return (self.model, self.image_size, self.objects, self.dtype, self.device, self.compile, self.loop)

    @property
    def is_baseline(self) -> bool:
        return self.implementation == OURS and self.accel == "dense"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise_timings(record: BenchRecord, per_repeat: list[dict[str, float]]) -> None:
    """Fill ``ms``, ``cpu_ms_frame``, ``frame_ms_repeats`` and ``fps`` from per-repeat means (seconds)."""
    median = median_of_repeats(per_repeat)
    record.ms = {k: (median[k] * 1e3 if k in median else None) for k in MS_KEYS}
    # interference from other processes only adds time: the minimum is the least disturbed estimate
    record.ms_min = {k: (min(r.get(k, 0.0) for r in per_repeat) * 1e3 if k in median else None) for k in MS_KEYS}
    record.cpu_ms_frame = median[FRAME_CPU] * 1e3 if FRAME_CPU in median else None
    record.frame_ms_repeats = [r[FRAME] * 1e3 for r in per_repeat]
    frame_ms = record.ms[FRAME]
    record.fps = 1e3 / frame_ms if frame_ms else None


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num and den else None


def attach_speedups(records: list[BenchRecord]) -> None:
    """Set ``speedup_vs_dense`` (frame) and ``speedup_components`` of each row from its dense baseline.

    A ratio > 1 means the row is faster than dense. Rows without a measured baseline get None.
    """
    baselines = {r.baseline_key: r for r in records if r.is_baseline and r.error is None}
    for r in records:
        base = baselines.get(r.baseline_key)
        if base is None or r.error is not None:
            r.speedup_vs_dense, r.speedup_components = None, {}
            continue
        r.speedup_vs_dense = _ratio(base.ms.get(FRAME), r.ms.get(FRAME))
        r.speedup_components = {k: _ratio(base.ms.get(k), r.ms.get(k)) for k in COMPONENTS}


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """IoU of two boolean mask stacks of the same shape (1.0 when both are empty); None if shapes differ."""
    if a.shape != b.shape:
        return None
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def machine_info(device: str) -> dict[str, Any]:
    """What the numbers were measured on (CPU model, threads, load, torch, GPU)."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": None,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def load_average() -> dict[str, float]:
    """The 1-minute load average now (other processes on the machine skew CPU timings: say how busy it was)."""
    return {"load_avg_1min": round(os.getloadavg()[0], 2)} if hasattr(os, "getloadavg") else {}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
