"""Memory-attention time per tracked frame, dense vs SMR, in the steady state of a long video (not a test).

Setting (REFERENCE.md section 3): image 1024 (64x64 memory grid), 7 memory frames = 1 prompt frame + 6
recent frames, 16 object pointers (64 tokens), one object. Each timed step is the tracker's whole
memory-attention section (``condition_on_memory``: gather the memory, 4 memory-attention layers), as
``track_step`` times it. Backends are timed interleaved, step by step, in the same process, so load from
other processes affects them alike; the figure is the median over the timed steps.

Memory entries are random (timing does not depend on their values); each backend has its own bank that
grows by one frame per step as in tracking, so SMR runs in its steady state: the newest frame is read
whole and gets its pattern, the five older recent frames are read through theirs (and were compacted).

    PYTHONPATH=src python scripts/bench_smr.py --accel dense,smr --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from effsam2.accel.sparse_memory import CACHE_KEY, stored_bytes
from effsam2.accel.spec import AccelSpec, make_memory_backend
from effsam2.build import build_model
from effsam2.modeling.memory import MemoryEntry
from effsam2.modeling.sam2_model import FrameFeatures
from effsam2.modeling.tracker import ObjectMemory, condition_on_memory, gather_memory


def random_entry(gen: torch.Generator, side: int, mem_dim: int, pos: torch.Tensor) -> MemoryEntry:
    return MemoryEntry(pred_masks=torch.zeros(1, 1, 4 * side, 4 * side), obj_ptr=torch.randn(1, 256, generator=gen),
                       object_score_logits=torch.ones(1, 1),
                       maskmem_features=torch.randn(1, mem_dim, side, side, generator=gen).to(torch.bfloat16),
                       maskmem_pos_enc=pos, grid=(side, side))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sam2.1_hiera_t")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--accel", default="dense,smr", help="comma-separated specs, e.g. dense,smr,pool+smr")
    parser.add_argument("--sparsity", type=float, default=0.95)
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per backend")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = build_model(args.model, image_size=args.image_size).eval()
    side = args.image_size // 16
    mem_dim = model.config.mem_dim
    gen = torch.Generator().manual_seed(0)
    pos = torch.randn(1, mem_dim, side, side, generator=gen)
    feats = FrameFeatures(torch.randn(1, 256, side, side, generator=gen),
                          torch.randn(1, 256, side, side, generator=gen), None)

    specs = [AccelSpec.parse(a, smr_sparsity=args.sparsity) for a in args.accel.split(",")]
    backends = [make_memory_backend(spec) for spec in specs]
    # one bank per backend: prompt frame 0 and recent frames 1..15 (so 16 object pointers at frame 16)
    first = 16
    template = [random_entry(gen, side, mem_dim, pos) for _ in range(first + args.repeats + 1)]
    banks = []
    for _ in backends:
        bank = ObjectMemory(cond={0: _copy(template[0])})
        bank.non_cond = {t: _copy(template[t]) for t in range(1, first)}
        banks.append(bank)

    times: list[list[float]] = [[] for _ in backends]
    cpu_times: list[list[float]] = [[] for _ in backends]  # CPU seconds of all threads: less sensitive to load
    with torch.inference_mode():
        for step, t in enumerate(range(first, first + args.repeats + 1)):
            for i, (backend, bank) in enumerate(zip(backends, banks)):
                model.memory_attention.backend = backend
                start, start_cpu = time.perf_counter(), time.process_time()
                condition_on_memory(model, t, False, feats, bank, num_frames=None, reverse=False)
                elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
                if step > 0:  # step 0 picks the patterns of frames first recalled in old slots
                    times[i].append(elapsed)
                    cpu_times[i].append(elapsed_cpu)
                bank.non_cond[t] = _copy(template[t])

    full = mem_dim * side * side * 2  # one object's bf16 memory frame
    print(f"model {args.model}, image {args.image_size} ({side}x{side} memory grid), 7 memory frames "
          f"(1 prompt + 6 recent), 16 object pointers, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} interleaved steps")
    medians = [statistics.median(ts) for ts in times]
    cpu_medians = [statistics.median(ts) for ts in cpu_times]
    for spec, backend, bank, ts, med, cpu in zip(specs, backends, banks, times, medians, cpu_medians):
        line = (f"  {spec.label:10s} wall {med * 1000:8.1f} ms/frame (min {min(ts) * 1000:.1f}, max {max(ts) * 1000:.1f}),"
                f" speed-up {medians[0] / med:.2f}x | CPU time {cpu * 1000:8.1f} ms/frame, speed-up "
                f"{cpu_medians[0] / cpu:.2f}x  (vs {specs[0].label})")
        if hasattr(backend, "tokens_read"):  # keys per layer at the next step, against the dense count
            with torch.inference_mode():
                readout = gather_memory(model, t + 1, bank, None, False, torch.float32)
            dense_keys = len(readout.frames) * side * side + readout.num_ptr_tokens
            read = statistics.mean(backend.tokens_read(i, readout) for i in range(len(model.memory_attention.layers)))
            line += (f"\n             keys per layer {read:.0f} of {dense_keys} "
                     f"(overall sparsity {1 - read / dense_keys:.2f})")
        compacted = [e for e in bank.non_cond.values() if e.token_index is not None]
        if compacted:
            kept = statistics.mean(e.token_index.numel() for e in compacted)
            saved = statistics.mean(full - stored_bytes(e) for e in compacted)
            per_layer = statistics.mean(p.shape[1] for e in compacted for p in e.backend_cache[CACHE_KEY].grid_index.values())
            line += (f"\n             {per_layer:.0f} tokens per layer, union over layers {kept:.0f} of {side * side} "
                     f"stored; saved {saved / 1024:.1f} KiB of {full / 1024:.0f} KiB per object per frame "
                     f"(features, index and patterns counted)")
        print(line)


def _copy(entry: MemoryEntry) -> MemoryEntry:
    """A fresh entry sharing the template's tensors (compaction replaces tensors, it never writes into them)."""
    return MemoryEntry(entry.pred_masks, entry.obj_ptr, entry.object_score_logits, entry.maskmem_features,
                       entry.maskmem_pos_enc, grid=entry.grid)


if __name__ == "__main__":
    main()
