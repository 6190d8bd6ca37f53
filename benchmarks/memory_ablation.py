"""How much of the default model's accuracy its memory carries: `effsam2 eval`'s grid with two ablations,
declared as accelerations from this script (effsam2.accel.plugins), on DAVIS-2016 val.

    python benchmarks/memory_ablation.py OUT_DIR [--dataset ../shared/data/davis2016]

Rows: dense; ``promptmemonly`` (the memory attention reads the prompted frame's spatial memory and the
object pointers, no tracked frame's memory); ``trackedmemonly`` (the tracked frames' memory and the
pointers, not the prompted frame's). Written to OUT_DIR/grid.{json,md,png}; the results of our run are
benchmarks/eval_lite0_memory_ablation.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from effsam2.accel.plugins import Acceleration, register_acceleration
from effsam2.cli import main
from effsam2.modeling.memory_attention import DenseMemoryBackend


class MemoryFramesFilter(DenseMemoryBackend):
    """Dense cross-attention on the prompted (conditioning) and/or the tracked memory frames only."""

    def __init__(self, keep_prompted: bool, keep_tracked: bool) -> None:
        self.keep_prompted, self.keep_tracked = keep_prompted, keep_tracked

    def cross_attend(self, layer_idx, attn, q, table, memory):
        frames = [f for f in memory.frames if (self.keep_prompted if f.is_cond else self.keep_tracked)]
        return super().cross_attend(layer_idx, attn, q, table, dataclasses.replace(memory, frames=frames))


def declare() -> None:
    register_acceleration(Acceleration("promptmemonly", "spatial memory of the prompted frame only",
                                       make_memory_backend=lambda _: MemoryFramesFilter(True, False)))
    register_acceleration(Acceleration("trackedmemonly", "spatial memory of the tracked frames only",
                                       make_memory_backend=lambda _: MemoryFramesFilter(False, True)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--dataset", default="../shared/data/davis2016")
    args = parser.parse_args()
    declare()
    sys.exit(main(["eval", "--dataset", args.dataset, "--model", "default", "--out", args.out,
                   "--accel", "dense,promptmemonly,trackedmemonly", "--overwrite"]))
