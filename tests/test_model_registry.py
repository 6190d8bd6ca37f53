"""Model families are open: a toy family registered from this test module builds, lists and tracks,
without touching effsam2's files; the registry refuses clashes and resolves ``default``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from torch import nn

import effsam2
from effsam2.configs import ModelConfig
from effsam2.errors import ConfigError, UnknownModelError
from effsam2.modeling.image_encoder import FpnNeck, ImageEncoder
from effsam2.registry import (
    ModelFamily,
    default_model,
    get_config,
    get_family,
    list_models,
    register_family,
    unregister_family,
)


@dataclass(frozen=True)
class ToyTrunkConfig:
    width: int = 16

    @property
    def size_step(self) -> int:
        return 16


class ToyTrunk(nn.Module):
    """Three strided convs: stride 4, 8, 16 maps (highest resolution first)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 4, stride=4)
        self.down1 = nn.Conv2d(width, 2 * width, 2, stride=2)
        self.down2 = nn.Conv2d(2 * width, 4 * width, 2, stride=2)
        self.channel_list = [4 * width, 2 * width, width]

    def forward(self, x):
        a = self.stem(x)
        b = self.down1(a)
        return [a, b, self.down2(b)]


def build_toy_encoder(config: ModelConfig) -> ImageEncoder:
    trunk = ToyTrunk(config.trunk.width)
    return ImageEncoder(trunk, FpnNeck(config.d_model, trunk.channel_list, fpn_top_down_levels=[1, 2]))


TOY = ModelConfig(name="toy_tracker", family="toy", trunk=ToyTrunkConfig(), checkpoint_file="toy.safetensors",
                  image_size=128, d_model=32, mem_dim=16, memory_layers=1, memory_ffn_dim=64, decoder_mlp_dim=64)


@pytest.fixture
def toy_family():
    register_family(ModelFamily("toy", (TOY,), build_toy_encoder, description="a test family"))
    yield
    unregister_family("toy")


def test_a_registered_family_builds_lists_and_tracks(toy_family, capsys):
    assert "toy_tracker" in list_models()
    assert get_family("toy_tracker").name == "toy"
    model = effsam2.build_model("toy_tracker")
    assert isinstance(model.image_encoder.trunk, ToyTrunk)
    assert model.config.trunk == ToyTrunkConfig()
    predictor = effsam2.VideoPredictor(model)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (96, 160, 3), dtype=np.uint8) for _ in range(4)]
    state = predictor.init_state(frames)
    mask = np.zeros((96, 160), bool)
    mask[30:60, 50:100] = True
    predictor.add_new_mask(state, 0, 1, mask)
    seen = [(t, logits.shape) for t, _, logits in predictor.propagate_in_video(state)]
    assert [t for t, _ in seen] == [0, 1, 2, 3]
    assert all(shape == (1, 1, 96, 160) for _, shape in seen)
    from effsam2.cli import main

    assert main(["models"]) == 0
    assert "toy_tracker" in capsys.readouterr().out


def test_size_step_comes_from_the_family_trunk(toy_family):
    assert get_config("toy_tracker", 64).image_size == 64
    with pytest.raises(ConfigError, match="multiple of 16"):
        get_config("toy_tracker", 72)


def test_registry_refuses_clashes_and_foreign_configs(toy_family):
    with pytest.raises(ConfigError, match="already registered"):
        register_family(ModelFamily("toy", (TOY,), build_toy_encoder))
    other = ModelFamily("toy2", (TOY,), build_toy_encoder)
    with pytest.raises(ConfigError, match="already registered"):
        register_family(other)
    from dataclasses import replace

    wrong = replace(TOY, name="toy_other")  # still says family "toy"
    with pytest.raises(ConfigError, match="do not name family"):
        register_family(ModelFamily("toy3", (wrong,), build_toy_encoder))


def test_unregistering_removes_the_models(toy_family):
    unregister_family("toy")
    try:
        with pytest.raises(UnknownModelError):
            get_config("toy_tracker")
    finally:
        register_family(ModelFamily("toy", (TOY,), build_toy_encoder))


def test_default_resolves_to_the_registered_default():
    assert default_model() == "effsam2_lite0"
    assert get_config("default") == get_config("effsam2_lite0")
    assert get_family("default").name == "effsam2-lite"


def test_builtin_families_keep_their_models():
    names = list_models()
    for name in ("sam2.1_hiera_t", "sam2_hiera_l", "efficienttam_ti_1", "efficienttam_s_512x512", "effsam2_lite0"):
        assert name in names
    assert get_config("sam2.1_hiera_b+").family == "sam2.1"
