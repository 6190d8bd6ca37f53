"""Training clips drawn ahead in worker processes (``effsam2 train --workers N``), the same as drawn in place.

A step's clips are drawn by :func:`draw_step` from generators seeded by (seed, step); the step then goes on
drawing its prompts and corrective clicks from the same generators. With workers, step k is drawn by worker
k mod N, which hands back the clips together with the states both generators were left in, so the step that
follows draws exactly what it would have drawn in place: the same clips with any number of workers, and on
the CPU the same weights. Workers are forked (they share the decoded videos without copying them), run one
torch thread each, never touch the GPU, and send the clips through shared memory (``/dev/shm``: about
75 MB per step at the defaults, at most ``depth`` steps per worker waiting); each message names its step,
and a worker dies with the training process.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.multiprocessing as mp

from effsam2.errors import Effsam2Error
from effsam2.train.clip_sampler import ClipSettings, sample_clip
from effsam2.train.vos_data import TrainVideo

if TYPE_CHECKING:  # Python 3.10 has no typing.Self
    from typing_extensions import Self

POLL_S = 1.0  # how often a wait for a worker (or a worker's wait) checks that the other side is still there
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def step_seed(seed: int, step: int) -> int:
    """The seed of torch's generators for ``step``."""
    return seed * 1_000_003 + step


@dataclass
class DrawnStep:
    """One step's B clips and the generator states after drawing them."""

    step: int
    frames: torch.Tensor  # (T, B, 3, S, S) in [0, 1]
    masks: torch.Tensor  # (T, B, 1, S, S) in {0, 1}
    numpy_state: dict
    torch_seed: int
    torch_state: torch.Tensor

    def generator(self) -> np.random.Generator:
        """The step's numpy generator as drawing left it; torch's generators are set as drawing left them (the
        CPU one restored, the CUDA ones freshly seeded, as drawing, which runs on the CPU, leaves them)."""
        rng = np.random.default_rng()
        rng.bit_generator.state = self.numpy_state
        torch.manual_seed(self.torch_seed)
        torch.set_rng_state(self.torch_state)
        return rng


def draw_step(videos: list[TrainVideo], step: int, seed: int, batch_size: int, clips: ClipSettings) -> DrawnStep:
    """Step ``step``'s clips, drawn from generators seeded by (``seed``, ``step``)."""
    rng = np.random.default_rng([seed, step])
    torch.manual_seed(step_seed(seed, step))
    drawn = [sample_clip(rng, videos, clips) for _ in range(batch_size)]
    return DrawnStep(step, torch.stack([c[0] for c in drawn], 1), torch.stack([c[1] for c in drawn], 1),
                     rng.bit_generator.state, step_seed(seed, step), torch.get_rng_state())


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process when its parent dies (elsewhere: the polling below still notices)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _work(index: int, workers: int, start: int, stop: int, videos: list[TrainVideo], seed: int, batch_size: int,
          clips: ClipSettings, out: mp.Queue, done, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the training process's to handle; it ends us
    _die_with_parent(parent)
    torch.set_num_threads(1)
    try:
        for step in range(start + index, stop, workers):
            drawn = draw_step(videos, step, seed, batch_size, clips)
            drawn.frames.share_memory_()  # here, so that a full /dev/shm is reported, not lost in the queue's thread
            drawn.masks.share_memory_()
            while not done.is_set():
                try:
                    out.put(("ok", step, drawn), timeout=POLL_S)
                    break
                except queue.Full:
                    if os.getppid() != parent:
                        return
            if done.is_set():
                return
    except Exception as err:  # noqa: BLE001 - reported to the main process, which raises it as one line
        out.put(("error", step, f"{type(err).__name__}: {err}"))
    while not done.wait(POLL_S):  # stay until the main process has taken every clip out of shared memory
        if os.getppid() != parent:
            return


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
                                                self.done, os.getpid()))
                          for i, q in enumerate(self.queues)]
        try:
            for p in self.processes:
                p.start()
        except BaseException:
            self.close()
            raise

    def take(self, step: int) -> DrawnStep:
        """The clips of ``step``, which must be the next step in order."""
        if step != self.next:
            raise Effsam2Error(f"clip prefetcher: step {step} asked for, {self.next} is next")
        index = (step - self.start) % len(self.queues)
        while True:
            try:
                kind, drawn_step, payload = self.queues[index].get(timeout=POLL_S)
                break
            except queue.Empty:
                if not self.processes[index].is_alive():
                    raise Effsam2Error(f"clip worker {index} died (exit code {self.processes[index].exitcode}) "
                                       f"before drawing step {step}") from None
        if kind == "error":
            raise Effsam2Error(f"clip worker {index} failed on step {drawn_step}: {payload}")
        if drawn_step != step:
            raise Effsam2Error(f"clip worker {index} sent step {drawn_step} for step {step} (a message was lost)")
        self.next += 1
        return payload

    def close(self) -> None:
        """Stop every worker now (they hold nothing the training process still needs)."""
        self.done.set()
        for p in self.processes:
            if p.is_alive():
                p.terminate()
        for p in self.processes:
            if p.pid is not None:
                p.join()
        for q in self.queues:
            q.cancel_join_thread()
            q.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
