"""``--dtype auto|fp32|bf16``: which autocast dtype a run uses, chosen from the hardware for ``auto``."""

from __future__ import annotations

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


def resolve_dtype(name: str, device: torch.device | str) -> str:
    """'fp32' or 'bf16' for ``name``: ``auto`` is bf16 on CUDA and on CPUs with native bf16, else fp32."""
    if name not in DTYPE_CHOICES:
        raise Effsam2Error(f"unknown dtype {name!r}: use {', '.join(DTYPE_CHOICES)}")
    if name != "auto":
        return name
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16"
    return "bf16" if cpu_has_native_bf16() else "fp32"
