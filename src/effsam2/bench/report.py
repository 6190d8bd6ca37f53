"""Benchmark outputs: JSON records, a markdown table and a stacked-bar plot, each written atomically.

Files go through :func:`effsam2.io.atomic.atomic_write` (a temporary file beside the target, then a rename),
so a reader never sees half a file and an interrupted run leaves the old one intact.
"""

from __future__ import annotations

import json
import os

from effsam2.bench.records import COMPONENTS, OURS, BenchRecord
from effsam2.bench.timer import FRAME, TRACK_STEP
from effsam2.errors import Effsam2Error
from effsam2.io.atomic import atomic_write

COMPONENT_TITLES = {"image_encoder": "image enc", "memory_attention": "mem attn", "memory_encoder": "mem enc",
                    "mask_decoder": "prompt+decoder"}


def write_json(records: list[BenchRecord], path: str | os.PathLike) -> None:
    data = [r.to_dict() for r in records]
    with atomic_write(path, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def row_label(r: BenchRecord) -> str:
    dtype = "" if r.dtype == "fp32" else f" {r.dtype}"
    compiled = " compiled" if r.compile else ""
    loop = "" if r.loop == "steps" else f" ({r.loop})"
    return f"{r.model} {r.accel}{loop} {r.image_size}px {r.objects}obj{dtype}{compiled}"


def markdown_table(records: list[BenchRecord]) -> str:
    """One row per record: ms per frame of each component and the whole frame, FPS, peak memory, speed-up."""
    head = ["model", "accel", "size", "obj", "dtype", *(f"{COMPONENT_TITLES[c]} ms" for c in COMPONENTS),
            "frame ms", "FPS", "peak MB", "bank KB/obj", "vs dense", "mask IoU vs dense", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in records:
        speed = "-" if r.speedup_vs_dense is None else f"{r.speedup_vs_dense:.2f}x"
        note = r.error or ("" if r.implementation == OURS else r.implementation)
        if r.loop != "steps" and not r.error:
            note = (note + f" {r.loop} loop").strip()
        if r.accel_stats.get("swr_window_fraction") is not None:
            note = (note + f" windows {r.accel_stats['swr_window_fraction']:.0%}").strip()
        if r.compile and not r.error:
            note = (note + " compiled").strip()
        cells = [r.model, r.accel, str(r.image_size), str(r.objects), r.dtype,
                 *(_num(r.ms.get(c)) for c in COMPONENTS), _num(r.ms.get(FRAME)), _num(r.fps, 2),
                 _num(r.peak_mem_mb, 0), _num(r.bank_kb_per_object, 0), speed, _num(r.mask_iou_vs_dense, 3),
                 note.replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def machine_line(records: list[BenchRecord]) -> str:
    if not records:
        return ""
    m = records[0].machine
    gpu = m.get("gpu") or "no GPU"
    r = records[0]
    return (f"Machine: {m.get('cpu')} ({m.get('cpu_count')} CPUs, {m.get('torch_threads')} torch threads, "
            f"load {m.get('load_avg_1min', '?')}), {gpu}, torch {m.get('torch')}, Python {m.get('python')}. "
            f"Clip {r.video}: {r.frames} frames per pass, {r.warmup} warm-up, median of {r.repeats} passes; "
            f"weights: {r.weights}.\n")


def write_markdown(records: list[BenchRecord], path: str | os.PathLike) -> None:
    text = "# effsam2 bench\n\n" + machine_line(records) + "\n" + markdown_table(records)
    with atomic_write(path, "w") as f:
        f.write(text)


def check_plotting() -> None:
    """Fail early (before measuring) if matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise Effsam2Error("--plot needs matplotlib (pip install 'effsam2[demo]')") from None


def _bar_part(r: BenchRecord, part: str) -> float:
    """ms of one stacked segment: a component, the unsplit official step, or the rest of the frame."""
    if part in COMPONENT_TITLES:
        return r.ms.get(part) or 0.0
    split = any(r.ms.get(c) is not None for c in COMPONENTS[1:])
    if part == "unsplit":
        return 0.0 if split else r.ms.get(TRACK_STEP) or 0.0
    known = sum(r.ms.get(c) or 0.0 for c in COMPONENTS) + (0.0 if split else r.ms.get(TRACK_STEP) or 0.0)
    return max((r.ms.get(FRAME) or 0.0) - known, 0.0)


def write_plot(records: list[BenchRecord], path: str | os.PathLike) -> None:
    """Horizontal stacked bars: ms per frame of each component (+ the rest of the frame) per configuration."""
    check_plotting()
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib.figure import Figure

    rows = [r for r in records if r.error is None]
    labels = [row_label(r) for r in rows]
    fig = Figure(figsize=(10, 1.8 + 0.45 * max(len(rows), 1)))
    ax = fig.add_subplot()
    left = [0.0] * len(rows)
    for part, title in [*COMPONENT_TITLES.items(), ("unsplit", "track step (official, not split)"),
                        ("other", "other (bookkeeping)")]:
        widths = [_bar_part(r, part) for r in rows]
        if part in COMPONENT_TITLES or any(widths):
            ax.barh(labels, widths, left=left, label=title)
        left = [a + b for a, b in zip(left, widths)]
    for y, (r, total) in enumerate(zip(rows, left)):
        speed = "" if r.speedup_vs_dense is None else f"  {r.speedup_vs_dense:.2f}x"
        ax.text(total, y, f" {total:.0f} ms{speed}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms per frame (median of passes)")
    ax.set_xlim(0, max(left, default=1.0) * 1.25 or 1.0)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.5 / max(len(rows), 1) - 0.12), ncol=3, fontsize=8)
    device = (records[0].machine.get("gpu") or records[0].machine.get("cpu")) if records else ""
    ax.set_title(f"effsam2 bench: time per frame by component ({device})", fontsize=10)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
