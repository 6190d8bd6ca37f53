"""EfficientTAM model configurations (filled in with the ViT trunk)."""

from __future__ import annotations


def efficienttam_models() -> dict:
    return {}
