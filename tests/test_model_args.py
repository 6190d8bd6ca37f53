"""The model options shared by `track` and `eval --model`: the model's own accelerations by default, and
one-line errors (never tracebacks) for devices and image sizes the model cannot use."""

from __future__ import annotations

import argparse

import pytest
import torch

from effsam2.cli.devices import check_device
from effsam2.cli.model_args import accel_from_args, build_model_from_args, check_model_args
from effsam2.errors import ConfigError, Effsam2Error


def model_args(model: str, **options) -> argparse.Namespace:
    values = {"model": model, "checkpoint": None, "image_size": None, "accel": None, "pool_window": None,
              "smr_sparsity": None, "swr_shortcut": None, "device": "cpu"}
    values.update(options)
    return argparse.Namespace(**values)


def test_without_accel_an_efficienttam_pooled_model_runs_pooled(capsys):
    # efficienttam_ti_1's official config uses pooled memory attention (families/efficienttam.py: "pool")
    model = build_model_from_args(model_args("efficienttam_ti_1", image_size=256), "track")
    backend = model.memory_attention.backend
    assert type(backend).__name__ == "PooledMemoryBackend" and backend.form == "exact" and backend.window == 2
    assert model.accel_label == "pool"
    assert capsys.readouterr().err == ""


def test_settings_apply_to_the_default_and_accel_overrides_it():
    from effsam2.registry import get_config

    ti_1 = get_config("efficienttam_ti_1")
    assert accel_from_args(model_args("efficienttam_ti_1", pool_window=4), ti_1).pool_window == 4
    assert accel_from_args(model_args("efficienttam_ti_2"), get_config("efficienttam_ti_2")).pool == "sdpa"
    assert accel_from_args(model_args("efficienttam_ti_1", accel="dense"), ti_1).is_dense
    hiera = get_config("sam2.1_hiera_t")
    assert accel_from_args(model_args("sam2.1_hiera_t"), hiera).is_dense
    smr = accel_from_args(model_args("sam2.1_hiera_t", accel="smr", smr_sparsity=0.5), hiera)
    assert smr.smr and smr.smr_sparsity == 0.5


def test_bad_image_size_is_a_config_error_and_still_a_value_error():
    with pytest.raises(ConfigError, match="multiple of 32") as e:
        check_model_args(model_args("sam2.1_hiera_t", image_size=100))
    assert isinstance(e.value, ValueError)  # callers that catch ValueError (bench) keep working


def test_check_device():
    assert check_device("cpu") == torch.device("cpu")
    for name, expected in [("foo", "unknown --device 'foo'"), ("meta", "runs on cpu, cuda or cuda:N")]:
        with pytest.raises(Effsam2Error, match=expected) as e:
            check_device(name)
        assert len(str(e.value).splitlines()) == 1
    if not torch.cuda.is_available():
        with pytest.raises(Effsam2Error, match="CUDA is not available"):
            check_device("cuda")
    else:
        with pytest.raises(Effsam2Error, match="CUDA device"):
            check_device(f"cuda:{torch.cuda.device_count()}")
