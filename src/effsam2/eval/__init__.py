"""Evaluation of video object segmentation: DAVIS J and F, scoring, reports (the dataset readers live in
``effsam2.io.datasets`` and are re-exported here).

Typical use::

    from effsam2.eval import open_dataset, score_dataset, write_results
    results = score_dataset(open_dataset("DAVIS"), "predictions/", split="val")
    print(results.jf_mean)  # official global J&F, in [0, 1]
    write_results(results, "out/")
"""

from effsam2.eval.metrics import boundary_f_measure, region_similarity, sequence_statistics
from effsam2.eval.report import format_markdown, write_json, write_results
from effsam2.eval.results import EvalResults, ObjectScore, SequenceScore
from effsam2.eval.scoring import MaskSource, PredictionFolder, score_dataset, score_sequence
from effsam2.io.datasets import VOSDataset, VOSSequence, open_dataset

__all__ = [
    "EvalResults",
    "MaskSource",
    "ObjectScore",
    "PredictionFolder",
    "SequenceScore",
    "VOSDataset",
    "VOSSequence",
    "boundary_f_measure",
    "format_markdown",
    "open_dataset",
    "region_similarity",
    "score_dataset",
    "score_sequence",
    "sequence_statistics",
    "write_json",
    "write_results",
]
