"""Export trained weights as the small fp16 safetensors file that effsam2 ships (and loads as fp32)."""

from __future__ import annotations

import os

from effsam2.checkpoint import read_safetensors_metadata, read_state_dict, save_state_dict


def export_weights(source: str | os.PathLike, target: str | os.PathLike, model_name: str) -> None:
    """Copy a run's weights to ``target`` with floating tensors in fp16 and the model name in the header."""
    state = read_state_dict(source)
    meta = read_safetensors_metadata(source)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    save_state_dict(half, target, metadata=meta | {"model": model_name, "dtype": "fp16"})
