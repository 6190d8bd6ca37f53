"""Time per frame against the number of objects, from `effsam2 bench --objects 1,4,16 --against-official` JSONs.

    python benchmarks/plot_objects.py benchmarks/cpu_amx_t_512_objects_fp32.json \
        benchmarks/cpu_amx_t_512_objects_auto.json --out docs/benchmarks_objects.png
"""

from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", help="bench JSON files (lists of records)")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args()
    series: dict[str, list[tuple[int, float]]] = {}
    cpu = ""
    for path in args.json:
        with open(path) as f:
            for record in json.load(f):
                if record.get("error"):
                    continue
                who = "official sam2" if record["implementation"] != "effsam2" else "effsam2"
                key = f"{who} {record['dtype']}"
                series.setdefault(key, []).append((record["objects"], record["ms"]["frame"]))
                cpu = record["machine"]["cpu"]
    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    for key, points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                linestyle="--" if key.startswith("official") else "-", label=key)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("objects tracked")
    ax.set_ylabel("ms per frame")
    ax.set_title(f"sam2.1_hiera_t at 512, frames 4-6 of a clip ({cpu}, 2 cores)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
