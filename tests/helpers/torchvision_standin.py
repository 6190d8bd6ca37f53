"""A minimal stand-in for the three torchvision transforms the official SAM 2 image predictor imports.

``sam2.sam2_image_predictor`` imports ``sam2.utils.transforms``, which needs
``from torchvision.transforms import Normalize, Resize, ToTensor``; torchvision cannot be installed
here (it would pull a CUDA torch). The classes below are written from torchvision's documented
behaviour, not from effsam2's code:

- ``ToTensor``: a PIL image or (H, W, C) uint8 array -> (C, H, W) float32 tensor divided by 255.
- ``Resize(size)`` on a tensor: resample the last two axes to ``size`` = (h, w) with bilinear
  interpolation, ``align_corners=False`` and ``antialias=True`` (torchvision's default since 0.17);
  the input is returned unchanged when it already has that size.
- ``Normalize(mean, std)``: per channel ``(x - mean) / std``.

The official code wraps ``Resize`` and ``Normalize`` in ``torch.jit.script``, so both are scriptable
modules. :func:`official_image_predictor_class` registers the stand-in in ``sys.modules`` only for the
duration of the import and removes every module that import added afterwards, so nothing else in the
test session sees a fake torchvision. When a real torchvision is importable it is used instead.
"""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ToTensor:
    """PIL image / (H, W, C) uint8 numpy array -> (C, H, W) float32 in [0, 1]."""

    def __call__(self, pic) -> torch.Tensor:
        arr = np.asarray(pic)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.dtype != np.uint8:
            raise TypeError(f"this stand-in only converts uint8 images, got {arr.dtype}")
        chw = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
        return chw.to(torch.float32).div(255)


class Resize(nn.Module):
    """Resize a (..., H, W) float tensor to exactly (h, w): bilinear, antialiased, align_corners=False."""

    def __init__(self, size, antialias: bool = True) -> None:
        super().__init__()
        if isinstance(size, int) or len(size) != 2:
            raise NotImplementedError("this stand-in only supports an explicit (h, w) size")
        self.size: list[int] = [int(size[0]), int(size[1])]
        self.antialias: bool = antialias

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[-2] == self.size[0] and img.shape[-1] == self.size[1]:
            return img
        lead = img.shape[:-2]
        flat = img.reshape(-1, 1, img.shape[-2], img.shape[-1])
        out = F.interpolate(flat, size=self.size, mode="bilinear", align_corners=False,
                            antialias=self.antialias)
        return out.reshape(lead + out.shape[-2:])


class Normalize(nn.Module):
    """(C, H, W) or (B, C, H, W) tensor -> (x - mean[c]) / std[c]."""

    def __init__(self, mean, std) -> None:
        super().__init__()
        self.mean: list[float] = [float(m) for m in mean]
        self.std: list[float] = [float(s) for s in std]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x - mean) / std


def _standin_modules() -> dict[str, types.ModuleType]:
    package = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    transforms.ToTensor = ToTensor
    transforms.Resize = Resize
    transforms.Normalize = Normalize
    package.transforms = transforms
    return {"torchvision": package, "torchvision.transforms": transforms}


def _real_torchvision_available() -> bool:
    try:
        importlib.import_module("torchvision.transforms")
    except ImportError:
        return False
    return True


def official_image_predictor_class():
    """``sam2.sam2_image_predictor.SAM2ImagePredictor``, imported with the stand-in torchvision if needed."""
    if _real_torchvision_available():
        return importlib.import_module("sam2.sam2_image_predictor").SAM2ImagePredictor
    before = set(sys.modules)
    sys.modules.update(_standin_modules())
    try:
        module = importlib.import_module("sam2.sam2_image_predictor")
    finally:
        # Drop the stand-in and every module imported on top of it (the class keeps what it needs), and
        # the attributes that importing a submodule sets on its parent package.
        for name in set(sys.modules) - before:
            del sys.modules[name]
            parent, _, child = name.rpartition(".")
            if parent in sys.modules and hasattr(sys.modules[parent], child):
                delattr(sys.modules[parent], child)
    return module.SAM2ImagePredictor
