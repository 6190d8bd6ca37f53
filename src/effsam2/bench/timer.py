"""Section timing for the benchmark: per-frame totals of named sections, with an injectable clock.

The tracker marks its parts with ``timer.section(name)`` (see :mod:`effsam2.timing`); the benchmark
opens one :meth:`FrameTimer.frame` per video frame and gets, for every frame, the seconds spent in each
section (summed over the objects processed on that frame). ``sync`` runs before a section's start and
end time are read (``torch.cuda.synchronize`` on a GPU), so queued asynchronous work is charged to the
section that launched it.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence

FRAME = "frame"  # the whole frame: encoder, every object's step, bookkeeping
TRACK_STEP = "track_step"  # one object's whole step: memory attention + decoder + memory encoder
FRAME_CPU = "frame_cpu"  # process CPU time of the frame (all threads), when a CPU clock is given


def _no_sync() -> None:
    return None


class FrameTimer:
    """Collects ``frames``: one ``{section: seconds}`` dict per frame, in frame order.

    ``clock`` gives wall seconds (injectable for tests); ``cpu_clock`` (e.g. ``time.process_time``), if
    given, adds the frame's process CPU seconds under ``FRAME_CPU``.

    Sections nest (each records its inclusive time). A section re-entered inside itself is timed once,
    by the outermost entry, so recursion never double-counts. Sections outside any frame are not
    recorded (set-up work is not part of a frame).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter, sync: Callable[[], None] = _no_sync,
                 cpu_clock: Callable[[], float] | None = None) -> None:
        self._clock = clock
        self._sync = sync
        self._cpu_clock = cpu_clock
        self._open: list[str] = []
        self._current: dict[str, float] | None = None
        self.frames: list[dict[str, float]] = []

    @contextlib.contextmanager
    def frame(self) -> Iterator[None]:
        """One video frame; its dict holds ``FRAME`` (the whole frame) and every section entered within."""
        if self._current is not None:
            raise RuntimeError("frames do not nest")
        self._current = defaultdict(float)
        cpu_start = self._cpu_clock() if self._cpu_clock else 0.0
        try:
            with self._timed(FRAME):
                yield
            if self._cpu_clock:  # less sensitive than wall time to other processes sharing the cores
                self._current[FRAME_CPU] = self._cpu_clock() - cpu_start
            self.frames.append(dict(self._current))
        finally:
            self._current = None

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        if self._current is None or name in self._open:
            yield
            return
        with self._timed(name):
            yield

    @contextlib.contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        self._open.append(name)
        self._sync()
        start = self._clock()
        try:
            yield
        finally:
            self._sync()
            self._current[name] += self._clock() - start
            self._open.pop()


def mean_per_frame(frames: Sequence[dict[str, float]], warmup: int) -> dict[str, float]:
    """Mean seconds per frame of each section over ``frames[warmup:]`` (absent on a frame: 0)."""
    measured = frames[warmup:]
    if not measured:
        raise ValueError(f"no frame left to measure: {len(frames)} frames, {warmup} warm-up")
    names = sorted({name for f in measured for name in f})
    return {name: sum(f.get(name, 0.0) for f in measured) / len(measured) for name in names}


def median_of_repeats(repeats: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per section, the median over repeats of that repeat's per-frame mean (missing counts as 0)."""
    if not repeats:
        raise ValueError("no repeat to summarise")
    names = sorted({name for r in repeats for name in r})
    return {name: statistics.median(r.get(name, 0.0) for r in repeats) for name in names}
