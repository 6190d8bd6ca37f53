"""Peak memory of one benchmark row, without psutil.

CPU: the kernel's resident-set high-water mark (``VmHWM`` in ``/proc/self/status``), reset before each
row by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0), so each row reports its own peak of the
whole process (interpreter, torch, frames, model weights, activations). Where the reset is not possible
the lifetime peak from ``resource.getrusage`` is reported and labelled as such.
CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors only).
"""

from __future__ import annotations

import gc
import sys

import torch

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _status_kb(field: str) -> float | None:
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def _lifetime_max_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


class PeakMemory:
    """``start()`` before a row, ``stop()`` after it: sets ``before_mb``, ``peak_mb`` and ``kind``."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.before_mb: float | None = None
        self.peak_mb: float | None = None
        self.kind = ""
        self._resettable = False

    def start(self) -> None:
        gc.collect()  # drop the previous row's model before measuring this one
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before_mb = torch.cuda.memory_allocated(self.device) / 2**20
            self.kind = "cuda_max_allocated"
            return
        try:
            with open(_CLEAR_REFS, "w") as f:
                f.write("5")
            self._resettable = True
        except OSError:
            self._resettable = False
        rss = _status_kb("VmRSS")
        self.before_mb = None if rss is None else rss / 1024
        self.kind = "rss_peak" if self._resettable else "rss_peak_process_lifetime"

    def stop(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            return
        hwm = _status_kb("VmHWM") if self._resettable else None
        self.peak_mb = hwm / 1024 if hwm is not None else _lifetime_max_rss_mb()
