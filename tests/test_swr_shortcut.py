"""SWR shortcut: architecture and initialisation as shipped, save/load with metadata, clear errors."""

import pytest
import torch

from effsam2.accel.shortcut import WindowShortcut, load_shortcut, new_shortcut, save_shortcut, stage3_width
from effsam2.checkpoint import save_state_dict
from effsam2.errors import CheckpointError
from effsam2.registry import get_config

BPLUS = get_config("sam2.1_hiera_b+")
TINY = get_config("sam2.1_hiera_t", 512)


def test_architecture_and_init():
    torch.manual_seed(0)
    sc = new_shortcut(BPLUS)
    assert stage3_width(BPLUS) == 448 and stage3_width(get_config("sam2.1_hiera_l")) == 576
    # LayerNorm (2C) + Linear C -> C/2 + Linear C/2 -> C: 2*448 + 448*224 + 224 + 224*448 + 448
    assert sum(p.numel() for p in sc.parameters()) == 2 * 448 + 448 * 224 + 224 + 224 * 448 + 448
    assert sorted(sc.state_dict()) == ["down_project.bias", "down_project.weight", "norm.bias", "norm.weight",
                                       "up_project.bias", "up_project.weight"]
    assert sc.norm.eps == 1e-6
    assert torch.all(sc.up_project.bias == 0) and torch.all(sc.down_project.bias == 0)
    assert sc.up_project.weight.std().item() == pytest.approx(1e-3, rel=0.05)
    assert sc.down_project.weight.std().item() == pytest.approx((2 / 448) ** 0.5, rel=0.05)  # Kaiming, ReLU
    x = torch.randn(3, 14, 14, 448)
    sc.eval()
    y = sc(x)
    # near the identity at initialisation, and exactly the formula
    # (224 hidden units of about unit size times weights of std 1e-3: changes of about 0.015)
    assert 0 < (y - x).abs().mean() < 0.03 and (y - x).abs().max() < 0.2
    hidden = torch.relu(sc.down_project(torch.nn.functional.layer_norm(x, (448,), sc.norm.weight, sc.norm.bias, 1e-6)))
    torch.testing.assert_close(y, x + sc.up_project(hidden))
    sc.train()  # dropout 0.1 on the hidden units only in training
    assert not torch.equal(sc(x), sc(x))
    assert sc.dropout.p == 0.1


def test_save_load_round_trip(tmp_path):
    sc = new_shortcut(TINY)
    with torch.no_grad():
        sc.up_project.weight.normal_()
    path = tmp_path / "t.safetensors"
    save_shortcut(sc, path, TINY, {"steps_done": "3"})
    loaded = load_shortcut(path, get_config("sam2.1_hiera_t"))  # the image size does not matter
    assert not loaded.training
    for k, v in sc.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    from effsam2.checkpoint import read_safetensors_metadata

    meta = read_safetensors_metadata(path)
    assert meta["model"] == "sam2.1_hiera_t" and meta["dim"] == "384" and meta["steps_done"] == "3"


def test_load_errors(tmp_path):
    sc = new_shortcut(TINY)
    path = tmp_path / "t.safetensors"
    save_shortcut(sc, path, TINY)
    with pytest.raises(CheckpointError, match="trained for sam2.1_hiera_t, not sam2.1_hiera_b\\+"):
        load_shortcut(path, BPLUS)
    with pytest.raises(CheckpointError, match="trained for sam2.1_hiera_t, not sam2_hiera_t"):
        load_shortcut(path, get_config("sam2_hiera_t"))  # same width, other model
    with pytest.raises(CheckpointError, match="not found"):
        load_shortcut(tmp_path / "missing.safetensors", TINY)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_shortcut(corrupt, TINY)
    foreign = tmp_path / "foreign.safetensors"  # a safetensors file that is not a shortcut
    save_state_dict({"w": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not an SWR shortcut"):
        load_shortcut(foreign, TINY)
    with pytest.raises(CheckpointError, match="safetensors"):
        save_shortcut(sc, tmp_path / "t.pt", TINY)


def test_plain_state_dict_loads_when_it_fits(tmp_path):
    # official Efficient-SAM2 shortcuts are plain state dicts saved with torch.save, same key names
    official = WindowShortcut(448).state_dict()
    path = tmp_path / "bypass_bottleneck_base.pth"
    torch.save(official, path)
    loaded = load_shortcut(path, BPLUS)
    assert torch.equal(loaded.down_project.weight, official["down_project.weight"])
    with pytest.raises(CheckpointError, match="does not fit sam2.1_hiera_t"):
        load_shortcut(path, TINY)
