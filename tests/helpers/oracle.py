"""The official ``sam2==1.1.0`` package as a parity oracle (the [oracle] extra).

Parity tests build the reference model, give it non-degenerate random weights (REFERENCE.md recipe:
seed-0 build, then Gaussian noise from a separate seed-3 generator, then the object-score bias +4)
and copy the same state dict into our model.
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.helpers.weights import perturb_weights

CONFIG_FILES = {
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_t": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_s": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_b+": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_l": "configs/sam2/sam2_hiera_l.yaml",
}


def require_oracle():
    """Import the reference package; skip when absent unless CI demands it (EFFSAM2_REQUIRE_ORACLE=1)."""
    try:
        import sam2.build_sam
    except ImportError as err:
        if os.environ.get("EFFSAM2_REQUIRE_ORACLE") == "1":
            pytest.fail(f"the reference sam2 package is required here but cannot be imported: {err}")
        pytest.skip("reference sam2 package not installed (pip install -e .[oracle], see README)")
    return sam2


def size_overrides(image_size: int | None) -> list[str]:
    if image_size is None:
        return []
    side = image_size // 16
    return [
        f"++model.image_size={image_size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{side},{side}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{side},{side}]",
    ]


def build_reference(name: str, image_size: int | None = None, fill_hole_area: int = 0):
    """The official video predictor (a SAM2Base subclass) in eval mode on the CPU, seed-0 initialisation."""
    require_oracle()
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(0)
    model = build_sam2_video_predictor(CONFIG_FILES[name], None, device="cpu",
                                       hydra_overrides_extra=size_overrides(image_size))
    model.fill_hole_area = fill_hole_area  # the CUDA-only hole filling is a no-op on CPU anyway
    return model


def reference_and_ours(name: str, image_size: int | None = None):
    """(reference model, our model) with identical, non-degenerate random weights."""
    from effsam2.build import build_model

    ref = build_reference(name, image_size)
    perturb_weights(ref)
    ours = build_model(name, image_size=image_size)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours
