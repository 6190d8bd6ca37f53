"""Evaluation results: per object, per sequence and overall J, F and J&F (all in [0, 1]).

Aggregation (see ``effsam2.eval.scoring`` for the frames that are scored):

* object: mean over its scored frames; recall = fraction of frames above 0.5; decay as the
  official ``db_statistics`` (``effsam2.eval.metrics.sequence_statistics``).
* sequence: mean over its objects.
* ``global``: mean over all objects of all sequences (the official DAVIS-2017 / SA-V number).
* ``sequence_mean``: mean over sequences of the per-sequence means.
* J&F = (J + F) / 2 at every level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from effsam2.eval.metrics import sequence_statistics

__all__ = ["EvalResults", "ObjectScore", "SequenceScore"]

AGGREGATION = (
    "object = mean over its scored frames; sequence = mean over its objects; "
    "global = mean over all objects of all sequences (official DAVIS-2017/SA-V); "
    "sequence_mean = mean over sequences; J&F = (J + F) / 2"
)


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else math.nan


@dataclass(frozen=True, eq=False)  # eq on numpy arrays would be ambiguous
class ObjectScore:
    """One object's per-frame scores.

    Attributes:
        object_id: ground-truth object id.
        frames: the scored frame names, in order.
        j, f: ``(T,) float64`` per-frame J and F, aligned with ``frames``.
    """

    object_id: int
    frames: tuple[str, ...]
    j: np.ndarray = field(repr=False)
    f: np.ndarray = field(repr=False)

    @cached_property
    def _j_stats(self) -> tuple[float, float, float]:
        return sequence_statistics(self.j)

    @cached_property
    def _f_stats(self) -> tuple[float, float, float]:
        return sequence_statistics(self.f)

    @property
    def j_mean(self) -> float:
        return self._j_stats[0]

    @property
    def f_mean(self) -> float:
        return self._f_stats[0]

    @property
    def jf_mean(self) -> float:
        return (self.j_mean + self.f_mean) / 2

    @property
    def j_recall(self) -> float:
        return self._j_stats[1]

    @property
    def f_recall(self) -> float:
        return self._f_stats[1]

    @property
    def j_decay(self) -> float:
        return self._j_stats[2]

    @property
    def f_decay(self) -> float:
        return self._f_stats[2]

    def summary(self) -> dict:
        return {
            "object": self.object_id,
            "J&F": self.jf_mean,
            "J": self.j_mean,
            "F": self.f_mean,
            "J-recall": self.j_recall,
            "F-recall": self.f_recall,
            "J-decay": self.j_decay,
            "F-decay": self.f_decay,
            "frames": len(self.frames),
        }


@dataclass(frozen=True)
class SequenceScore:
    """One sequence: its objects' scores; J, F, J&F are means over the objects."""

    name: str
    objects: tuple[ObjectScore, ...]

    @property
    def j_mean(self) -> float:
        return _mean(o.j_mean for o in self.objects)

    @property
    def f_mean(self) -> float:
        return _mean(o.f_mean for o in self.objects)

    @property
    def jf_mean(self) -> float:
        return (self.j_mean + self.f_mean) / 2


@dataclass(frozen=True)
class EvalResults:
    """All scores of one evaluation run plus what it was run on.

    Attributes:
        dataset: dataset root; layout: ``davis`` or ``sav``; predictions: folder or None (model).
        bound_th: F tolerance; skip_first_last: whether first/last annotated frames were dropped.
        sequences: per-sequence scores, in evaluation order.
        notes: warnings gathered while scoring (ignored ids, objects scored as empty).
    """

    dataset: str
    layout: str
    predictions: str | None
    bound_th: float
    skip_first_last: bool
    sequences: tuple[SequenceScore, ...]
    notes: tuple[str, ...] = ()

    @property
    def objects(self) -> list[tuple[str, ObjectScore]]:
        """``(sequence name, object score)`` for every object of every sequence."""
        return [(s.name, o) for s in self.sequences for o in s.objects]

    def _global(self, attr: str) -> float:
        return _mean(getattr(o, attr) for _, o in self.objects)

    @property
    def j_mean(self) -> float:
        """Mean J over all objects (the official global J)."""
        return self._global("j_mean")

    @property
    def f_mean(self) -> float:
        """Mean F over all objects (the official global F)."""
        return self._global("f_mean")

    @property
    def jf_mean(self) -> float:
        """Official global J&F: (mean J over objects + mean F over objects) / 2."""
        return (self.j_mean + self.f_mean) / 2

    @property
    def sequence_mean(self) -> dict[str, float]:
        """J, F, J&F averaged over sequences (each sequence weighs the same)."""
        j = _mean(s.j_mean for s in self.sequences)
        f = _mean(s.f_mean for s in self.sequences)
        return {"J&F": (j + f) / 2, "J": j, "F": f}

    def summary(self) -> dict:
        """The headline numbers as a JSON-ready dict (values in [0, 1])."""
        return {
            "dataset": self.dataset,
            "layout": self.layout,
            "predictions": self.predictions,
            "bound_th": self.bound_th,
            "skip_first_last": self.skip_first_last,
            "aggregation": AGGREGATION,
            "num_sequences": len(self.sequences),
            "num_objects": len(self.objects),
            "num_scored": sum(len(o.frames) for _, o in self.objects),
            "global": {
                "J&F": self.jf_mean,
                "J": self.j_mean,
                "F": self.f_mean,
                "J-recall": self._global("j_recall"),
                "F-recall": self._global("f_recall"),
                "J-decay": self._global("j_decay"),
                "F-decay": self._global("f_decay"),
            },
            "sequence_mean": self.sequence_mean,
        }

    def to_dict(self) -> dict:
        """Summary plus every sequence, object and per-frame value, JSON-ready."""
        out = self.summary()
        out["sequences"] = [
            {
                "name": s.name,
                "J&F": s.jf_mean,
                "J": s.j_mean,
                "F": s.f_mean,
                "objects": [
                    {
                        **o.summary(),
                        "per_frame": {
                            "frames": list(o.frames),
                            "J": o.j.tolist(),
                            "F": o.f.tolist(),
                        },
                    }
                    for o in s.objects
                ],
            }
            for s in self.sequences
        ]
        out["notes"] = list(self.notes)
        return out
