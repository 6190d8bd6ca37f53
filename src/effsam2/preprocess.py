"""Frame preprocessing shared by the SAM 2 and EfficientTAM video predictors.

The official predictors squash each RGB frame to S x S with PIL's bicubic resize (no aspect ratio
kept), scale to [0, 1] in float64, store float32 and normalise with the ImageNet statistics in
float32. Reproducing the exact resizer matters: another bicubic kernel differs by whole uint8 steps.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def preprocess_frame(rgb: np.ndarray, image_size: int) -> torch.Tensor:
    """(H, W, 3) uint8 RGB frame -> (3, S, S) float32 normalised model input, S = ``image_size``."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 array, got {rgb.dtype} {rgb.shape}")
    resized = Image.fromarray(rgb).resize((image_size, image_size), Image.BICUBIC)
    # Divide in float64 first, then round to float32, as the reference does.
    scaled = (np.asarray(resized, dtype=np.uint8) / 255.0).astype(np.float32)
    img = torch.from_numpy(scaled).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return (img - mean) / std
