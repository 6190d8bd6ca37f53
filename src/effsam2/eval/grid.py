"""``effsam2 eval --model M --accel dense,pool,smr@0.9,...``: every acceleration on the same data, one table.

Each configuration runs the semi-supervised protocol on the same sequences with the same model weights
(its predictions and results under ``<out>/<configuration>/``); the table (``grid.json``, ``grid.md`` and
``grid.png``, J&F against speed-up) has the dense row first and each row's J&F difference to dense.
Speed-up here is the tracking wall time of the evaluation itself (every frame, model calls and mask
writing included) relative to dense on the same machine in the same run: a rough figure; ``effsam2 bench``
measures the components precisely.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from effsam2.accel.spec import AccelSpec
from effsam2.eval.report import atomic_write_text, write_results
from effsam2.eval.results import EvalResults
from effsam2.io.atomic import atomic_path


@dataclass(frozen=True)
class GridRow:
    accel: str  # the full spec, e.g. smr@0.95:topk
    jf: float
    j: float
    f: float
    delta_jf: float  # J&F minus the dense row's (0 for dense)
    seconds: float  # tracking wall time over all sequences
    frames: int  # frames tracked
    speedup: float  # dense seconds / seconds


def ordered_specs(texts: list[str], **options) -> list[AccelSpec]:
    """The parsed specs, dense first (added when missing), duplicates dropped."""
    specs = [AccelSpec.parse(t, **options) for t in texts]
    dense = AccelSpec.parse("dense", **options)
    out = [dense] + [s for s in specs if not s.is_dense]
    return list({s.description: s for s in out}.values())


def folder_name(spec: AccelSpec) -> str:
    """A file-system friendly name of a spec: ``smr@0.95:topk`` -> ``smr_0.95-topk``."""
    return spec.description.replace("@", "_").replace(":", "-")


def grid_rows(runs: list[tuple[AccelSpec, EvalResults, float, int]]) -> list[GridRow]:
    """Rows from (spec, results, seconds, frames) with the dense run first."""
    _, dense, dense_seconds, _ = runs[0]
    rows = []
    for spec, results, seconds, frames in runs:
        rows.append(GridRow(spec.description, results.jf_mean, results.j_mean, results.f_mean,
                            results.jf_mean - dense.jf_mean, seconds, frames, dense_seconds / seconds))
    return rows


def format_grid(rows: list[GridRow], title: str, runs=None) -> str:
    """The table; with ``runs``, a second one: each sequence's dense J&F and every configuration's difference."""
    lines = [f"# {title}", "", "| accel | J&F | J | F | ΔJ&F vs dense | eval s | frames/s | speed-up (eval) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.accel} | {100 * r.jf:.1f} | {100 * r.j:.1f} | {100 * r.f:.1f} | "
                     f"{100 * r.delta_jf:+.1f} | {r.seconds:.1f} | {r.frames / r.seconds:.2f} | {r.speedup:.2f}x |")
    if runs:
        dense = {seq.name: seq.jf_mean for seq in runs[0][1].sequences}
        lines += ["", "Per sequence: dense J&F, then each configuration's J&F minus dense.", "",
                  "| sequence | dense | " + " | ".join(spec.description for spec, *_ in runs[1:]) + " |",
                  "|---|---|" + "---|" * (len(runs) - 1)]
        others = [{seq.name: seq.jf_mean for seq in results.sequences} for _, results, *_ in runs[1:]]
        for name, base in dense.items():
            cells = [f"{100 * (o[name] - base):+.1f}" for o in others]
            lines.append(f"| {name} | {100 * base:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_grid(rows: list[GridRow], runs, out_dir: Path, title: str) -> None:
    """Per-configuration results folders, then grid.json / grid.md / grid.png in ``out_dir``."""
    for spec, results, _, _ in runs:
        write_results(results, out_dir / folder_name(spec))
    atomic_write_text(out_dir / "grid.json", json.dumps({"title": title, "rows": [asdict(r) for r in rows]},
                                                        indent=2) + "\n")
    atomic_write_text(out_dir / "grid.md", format_grid(rows, title, runs))
    plot_grid(rows, out_dir / "grid.png", title)


def plot_grid(rows: list[GridRow], path: Path, title: str) -> bool:
    """J&F against speed-up, one labelled point per configuration; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        ax.scatter(r.speedup, 100 * r.jf, color="tab:red" if r.accel == "dense" else "tab:blue")
        ax.annotate(r.accel, (r.speedup, 100 * r.jf), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("speed-up against dense (evaluation wall time)")
    ax.set_ylabel("J&F")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return True
