"""Write evaluation results as JSON, CSV and a markdown table, atomically.

* ``results.json``: ``EvalResults.to_dict()``: summary, every sequence and object, per-frame J/F.
* ``results.csv``: one row per (sequence, object) with J&F, J, F, recalls, decays, frame count.
* ``results.md``: per-sequence table (values x 100, one decimal) and the two overall rows.

JSON and CSV keep values in [0, 1] at full precision; NaN (nothing scored) is written as null /
an empty cell. Every file is written to a temporary file in the destination folder and moved
into place with ``os.replace``, so readers never see a partial file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

from effsam2.eval.results import EvalResults
from effsam2.io.atomic import atomic_write

__all__ = ["atomic_write_text", "format_csv", "format_markdown", "write_json", "write_results"]

CSV_COLUMNS = ("sequence", "object", "J&F", "J", "F", "J-recall", "F-recall", "J-decay", "F-decay", "frames")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (temporary file in the same folder + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", newline="") as fh:
        fh.write(text)
    return path


def _json_safe(value):
    """NaN/inf -> None recursively, so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(data: dict, path: str | os.PathLike) -> Path:
    """Write a JSON-ready dict (e.g. ``EvalResults.summary()``) atomically, indented."""
    return atomic_write_text(path, json.dumps(_json_safe(data), indent=2, allow_nan=False) + "\n")


def format_csv(results: EvalResults) -> str:
    """One row per (sequence, object), columns ``CSV_COLUMNS``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for seq_name, obj in results.objects:
        row = obj.summary()
        writer.writerow(
            [seq_name]
            + [
                "" if isinstance(row[key], float) and math.isnan(row[key]) else row[key]
                for key in ("object", *CSV_COLUMNS[2:])
            ]
        )
    return buf.getvalue()


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"


def format_markdown(results: EvalResults) -> str:
    """A markdown table: one row per sequence, then the global and per-sequence means (x 100)."""
    lines = [
        "| sequence | objects | J&F | J | F |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for seq in results.sequences:
        lines.append(
            f"| {seq.name} | {len(seq.objects)} | {_pct(seq.jf_mean)} | {_pct(seq.j_mean)} | {_pct(seq.f_mean)} |"
        )
    n_obj = len(results.objects)
    seq_mean = results.sequence_mean
    lines.append(
        f"| **global (mean of {n_obj} objects)** | {n_obj} | **{_pct(results.jf_mean)}** | "
        f"**{_pct(results.j_mean)}** | **{_pct(results.f_mean)}** |"
    )
    lines.append(
        f"| mean of {len(results.sequences)} sequences | {n_obj} | {_pct(seq_mean['J&F'])} | "
        f"{_pct(seq_mean['J'])} | {_pct(seq_mean['F'])} |"
    )
    return "\n".join(lines) + "\n"


def write_results(results: EvalResults, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``results.json``, ``results.csv`` and ``results.md`` into ``out_dir`` (created)."""
    out_dir = Path(out_dir)
    return {
        "json": write_json(results.to_dict(), out_dir / "results.json"),
        "csv": atomic_write_text(out_dir / "results.csv", format_csv(results)),
        "md": atomic_write_text(out_dir / "results.md", format_markdown(results)),
    }
