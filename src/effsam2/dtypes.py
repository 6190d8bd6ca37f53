"""``--dtype auto|fp32|bf16``: which autocast dtype a run uses, chosen from the hardware for ``auto``."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from effsam2.errors import Effsam2Error

DTYPE_CHOICES = ("auto", "fp32", "bf16")
# CPU flags (Linux /proc/cpuinfo) that mean bf16 matrix products run natively
NATIVE_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU advertises AMX-BF16 or AVX512-BF16 (read from /proc/cpuinfo when not given)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.exists() else ""
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return any(flag in flags for flag in NATIVE_BF16_CPU_FLAGS)


BF16_EVERYWHERE = ("cuda", "cpu")


def resolve_dtype(name: str, device: torch.device | str, bf16_auto: tuple[str, ...] = BF16_EVERYWHERE) -> str:
    """'fp32' or 'bf16' for ``name``: ``auto`` is bf16 on CUDA and on CPUs with native bf16, else fp32.

    ``bf16_auto`` (``ModelConfig.bf16_auto``) lists the device types where ``auto`` may choose bf16 for the
    model: one measured to lose accuracy, or to run no faster, on a device type leaves it out; an explicit
    ``bf16`` is still honoured."""
    return explain_dtype(name, device, bf16_auto)[0]


def explain_dtype(name: str, device: torch.device | str,
                  bf16_auto: tuple[str, ...] = BF16_EVERYWHERE) -> tuple[str, str]:
    """(``resolve_dtype``'s answer, why: a few words for a command's first line)."""
    if name not in DTYPE_CHOICES:
        raise Effsam2Error(f"unknown dtype {name!r}: use {', '.join(DTYPE_CHOICES)}")
    if name != "auto":
        return name, "asked for"
    device = torch.device(device)
    if device.type not in ("cuda", "cpu"):
        return "fp32", f"auto: fp32 on {device.type}"
    if device.type not in bf16_auto:
        return "fp32", f"auto: this model runs fp32 on {device.type}, see its ModelConfig.bf16_auto"
    if device.type == "cuda":
        return "bf16", "auto: CUDA"
    if cpu_has_native_bf16():
        return "bf16", "auto: native bf16 on this CPU"
    return "fp32", "auto: no native bf16 on this CPU"


def autocast(device: torch.device | str, dtype: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for ``dtype == 'bf16'``; a no-op context for fp32."""
    if dtype not in ("fp32", "bf16"):
        raise Effsam2Error(f"dtype must be resolved to fp32 or bf16, got {dtype!r}")
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
