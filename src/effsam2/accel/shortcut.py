"""Sparse Window Routing (SWR), part 3: the shortcut that carries background windows past stage 3.

As shipped with Efficient-SAM2 (the "bottleneck" variant used for b+ and l): LayerNorm (eps 1e-6) ->
Linear(C, C/2) -> ReLU -> Dropout(0.1) -> Linear(C/2, C), plus the input (residual). The down-projection
is Kaiming-normal (fan-in, ReLU gain), the up-projection normal with std 1e-3 and both biases zero, so
an untrained shortcut is close to the identity. C is the stage-3 width (448 for b+, about 0.2 M
parameters). Parameter names are the official ones (``norm``, ``down_project``, ``up_project``), so an
official shortcut state dict loads unchanged.

A trained shortcut is saved on its own as safetensors with metadata naming the model it was trained
for; loading checks that metadata so a shortcut of another model fails with a clear ``CheckpointError``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from effsam2.checkpoint import SAFETENSORS_SUFFIX, read_safetensors_metadata, read_state_dict, save_state_dict
from effsam2.configs import HieraConfig, ModelConfig
from effsam2.errors import CheckpointError

FORMAT = "effsam2-swr-shortcut"
FORMAT_VERSION = "1"


class WindowShortcut(nn.Module):
    """Residual bottleneck MLP on (..., C) tokens: x + up(dropout(relu(down(norm(x)))))."""

    def __init__(self, dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.down_project = nn.Linear(dim, dim // 2)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.up_project = nn.Linear(dim // 2, dim)
        nn.init.kaiming_normal_(self.down_project.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.down_project.bias)
        nn.init.normal_(self.up_project.weight, std=1e-3)  # starts near the identity
        nn.init.zeros_(self.up_project.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up_project(self.dropout(self.activation(self.down_project(self.norm(x)))))


def stage3_width(config: ModelConfig) -> int:
    """Channels of the Hiera stage-3 map (the shortcut's width): embed_dim * 4 (448 for b+)."""
    if not isinstance(config.trunk, HieraConfig):
        raise TypeError(f"window routing needs a Hiera trunk; {config.name} has none")
    return config.trunk.embed_dim * 4


def new_shortcut(config: ModelConfig) -> WindowShortcut:
    """An untrained shortcut for ``config`` (official initialisation, train mode, CPU)."""
    return WindowShortcut(stage3_width(config))


def save_shortcut(shortcut: WindowShortcut, path: str | os.PathLike, config: ModelConfig,
                  extra: dict[str, str] | None = None) -> None:
    """Write ``shortcut`` atomically as safetensors; metadata records the model name and widths."""
    if Path(path).suffix != SAFETENSORS_SUFFIX:
        raise CheckpointError(f"a shortcut is saved as {SAFETENSORS_SUFFIX}, got {path}")
    metadata = {"format": FORMAT, "version": FORMAT_VERSION, "model": config.name,
                "family": config.family, "dim": str(shortcut.dim), "window": str(config.trunk.window_spec[2])}
    metadata.update(extra or {})
    save_state_dict(shortcut.state_dict(), path, metadata)


def load_shortcut(path: str | os.PathLike, config: ModelConfig,
                  device: str | torch.device = "cpu") -> WindowShortcut:
    """Load a shortcut for the model of ``config`` (eval mode).

    A safetensors file must carry our metadata for the same model name; a plain state dict (``.pt`` /
    ``.pth``, e.g. an official Efficient-SAM2 shortcut) is accepted when its shapes fit the model.
    """
    dim = stage3_width(config)
    state = read_state_dict(path)  # CheckpointError for a missing, empty or corrupt file
    if Path(path).suffix == SAFETENSORS_SUFFIX:
        meta = read_safetensors_metadata(path)
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not an SWR shortcut file (no '{FORMAT}' metadata); "
                                  "train one with `effsam2 train-shortcut`")
        if meta.get("model") != config.name:
            raise CheckpointError(f"shortcut {path} was trained for {meta.get('model')}, not {config.name}; "
                                  f"train one for {config.name} with `effsam2 train-shortcut`")
    shortcut = WindowShortcut(dim)
    expected = {k: tuple(v.shape) for k, v in shortcut.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        width = found.get("norm.weight", ("?",))[0]
        raise CheckpointError(f"shortcut {path} does not fit {config.name} (stage-3 width {dim}, file has "
                              f"{width} and keys {sorted(found)[:3]}...)")
    shortcut.load_state_dict(state, strict=True)
    return shortcut.to(device).eval()
