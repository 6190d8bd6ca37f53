"""EfficientTAM configs: state-dict layout of all 8 official configs against the schemas of the official code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from effsam2.accel.pooled_memory import PooledMemoryBackend
from effsam2.build import build_model, model_schema
from effsam2.modeling.memory_attention import DenseMemoryBackend
from effsam2.registry import get_config, list_models

NAMES = ["efficienttam_ti", "efficienttam_ti_1", "efficienttam_ti_2", "efficienttam_ti_512x512",
         "efficienttam_s", "efficienttam_s_1", "efficienttam_s_2", "efficienttam_s_512x512"]


@pytest.fixture(scope="module")
def schema_dir(shared_dir: Path) -> Path:
    return shared_dir / "fixtures" / "efficienttam" / "schemas"


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_matches_official_schema(schema_dir: Path, name: str) -> None:
    ref = json.loads((schema_dir / f"{name}.json").read_text())
    expected = [(k, tuple(v)) for k, v in ref["state_dict"].items()]
    ours = list(model_schema(name))
    assert [k for k, _ in ours] == [k for k, _ in expected], "keys or key order differ"
    assert ours == expected
    assert len(ours) == ref["num_tensors"] == 455
    assert sum(torch.Size(s).numel() for _, s in ours) == ref["num_elements"]
    assert get_config(name).image_size == ref["image_size"]


@pytest.mark.parametrize("name", NAMES)
def test_config_values(name: str) -> None:
    config = get_config(name)
    assert name in list_models()
    assert config.family == "efficienttam"
    assert config.checkpoint_file == f"{name}.pt"
    assert not config.use_high_res_features
    tc = config.tracker  # SAM 2.0 pointer settings, the rest as SAM 2.1
    assert not (tc.add_tpos_enc_to_obj_ptrs or tc.proj_tpos_enc_in_obj_ptrs or tc.use_signed_tpos_enc_to_obj_ptrs
                or tc.no_obj_embed_spatial)
    assert (tc.num_maskmem, tc.max_obj_ptrs_in_encoder, tc.multimask_min_pt_num, tc.multimask_max_pt_num) == (7, 16, 0, 1)
    assert config.trunk.embed_dim == (192 if "_ti" in name else 384)
    assert config.trunk.num_heads == (3 if "_ti" in name else 6)
    assert config.image_size == (512 if name.endswith("512x512") else 1024)


@pytest.mark.parametrize("name, form", [("efficienttam_ti", None), ("efficienttam_ti_1", "exact"),
                                        ("efficienttam_ti_2", "sdpa"), ("efficienttam_s_512x512", None)])
def test_official_memory_attention(name: str, form: str | None) -> None:
    with torch.device("meta"):
        model = build_model(name, device="meta")
    backend = model.memory_attention.backend
    if form is None:
        assert type(backend) is DenseMemoryBackend
    else:
        assert isinstance(backend, PooledMemoryBackend)
        assert (backend.window, backend.form, backend.engage) == (2, form, "official")
    # the accelerations can be changed at build time on any model
    with torch.device("meta"):
        other = build_model(name, device="meta", accel="pool-sdpa", pool_window=4)
    assert (other.memory_attention.backend.window, other.memory_attention.backend.form) == (4, "sdpa")
