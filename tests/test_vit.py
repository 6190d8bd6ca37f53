"""EfficientTAM image encoder (ViT trunk + single-level neck) against the official fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from effsam2.modeling.vit import ViTTrunk, resize_abs_pos
from effsam2.modeling.vit_neck import ViTNeck

WINDOWED = (0, 1, 3, 4, 6, 7, 9, 10)
TRUNK = "image_encoder.trunk."
NECK = "image_encoder.neck."


def build(width: int, heads: int) -> tuple[ViTTrunk, ViTNeck]:
    trunk = ViTTrunk(embed_dim=width, depth=12, num_heads=heads, patch_size=16, window_size=14,
                     window_block_indexes=WINDOWED, pretrain_img_size=224)
    return trunk, ViTNeck(backbone_channel_list=trunk.channel_list, d_model=256)


def sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def etam_dir(shared_dir: Path) -> Path:
    return shared_dir / "fixtures" / "efficienttam"


@pytest.fixture(scope="module")
def encoder_ref(etam_dir: Path) -> dict[str, torch.Tensor]:
    with np.load(etam_dir / "dense" / "encoder_frame0.npz") as npz:
        return {k: torch.from_numpy(npz[k]) for k in npz.files}


@pytest.fixture(scope="module")
def ti_encoder(etam_dir: Path) -> tuple[ViTTrunk, ViTNeck]:
    from safetensors.torch import load_file

    weights = {k: v.float() for k, v in load_file(etam_dir / "weights_ti_512.safetensors").items()}
    trunk, neck = build(192, 3)
    trunk.load_state_dict(sub_state(weights, TRUNK), strict=True)
    neck.load_state_dict(sub_state(weights, NECK), strict=True)
    return trunk.eval(), neck.eval()


@pytest.fixture(scope="module")
def ti_outputs(ti_encoder, encoder_ref) -> dict[str, torch.Tensor]:
    trunk, neck = ti_encoder
    with torch.no_grad():
        trunk_out = trunk(encoder_ref["input"])
        feats, pos = neck(trunk_out)
    assert len(trunk_out) == len(feats) == len(pos) == 1
    return {"trunk_out": trunk_out[0], "backbone_fpn_0": feats[0], "vision_pos_enc_0": pos[0]}


@pytest.mark.parametrize("name", ["efficienttam_ti", "efficienttam_s"])
def test_state_dict_matches_schema(etam_dir: Path, name: str) -> None:
    schema = json.loads((etam_dir / "schemas" / f"{name}.json").read_text())["state_dict"]
    width, heads = (192, 3) if name.endswith("_ti") else (384, 6)
    trunk, neck = build(width, heads)
    assert trunk.channel_list == neck.backbone_channel_list == [width]
    ours = {TRUNK + k: list(v.shape) for k, v in trunk.state_dict().items()}
    ours.update({NECK + k: list(v.shape) for k, v in neck.state_dict().items()})
    expected = {k: v for k, v in schema.items() if k.startswith("image_encoder.")}
    assert ours == expected


def test_outputs_not_degenerate(ti_outputs) -> None:
    for name, t in ti_outputs.items():
        assert t.shape == (1, 256 if name != "trunk_out" else 192, 32, 32), name
        assert torch.isfinite(t).all(), name
        assert t.std() > 0.1, name
    for name in ("trunk_out", "backbone_fpn_0"):
        # features vary over the grid in (nearly) every channel, not just globally
        assert (ti_outputs[name].flatten(2).std(-1) > 1e-2).float().mean() > 0.9, name
    pos = ti_outputs["vision_pos_enc_0"]
    assert pos.min() >= -1 and pos.max() <= 1 and pos.min() < -0.99 and pos.max() > 0.99


@pytest.mark.parametrize("key, atol", [("trunk_out", 2e-4), ("backbone_fpn_0", 1e-4), ("vision_pos_enc_0", 1e-5)])
def test_matches_official(ti_outputs, encoder_ref, key: str, atol: float) -> None:
    diff = (ti_outputs[key] - encoder_ref[key]).abs().max().item()
    assert diff <= atol, f"{key}: max abs diff {diff:.3g} > {atol}"


@pytest.mark.parametrize("hw", [(256, 256), (1024, 1024), (224, 224), (400, 400), (256, 512)])
def test_other_image_sizes(hw: tuple[int, int]) -> None:
    """Grids that are / are not multiples of the 14-token window, and a non-square input."""
    torch.manual_seed(0)
    trunk, neck = build(192, 3)
    with torch.no_grad():
        torch.nn.init.normal_(trunk.pos_embed, std=0.02)
        out = trunk(torch.randn(1, 3, *hw))
        feats, pos = neck(out)
    gh, gw = hw[0] // 16, hw[1] // 16
    assert out[0].shape == (1, 192, gh, gw)
    assert feats[0].shape == pos[0].shape == (1, 256, gh, gw)
    assert torch.isfinite(feats[0]).all()


def test_image_size_must_be_patch_multiple() -> None:
    trunk, _ = build(192, 3)
    with pytest.raises(ValueError):
        trunk(torch.zeros(1, 3, 250, 250))


def test_pos_embed_drops_cls_and_skips_resize_at_pretrain_grid() -> None:
    table = torch.randn(1, 197, 8)
    same = resize_abs_pos(table, True, (14, 14))
    assert torch.equal(same, table[:, 1:].reshape(1, 14, 14, 8))
    resized = resize_abs_pos(table, True, (32, 32))
    assert resized.shape == (1, 32, 32, 8)


def test_batch_is_independent(ti_encoder, encoder_ref) -> None:
    """Windowing and attention must not mix images of a batch."""
    trunk, _ = ti_encoder
    x = encoder_ref["input"][..., :256, :256]
    with torch.no_grad():
        single = trunk(x)[0]
        pair = trunk(torch.cat([x, x.flip(-1)]))[0]
    assert torch.allclose(pair[:1], single, atol=1e-5)
