"""Training clips drawn ahead in worker processes (``effsam2 train --workers N``), the same as drawn in place.

A step's clips are drawn by :func:`draw_step` from generators seeded by (seed, step); the step then goes on
drawing its prompts and corrective clicks from the same generators. With workers, step k is drawn by worker
k mod N, which hands back the clips together with the states both generators were left in, so the step that
follows draws exactly what it would have drawn in place: a run gives the same weights with any number of
workers. Workers are forked (they share the decoded videos without copying them), run one torch thread
each, and send the clips through torch's shared-memory queues; they never touch the GPU.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Self

import numpy as np
import torch
import torch.multiprocessing as mp

from effsam2.errors import Effsam2Error
from effsam2.train.clip_sampler import ClipSettings, sample_clip
from effsam2.train.vos_data import TrainVideo

POLL_S = 1.0  # how often a wait for a worker checks that it is still alive


@dataclass
class DrawnStep:
    """One step's B clips and the generator states after drawing them."""

    frames: torch.Tensor  # (T, B, 3, S, S) in [0, 1]
    masks: torch.Tensor  # (T, B, 1, S, S) in {0, 1}
    numpy_state: dict
    torch_state: torch.Tensor

    def generator(self) -> np.random.Generator:
        """The step's numpy generator as drawing left it; torch's global generator is set as drawing left it."""
        rng = np.random.default_rng()
        rng.bit_generator.state = self.numpy_state
        torch.set_rng_state(self.torch_state)
        return rng


def draw_step(videos: list[TrainVideo], step: int, seed: int, batch_size: int, clips: ClipSettings) -> DrawnStep:
    """Step ``step``'s clips, drawn from generators seeded by (``seed``, ``step``)."""
    rng = np.random.default_rng([seed, step])
    torch.manual_seed(seed * 1_000_003 + step)
    drawn = [sample_clip(rng, videos, clips) for _ in range(batch_size)]
    return DrawnStep(torch.stack([c[0] for c in drawn], 1), torch.stack([c[1] for c in drawn], 1),
                     rng.bit_generator.state, torch.get_rng_state())


def _work(index: int, workers: int, start: int, stop: int, videos: list[TrainVideo], seed: int, batch_size: int,
          clips: ClipSettings, out: mp.Queue, done) -> None:
    torch.set_num_threads(1)
    try:
        for step in range(start + index, stop, workers):
            out.put(("ok", draw_step(videos, step, seed, batch_size, clips)))
    except Exception as err:  # noqa: BLE001 - reported to the main process, which raises it as one line
        out.put(("error", f"{type(err).__name__}: {err}"))
    done.wait()  # stay alive until the main process has taken every clip out of shared memory


class ClipPrefetcher:
    """Steps ``start`` .. ``stop - 1`` drawn by ``workers`` forked processes, taken in order with :meth:`take`;
    use as a context manager (the workers stop on exit)."""

    def __init__(self, videos: list[TrainVideo], start: int, stop: int, workers: int, seed: int,
                 batch_size: int, clips: ClipSettings, depth: int = 2):
        if workers < 1:
            raise Effsam2Error(f"clip workers must be >= 1, got {workers}")
        context = mp.get_context("fork")
        self.start, self.next = start, start
        self.done = context.Event()
        self.queues = [context.Queue(maxsize=depth) for _ in range(workers)]
        self.processes = [context.Process(target=_work, daemon=True,
                                          args=(i, workers, start, stop, videos, seed, batch_size, clips, q,
                                                self.done))
                          for i, q in enumerate(self.queues)]
        for p in self.processes:
            p.start()

    def take(self, step: int) -> DrawnStep:
        """The clips of ``step``, which must be the next step in order."""
        if step != self.next:
            raise Effsam2Error(f"clip prefetcher: step {step} asked for, {self.next} is next")
        index = (step - self.start) % len(self.queues)
        while True:
            try:
                kind, payload = self.queues[index].get(timeout=POLL_S)
                break
            except queue.Empty:
                if not self.processes[index].is_alive():
                    raise Effsam2Error(f"clip worker {index} died (exit code {self.processes[index].exitcode}) "
                                       f"before drawing step {step}") from None
        if kind == "error":
            raise Effsam2Error(f"clip worker {index} failed on step {step}: {payload}")
        self.next += 1
        return payload

    def close(self) -> None:
        self.done.set()
        for p in self.processes:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
