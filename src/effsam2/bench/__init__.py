"""The benchmark harness behind ``effsam2 bench`` (see docs/benchmarks.md).

Python use::

    from effsam2.bench import BenchOptions, Runner, write_markdown
    records = Runner(BenchOptions(models=["sam2.1_hiera_t"], video=Path("clip.mp4"), image_sizes=[512])).run()

Modules: ``timer`` (per-frame section times, injectable clock), ``session`` (the tracking loop),
``predictor_loop`` (the same through ``VideoPredictor``), ``official`` (the reference row), ``runner``
(the grid), ``records`` (rows, speed-ups, machine info), ``memory`` (peak memory), ``report`` (outputs).
"""

from effsam2.bench.records import BenchRecord
from effsam2.bench.report import markdown_table, write_json, write_markdown, write_plot
from effsam2.bench.runner import BenchOptions, Runner

__all__ = ["BenchOptions", "BenchRecord", "Runner", "markdown_table", "write_json", "write_markdown", "write_plot"]
