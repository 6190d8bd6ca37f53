"""dtype auto|fp32|bf16: the choice follows the hardware and the model; bf16 runs under autocast, agrees with
the official predictor under the same autocast, and agrees with fp32; fp32 stays exactly what it was."""

from __future__ import annotations

import pytest
import torch

from effsam2.build import build_model
from effsam2.dtypes import cpu_has_native_bf16, explain_dtype, resolve_dtype
from effsam2.errors import Effsam2Error
from effsam2.predictor.video import VideoPredictor
from tests.helpers.davis import first_frames

AMX = "processor\t: 0\nflags\t\t: fpu sse2 avx512f amx_bf16 amx_tile\n"
ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n"
OLD = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n"


def test_native_bf16_is_read_from_the_cpu_flags():
    assert cpu_has_native_bf16(AMX) and cpu_has_native_bf16(ZEN4)
    assert not cpu_has_native_bf16(OLD) and not cpu_has_native_bf16("")


def test_auto_follows_device_cpu_and_model():
    assert resolve_dtype("fp32", "cuda") == "fp32" and resolve_dtype("bf16", "cpu") == "bf16"
    assert explain_dtype("auto", "cuda") == ("bf16", "auto: CUDA")
    assert resolve_dtype("auto", "cuda", bf16_auto=()) == "fp32"  # a model that loses accuracy in bf16
    assert resolve_dtype("auto", "cuda", bf16_auto=("cuda",)) == "bf16"
    assert resolve_dtype("auto", "cpu", bf16_auto=("cuda",)) == "fp32"  # e.g. no faster on a CPU
    assert resolve_dtype("bf16", "cpu", bf16_auto=()) == "bf16"  # explicit bf16 is honoured
    native = cpu_has_native_bf16()
    assert resolve_dtype("auto", "cpu") == ("bf16" if native else "fp32")
    with pytest.raises(Effsam2Error, match="unknown dtype 'fp16'"):
        resolve_dtype("fp16", "cpu")


@pytest.fixture(scope="module")
def cows(davis_dir):
    return first_frames(davis_dir, "cows", 5)


def _track(model, frames, mask, dtype=None):
    predictor = VideoPredictor(model, dtype=dtype)
    state = predictor.init_state(frames)
    predictor.add_new_mask(state, 0, 1, mask)
    return predictor, [logits[0, 0].clone() for _, _, logits in predictor.propagate_in_video(state)]


def test_default_model_in_bf16_agrees_with_fp32_and_fp32_is_unchanged(cows):
    frames, mask = cows
    model = build_model()
    assert model.autocast_dtype == "fp32"  # build_model's default: fp32, as before
    _, fp32 = _track(model, frames, mask)
    _, fp32_again = _track(model, frames, mask, dtype="fp32")
    assert all(torch.equal(a, b) for a, b in zip(fp32, fp32_again))
    predictor, bf16 = _track(build_model(dtype="bf16"), frames, mask)
    assert predictor.dtype == "bf16"
    assert all(b.dtype == torch.float32 for b in bf16)  # outputs are float32 whatever the autocast
    ious = []
    for a, b in zip(fp32[1:], bf16[1:]):
        pa, pb = a > 0, b > 0
        assert 0.01 < pa.float().mean() < 0.9  # not degenerate
        ious.append(float((pa & pb).sum() / (pa | pb).sum()))
    assert min(ious) > 0.95, ious
    assert any(not torch.equal(a, b) for a, b in zip(fp32[1:], bf16[1:]))  # bf16 really ran
