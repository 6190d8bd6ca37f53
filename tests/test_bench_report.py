"""Benchmark outputs (markdown table, plot) and the peak-memory probe."""

from __future__ import annotations

import numpy as np
import pytest

from effsam2.bench.memory import PeakMemory
from effsam2.bench.records import BenchRecord
from effsam2.bench.report import markdown_table, write_plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _records() -> list[BenchRecord]:
    common = {"model": "sam2.1_hiera_t", "image_size": 512, "device": "cpu", "dtype": "fp32", "objects": 1,
              "frames": 4, "warmup": 1, "repeats": 3}
    dense = BenchRecord(accel="dense", **common)
    dense.ms = {"image_encoder": 400.0, "memory_attention": 300.0, "memory_encoder": 50.0, "mask_decoder": 100.0,
                "track_step": 450.0, "frame": 860.04}
    dense.fps, dense.peak_mem_mb, dense.speedup_vs_dense, dense.mask_iou_vs_dense = 1.16277, 812.4, 1.0, 1.0
    official = BenchRecord(accel="official", implementation="sam2==1.1.0 (official)", **common)
    official.ms = {"image_encoder": 420.0, "track_step": 500.0, "frame": 925.0}
    official.fps, official.speedup_vs_dense = 1.081, 0.9297
    missing = BenchRecord(accel="smr", error="smr unavailable: effsam2.accel.sparse_memory is not part of this build",
                          **common)
    return [dense, official, missing]


def test_markdown_table_rows():
    lines = markdown_table(_records()).splitlines()
    assert len(lines) == 2 + 3
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    dense = [c.strip() for c in lines[2].strip("|").split("|")]
    row = dict(zip(head, dense))
    assert row["model"] == "sam2.1_hiera_t" and row["accel"] == "dense" and row["size"] == "512"
    assert row["image enc ms"] == "400.0" and row["mem attn ms"] == "300.0" and row["frame ms"] == "860.0"
    assert row["FPS"] == "1.16" and row["peak MB"] == "812" and row["vs dense"] == "1.00x"
    official = dict(zip(head, [c.strip() for c in lines[3].strip("|").split("|")]))
    assert official["mem attn ms"] == "-" and official["vs dense"] == "0.93x"
    assert official["note"] == "sam2==1.1.0 (official)"
    missing = dict(zip(head, [c.strip() for c in lines[4].strip("|").split("|")]))
    assert missing["frame ms"] == "-" and "sparse_memory is not part of this build" in missing["note"]


def test_plot_is_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    write_plot(_records(), path)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000


def test_peak_memory_sees_a_large_allocation_even_after_freeing_one():
    warm = np.ones(256 * 2**20 // 8)  # an earlier allocation, freed: the window must still see the next one
    del warm
    probe = PeakMemory("cpu")
    probe.start()
    block = np.ones(256 * 2**20 // 8)  # 256 MiB, touched
    probe.stop()
    del block
    assert probe.kind in ("rss", "rss_process_lifetime")
    if probe.kind == "rss":  # resettable high-water mark: the window's own growth
        assert probe.start_mb > 0
        assert probe.peak_mb - probe.start_mb >= 240
    else:
        assert probe.peak_mb >= 256
