"""Measure the image encoder with Sparse Window Routing against dense, in one process (not a test).

    PYTHONPATH=src python benchmarks/swr_encoder.py --model sam2.1_hiera_b+ --fraction 0.25 --repeats 5

Random weights (speed does not depend on them). Dense and routed runs alternate so that drift of the
machine (thermal, other load) hits both alike; medians and minima of wall time are reported, and the
process CPU time (steadier when other jobs share the machine). Until ``effsam2
bench`` exists this script is the measuring tool for SWR's encoder speed.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from effsam2.accel.routed_hiera import routed_encode, window_grid
from effsam2.accel.shortcut import new_shortcut
from effsam2.accel.window_routing import WindowSelection
from effsam2.build import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sam2.1_hiera_b+")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--fraction", type=float, default=0.25, help="fraction of stage-3 windows kept")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.model, image_size=args.image_size)
    grid = window_grid(model)
    selection = WindowSelection.centered_fraction(grid, args.fraction)
    shortcut = new_shortcut(model.config).eval()
    image = torch.randn(1, 3, args.image_size, args.image_size)

    def dense() -> None:
        model.encode_image(image)

    def routed() -> None:
        routed_encode(model, image, selection, shortcut)

    times: dict[str, list[float]] = {"dense": [], "routed": []}
    cpu: dict[str, list[float]] = {"dense": [], "routed": []}
    with torch.inference_mode():
        dense(), routed()  # warm-up (allocator, kernels)
        for _ in range(args.repeats):
            for name, fn in (("dense", dense), ("routed", routed)):
                start, start_cpu = time.perf_counter(), time.process_time()
                fn()
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}")
    print(f"{args.model} at {args.image_size}: {selection.count}/{grid.num_windows} windows "
          f"({selection.fraction:.0%}), {args.repeats} repeats")
    for k, v in times.items():
        print(f"  {k:7s} median {med[k]:.3f} s, min {best[k]:.3f} s  (all: {', '.join(f'{t:.3f}' for t in v)})")
    print(f"  speed-up {med['dense'] / med['routed']:.2f}x (medians), {best['dense'] / best['routed']:.2f}x (minima)")
    # process CPU time is less sensitive to other load on a shared machine (it also counts spin-waits)
    print(f"  CPU time median: dense {med_cpu['dense']:.3f} s, routed {med_cpu['routed']:.3f} s, "
          f"ratio {med_cpu['dense'] / med_cpu['routed']:.2f}x")


if __name__ == "__main__":
    main()
