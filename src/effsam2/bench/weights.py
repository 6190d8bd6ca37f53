"""Random weights that track something, for benchmarking without a checkpoint.

With the default initialisation the object-score head is negative, so every mask is the constant
"no object" placeholder and the memory encoder sees nothing. The dense path costs the same either way,
but content-dependent accelerations (SWR picks windows from the previous masks) would be measured on a
degenerate input. So the benchmark perturbs every floating parameter with Gaussian noise (sigma 0.02 for
normalisation scales, max(0.04, std) otherwise, as REFERENCE.md describes) and sets the object-score
bias to +4: masks then have both signs (about half positive) on every frame. Each row records the
fraction of positive mask logits and the mean object score, so a degenerate run is visible.
"""

from __future__ import annotations

import torch
from torch import nn

from effsam2.build import build_model
from effsam2.registry import get_config, shipped_weights

DESCRIPTION = "random (seed {seed}; noise + object-score bias +4 so objects are tracked)"


def _norm_weights(model: nn.Module) -> set[str]:
    names = set()
    for mod_name, module in model.named_modules():
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or "Norm" in type(module).__name__:
            names.add(f"{mod_name}.weight" if mod_name else "weight")
    return names


@torch.no_grad()
def make_tracking_weights(model: nn.Module, seed: int = 0, score_bias: float = 4.0) -> None:
    """Perturb ``model``'s parameters in place (deterministic in ``seed``) so its masks are not degenerate."""
    gen = torch.Generator().manual_seed(seed + 3)  # separate from the seed that built the model
    norms = _norm_weights(model)
    for name, param in model.named_parameters():
        if not param.is_floating_point():
            continue
        if name in norms:
            sigma = 0.02
        else:
            sigma = max(0.04, param.std().item() if param.numel() > 1 else 0.0)
        param.add_(torch.randn(param.shape, generator=gen).to(param) * sigma)
    head = model.sam_mask_decoder.pred_obj_score_head
    last = head.layers[-1] if hasattr(head, "layers") else head
    last.bias.fill_(score_bias)


def reference_state(name: str, image_size: int, checkpoint: str | None, seed: int) -> tuple[dict, str]:
    """The weights every row of one model shares (CPU state dict) and a description for the record."""
    torch.manual_seed(seed)
    model = build_model(name, checkpoint, image_size=image_size)  # shipped weights when a model has them
    if checkpoint is None:
        shipped = shipped_weights(get_config(name))
        if shipped is not None:
            return model.state_dict(), f"shipped ({shipped.name})"
        make_tracking_weights(model, seed)
        return model.state_dict(), DESCRIPTION.format(seed=seed)
    return model.state_dict(), str(checkpoint)
