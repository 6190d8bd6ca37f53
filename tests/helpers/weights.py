"""Non-degenerate random weights (REFERENCE.md recipe) for any model with the official parameter names."""

from __future__ import annotations

import torch
from torch import nn


def _layer_norm_weights(model: nn.Module) -> set[str]:
    names = set()
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm) or type(module).__name__ == "LayerNorm2d":
            names.add(f"{mod_name}.weight" if mod_name else "weight")
    return names


@torch.no_grad()
def perturb_weights(model: nn.Module, seed: int = 3, score_bias: float = 4.0) -> None:
    """Add the non-degeneracy noise of REFERENCE.md to every floating parameter (in place)."""
    gen = torch.Generator().manual_seed(seed)
    ln_weights = _layer_norm_weights(model)
    for name, param in model.named_parameters():
        if not param.is_floating_point():
            continue
        if name in ln_weights:
            sigma = 0.02
        else:
            std = param.std().item() if param.numel() > 1 else 0.0
            sigma = max(0.04, std)
        param.add_(torch.randn(param.shape, generator=gen) * sigma)
    head = model.sam_mask_decoder.pred_obj_score_head
    last = head.layers[-1] if hasattr(head, "layers") else head
    last.bias.fill_(score_bias)


def random_checkpoint(path, name: str = "sam2.1_hiera_t") -> None:
    """Write an official-layout checkpoint ({"model": state_dict}) of ``name`` with non-degenerate weights."""
    from effsam2.build import build_model

    torch.manual_seed(0)
    model = build_model(name, image_size=256)
    perturb_weights(model)
    torch.save({"model": model.state_dict()}, path)
