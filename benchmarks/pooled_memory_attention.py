"""Memory-attention time per frame and bytes per memory frame: dense vs pooled (EfficientTAM) backends.

A measurement, not a test. The memory-attention module (4 layers, d 256, random weights) reads a full
memory bank: 1 conditioning + 6 recent frames (``--frames 7``) on a 64x64 grid (image size 1024), 4096 queries,
16 object pointers (64 tokens). Configurations:

* dense                 official SAM 2 / EfficientTAM cross-attention
* pool / pool-sdpa      EfficientTAM variants 1 / 2, window 2, pooled at every read (the official code)
* ... +cache            pooled keys kept per memory entry; steady state of tracking: the newest frame is
                        pooled once (its cache is dropped before each timed call), the 6 others are reused

Usage: PYTHONPATH=src python benchmarks/pooled_memory_attention.py [--image-size 1024] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from effsam2.accel.pooled_memory import PooledMemoryBackend
from effsam2.modeling.memory import MemoryEntry, MemoryFrame, MemoryReadout
from effsam2.modeling.memory_attention import DenseMemoryBackend, MemoryAttention
from effsam2.modeling.position import PositionEmbeddingSine

C, MEM, NUM_MASKMEM = 256, 64, 7


def make_memory(grid: tuple[int, int], frames: int, pointers: int) -> MemoryReadout:
    gen = torch.Generator().manual_seed(0)
    h, w = grid
    spatial = PositionEmbeddingSine(MEM).encoding(h, w, torch.device("cpu"))[None]
    tpos = torch.randn(NUM_MASKMEM, MEM, generator=gen) * 0.02
    out = []
    for i in range(frames):
        feats = torch.randn(1, MEM, h, w, generator=gen).to(torch.bfloat16)
        entry = MemoryEntry(pred_masks=torch.zeros(1, 1, 4 * h, 4 * w), obj_ptr=torch.zeros(1, C),
                            object_score_logits=torch.ones(1, 1), maskmem_features=feats, maskmem_pos_enc=spatial,
                            grid=grid)
        t_pos = 0 if i == 0 else i  # frame 0 conditioning, then slots 1 (oldest) .. 6 (newest)
        t_enc = tpos[NUM_MASKMEM - t_pos - 1]
        pos = spatial.flatten(2).transpose(1, 2) + t_enc
        out.append(MemoryFrame(entry, i, t_pos, i == 0, entry.spatial_tokens(torch.float32), pos, (0, i), t_enc))
    ptrs = torch.randn(1, pointers * C // MEM, MEM, generator=gen)
    return MemoryReadout(out, ptrs, torch.zeros_like(ptrs), newest_t_pos=NUM_MASKMEM - 1)


class TimedBackend:
    """Delegates to a backend and adds up the time spent in its cross-attention (all layers of one call)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.seconds = 0.0

    def cross_attend(self, layer_idx, attn, q, table, memory):
        start = time.perf_counter()
        out = self.inner.cross_attend(layer_idx, attn, q, table, memory)
        self.seconds += time.perf_counter() - start
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=7)
    parser.add_argument("--pointers", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    side = args.image_size // 16
    grid = (side, side)
    torch.manual_seed(0)
    module = MemoryAttention(C, 4, 2048, MEM).eval()
    memory = make_memory(grid, args.frames, args.pointers)
    curr = torch.randn(1, side * side, C)
    curr_pos = PositionEmbeddingSine(C).encoding(side, side, torch.device("cpu")).flatten(1).T[None]

    configs = [("dense", DenseMemoryBackend(), None)]
    for form, label in (("exact", "pool"), ("sdpa", "pool-sdpa")):
        configs.append((label, PooledMemoryBackend(2, form, cache=False), None))
        backend = PooledMemoryBackend(2, form, cache=True)
        configs.append((label + " +cache", backend, backend))

    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; grid {side}x{side}, {side * side} queries, {args.frames} memory "
          f"frames ({args.frames * side * side} spatial tokens), {args.pointers} pointers; "
          f"median of {args.repeats} (round robin); load average at start {os.getloadavg()[0]:.2f}")
    runs = []
    with torch.inference_mode():
        for label, backend, cached in configs:
            timed = TimedBackend(backend)

            def run(timed=timed, cached=cached):
                module.backend = timed
                if cached is not None:  # the newest frame arrives unpooled, as in tracking
                    memory.frames[-1].entry.backend_cache.clear()
                timed.seconds = 0.0
                start = time.perf_counter()
                out = module(curr, curr_pos, grid, memory)
                return out, time.perf_counter() - start, timed.seconds

            runs.append((label, run, run()[0]))  # warm-up: allocations, oneDNN caches, fills the cache when on
        # round robin, so that a change of machine load affects every configuration alike
        times = {label: ([], []) for label, _, _ in runs}
        for _ in range(args.repeats):
            for label, run, _ in runs:
                _, total, cross = run()
                times[label][0].append(total)
                times[label][1].append(cross)
        reference = runs[0][2]
        med = {label: (statistics.median(t), statistics.median(c)) for label, (t, c) in times.items()}
        for label, _, out in runs:
            t, c = times[label]
            print(f"{label:16s} module: median {med[label][0] * 1e3:7.1f} ms (min {min(t) * 1e3:7.1f}) "
                  f"x{med['dense'][0] / med[label][0]:.2f} | cross-attention (4 layers): median "
                  f"{med[label][1] * 1e3:7.1f} ms (min {min(c) * 1e3:7.1f}) x{med['dense'][1] / med[label][1]:.2f}"
                  f" | max |out - dense| {(out - reference).abs().max().item():.3g}")

        print(f"load average at end {os.getloadavg()[0]:.2f}")
        # bytes per memory frame (one object)
        entry = memory.frames[1].entry
        raw = entry.maskmem_features.numel() * entry.maskmem_features.element_size()
        pooled_cache = configs[2][2].cache_nbytes(entry)
        layers, n = len(module.layers), side * side
        unpooled_kv = layers * 2 * n * C * 4
        print(f"\nbytes per memory frame (one object): raw bf16 features {raw / 2**20:.2f} MiB (what the official "
              f"code stores); pooled cache (4 layers' pooled fp32 keys + pooled fp32 tokens) "
              f"{pooled_cache / 2**20:.2f} MiB on top of it; an unpooled per-layer fp32 K/V cache would be "
              f"{unpooled_kv / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
