"""Non-degenerate random weights (REFERENCE.md recipe) for any model with the official parameter names.

The recipe lives in ``effsam2.bench.weights`` (the benchmark needs it too); tests apply it mostly to the
official reference model, whose weights are then copied into ours.
"""

from __future__ import annotations

import torch
from torch import nn

from effsam2.bench.weights import make_tracking_weights


def perturb_weights(model: nn.Module, seed: int = 3, score_bias: float = 4.0) -> None:
    """Add the non-degeneracy noise to every floating parameter (in place); ``seed`` seeds the noise."""
    # make_tracking_weights seeds its generator with seed + 3 (apart from the seed that built the model)
    make_tracking_weights(model, seed=seed - 3, score_bias=score_bias)


def random_checkpoint(path, name: str = "sam2.1_hiera_t") -> None:
    """Write an official-layout checkpoint ({"model": state_dict}) of ``name`` with non-degenerate weights."""
    from effsam2.build import build_model

    torch.manual_seed(0)
    model = build_model(name, image_size=256)
    perturb_weights(model)
    torch.save({"model": model.state_dict()}, path)
