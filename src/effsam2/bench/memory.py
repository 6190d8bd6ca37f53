"""Peak memory of one benchmark row, without psutil.

A row's model is built and run for one warm-up pass inside a :class:`PeakMemory` window; the row's peak
is the growth over the window (``peak - start``) added to the process baseline measured before any row
of the group was built, i.e. what the process would peak at running that configuration alone.

CPU: the kernel's resident-set high-water mark (``VmHWM`` in ``/proc/self/status``), reset at the start of
the window by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0). Free heap memory is handed back
to the kernel first (glibc ``malloc_trim``) so that memory freed by earlier rows is not silently reused
and hidden from the growth. Where the reset is impossible, the lifetime peak (``resource.getrusage``) is
reported as is and labelled so.
CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors only).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys

import torch

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _status_mb(field: str) -> float | None:
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def _trim_heap() -> None:
    """Return free heap pages to the kernel (glibc only; a no-op elsewhere)."""
    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def _lifetime_max_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def current_mb(device: torch.device | str) -> float | None:
    """Memory in use now, after collecting garbage: resident set (CPU) or allocated tensors (CUDA)."""
    device = torch.device(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.memory_allocated(device) / 2**20
    _trim_heap()
    return _status_mb("VmRSS")


class PeakMemory:
    """``start()`` / ``stop()`` around a piece of work: sets ``start_mb``, ``peak_mb`` and ``kind``.

    ``kind`` is ``rss`` or ``cuda_allocated`` when the peak belongs to the window, and
    ``rss_process_lifetime`` when it could not be reset (then only ``peak_mb`` is meaningful).
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.start_mb: float | None = None
        self.peak_mb: float | None = None
        self.kind = ""

    def start(self) -> None:
        self.start_mb = current_mb(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "cuda_allocated"
            return
        try:
            with open(_CLEAR_REFS, "w") as f:
                f.write("5")
            self.kind = "rss"
        except OSError:
            self.kind = "rss_process_lifetime"

    def stop(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self.kind == "rss":
            self.peak_mb = _status_mb("VmHWM")
        else:
            self.peak_mb = _lifetime_max_rss_mb()

    def peak_over(self, baseline_mb: float | None) -> float | None:
        """``baseline_mb`` plus this window's growth (the lifetime peak when the window had no reset)."""
        if self.kind == "rss_process_lifetime" or None in (baseline_mb, self.start_mb, self.peak_mb):
            return self.peak_mb
        return baseline_mb + max(self.peak_mb - self.start_mb, 0.0)
