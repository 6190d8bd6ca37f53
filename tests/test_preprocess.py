"""Frame preprocessing against the official EfficientTAM predictor's input tensor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from effsam2.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess_frame


def test_reproduces_official_input(shared_dir: Path) -> None:
    root = shared_dir / "fixtures" / "efficienttam"
    rgb = np.array(Image.open(root / "inputs" / "frames" / "00000.jpg").convert("RGB"))
    assert rgb.shape == (540, 960, 3)
    with np.load(root / "dense" / "encoder_frame0.npz") as npz:
        ref = torch.from_numpy(npz["input"][0])
    x = preprocess_frame(rgb, 512)
    assert x.dtype == torch.float32 and x.shape == (3, 512, 512)
    assert (x - ref).abs().max().item() <= 1e-6


def test_constant_frame_normalises_per_channel() -> None:
    rgb = np.full((30, 50, 3), 255, dtype=np.uint8)
    x = preprocess_frame(rgb, 64)
    expected = (1.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(x[:, 10, 10].numpy(), expected, atol=1e-6)


def test_rejects_non_uint8() -> None:
    with pytest.raises(ValueError):
        preprocess_frame(np.zeros((8, 8, 3), dtype=np.float32), 16)
