"""Checkpoint I/O: official-format .pt and safetensors round trips, and every bad-checkpoint case."""

from __future__ import annotations

import shutil

import pytest
import torch

from effsam2 import CheckpointError
from effsam2.build import build_model
from effsam2.checkpoint import read_safetensors_metadata, read_state_dict, save_state_dict

NAME = "sam2.1_hiera_t"
SIZE = 256  # the state dict does not depend on the image size; small inputs keep the test fast


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(1)
    return build_model(NAME, image_size=SIZE)


@pytest.fixture(scope="module")
def official_pt(tmp_path_factory, random_model):
    """A checkpoint in the official layout: torch.save({"model": state_dict})."""
    path = tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": random_model.state_dict()}, path)
    return path


def _outputs(model, seed=0):
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        feats = model.encode_image(x)
        heads = model.forward_sam_heads(feats.vision_feats, high_res=feats.high_res, multimask_output=True)
    return feats.vision_feats, heads.low_res_multimasks, heads.obj_ptr


def test_official_layout_pt_loads_strictly_and_reproduces_outputs(official_pt, random_model):
    loaded = build_model(NAME, official_pt, image_size=SIZE)
    for a, b in zip(_outputs(random_model), _outputs(loaded)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_round_trip_through_our_writer(tmp_path, random_model, suffix):
    path = tmp_path / f"model{suffix}"
    save_state_dict(random_model.state_dict(), path, metadata={"model": NAME} if suffix == ".safetensors" else None)
    state = read_state_dict(path)
    assert state.keys() == random_model.state_dict().keys()
    loaded = build_model(NAME, path, image_size=SIZE)
    for a, b in zip(_outputs(random_model, 3), _outputs(loaded, 3)):
        assert torch.equal(a, b)
    if suffix == ".safetensors":
        assert read_safetensors_metadata(path)["model"] == NAME
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_reference_model_checkpoint_loads_into_ours(tmp_path):
    """A checkpoint written from the official model class (same layout as the released files) loads strictly."""
    from tests.helpers.oracle import build_reference, perturb_weights

    ref = build_reference(NAME, SIZE)
    perturb_weights(ref)
    path = tmp_path / "official.pt"
    torch.save({"model": ref.state_dict()}, path)
    ours = build_model(NAME, path, image_size=SIZE)
    for key, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        build_model(NAME, tmp_path / "nope.pt")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(CheckpointError, match="folder"):
        build_model(NAME, tmp_path)


@pytest.mark.parametrize("fraction", [0.5, 0.999])
def test_truncated_official_checkpoint_gives_one_clear_error(tmp_path, official_pt, fraction):
    cut = tmp_path / "cut.pt"
    data = official_pt.read_bytes()
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError) as info:
        build_model(NAME, cut)
    message = str(info.value)
    assert "truncated or corrupt" in message and str(cut) in message
    assert "\n" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_truncated_safetensors(tmp_path, random_model):
    path = tmp_path / "m.safetensors"
    save_state_dict(random_model.state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_state_dict(path)


def test_garbage_and_empty_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint" * 100)
    with pytest.raises(CheckpointError, match="corrupt"):
        read_state_dict(junk)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_state_dict(empty)


def test_pickle_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a model checkpoint"):
        read_state_dict(path)


def test_checkpoint_of_another_model_names_the_difference_and_the_right_model(official_pt):
    with pytest.raises(CheckpointError) as info:
        build_model("sam2.1_hiera_s", official_pt, image_size=SIZE)
    message = str(info.value)
    assert "not a sam2.1_hiera_s checkpoint" in message
    assert "missing keys" in message  # s has more blocks than t
    assert "it fits sam2.1_hiera_t" in message


def test_sam2_0_checkpoint_into_sam2_1_model(tmp_path):
    torch.manual_seed(0)
    old = build_model("sam2_hiera_t", image_size=SIZE)
    path = tmp_path / "sam2_hiera_tiny.pt"
    torch.save({"model": old.state_dict()}, path)
    with pytest.raises(CheckpointError) as info:
        build_model(NAME, path, image_size=SIZE)
    message = str(info.value)
    assert "no_obj_embed_spatial" in message or "obj_ptr_tpos_proj" in message
    assert "it fits sam2_hiera_t" in message


def test_checkpoint_that_fits_nothing(tmp_path, official_pt):
    state = read_state_dict(official_pt)
    state["image_encoder.trunk.pos_embed"] = torch.zeros(1, 7, 7, 7)
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "odd.pt"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError) as info:
        build_model(NAME, path)
    message = str(info.value)
    assert "1 unexpected keys (extra.weight)" in message
    assert "image_encoder.trunk.pos_embed: checkpoint (1, 7, 7, 7) vs model (1, 96, 7, 7)" in message
    assert "does not fit any known model" in message


def test_copy_of_official_file_keeps_working(tmp_path, official_pt):
    copy = tmp_path / "copy.pt"
    shutil.copy(official_pt, copy)
    assert read_state_dict(copy).keys() == read_state_dict(official_pt).keys()
