"""Optional timing hooks: code marks named sections, a benchmark supplies a timer that measures them.

The default :data:`NO_TIMER` does nothing, so library code pays nothing when it is not benchmarked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol


class SectionTimer(Protocol):
    def section(self, name: str) -> contextlib.AbstractContextManager: ...


class _NoTimer:
    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        yield

    def __repr__(self) -> str:
        return "NO_TIMER"


NO_TIMER: SectionTimer = _NoTimer()

# Section names used by the tracker and predictors (the benchmark reports these columns).
IMAGE_ENCODER = "image_encoder"
MEMORY_ATTENTION = "memory_attention"
MEMORY_ENCODER = "memory_encoder"
MASK_DECODER = "mask_decoder"
