"""``check_device``: the one check of a ``--device`` option shared by the subcommands that run a model."""

from __future__ import annotations

import torch

from effsam2.errors import Effsam2Error

__all__ = ["check_device"]


def check_device(name: str) -> torch.device:
    """``name`` ("cpu", "cuda", "cuda:N") as a torch device that exists on this machine.

    ``Effsam2Error`` with a one-line message for a name torch does not know, a device type effsam2 does not
    run on, or a CUDA device this machine does not have (checked before any model is built, so the user
    learns it at once instead of from a traceback in ``model.to``).
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise Effsam2Error(f"unknown --device {name!r}: use cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise Effsam2Error(f"--device {name}: effsam2 runs on cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise Effsam2Error(f"--device {name}: CUDA is not available on this machine")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise Effsam2Error(f"--device {name}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    return device
