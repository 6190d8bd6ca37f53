"""Checkpoint I/O: official ``.pt`` files (``{"model": state_dict}``) and safetensors, with clear errors.

Every failure a user can cause (missing file, truncated download, a checkpoint of another model) raises
:class:`CheckpointError` with one readable line; a checkpoint that does not fit says which keys/shapes
differ and which known model it does fit, if any.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from effsam2.errors import CheckpointError

SAFETENSORS_SUFFIX = ".safetensors"


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a flat state dict from an official ``.pt`` checkpoint or a safetensors file (on the CPU)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint path is a folder, not a file: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file is empty: {path}")
    if path.suffix == SAFETENSORS_SUFFIX:
        return _read_safetensors(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "weights_only" in str(err).lower():
            raise CheckpointError(
                f"{path} is not a weights-only checkpoint: it holds pickled Python objects besides tensors, so "
                "effsam2 refused to load it for safety (nothing in it was executed); save its state dict "
                "instead (torch.save(model.state_dict(), path)) or use safetensors") from None
        raise CheckpointError(f"cannot read checkpoint {path}: the file is truncated or corrupt"
                              f"{_detail(err)}; download it again") from None
    except Exception as err:  # noqa: BLE001 - torch.load raises many types (BadZipFile, EOFError, IndexError...)
        raise CheckpointError(f"cannot read checkpoint {path}: the file is truncated or corrupt"
                              f"{_detail(err)}; download it again") from None
    if isinstance(payload, Mapping) and "model" in payload and isinstance(payload["model"], Mapping):
        payload = payload["model"]
    if not isinstance(payload, Mapping) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"{path} is not a model checkpoint (expected a state dict or {{'model': state_dict}})")
    return dict(payload)


def _detail(err: BaseException, limit: int = 160) -> str:
    """`` (first line of the error)`` when it is short enough to show whole, else nothing (never cut a word)."""
    first = str(err).splitlines()[0].strip() if str(err).strip() else type(err).__name__
    return f" ({first})" if len(first) <= limit else ""


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"cannot read safetensors checkpoint {path}: the file is truncated or corrupt"
                              f"{_detail(err)}") from None


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata stored in a safetensors header (e.g. the model name)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:  # noqa: BLE001 - any parse failure is a corrupt file for the user
        raise CheckpointError(f"cannot read safetensors checkpoint {path}: the file is truncated or corrupt"
                              f"{_detail(err)}") from None


def state_dict_differences(expected: Mapping[str, tuple[int, ...]],
                           found: Mapping[str, tuple[int, ...]]) -> tuple[list[str], list[str], list[str]]:
    """(missing keys, unexpected keys, 'key: found vs expected' shape mismatches) between two schemas."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(found[k])} vs model {tuple(expected[k])}"
              for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    return missing, unexpected, shapes


def schema(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _sample(items: list[str], n: int = 3) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], model_name: str, source: str,
              matching_models=None, skip_prefixes: tuple[str, ...] = ()) -> None:
    """Load ``state`` strictly into ``model``, or raise a :class:`CheckpointError` explaining the mismatch.

    ``matching_models(schema) -> list[str]`` names known models whose layout equals the checkpoint's.
    Keys under ``skip_prefixes`` are weights the model already has from elsewhere: the checkpoint must not
    hold them, every other key must match.
    """
    expected = {k: v for k, v in schema(model.state_dict()).items() if not k.startswith(skip_prefixes)}
    missing, unexpected, shapes = state_dict_differences(expected, schema(state))
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_sample(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_sample(unexpected)})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches ({_sample(shapes, 2)})")
        fits = matching_models(schema(state)) if matching_models is not None else []
        hint = (f"; it fits {', '.join(fits)}: pass that model name instead" if fits
                else "; it does not fit any known model")
        raise CheckpointError(f"checkpoint {source} is not a {model_name} checkpoint: {'; '.join(parts)}{hint}")
    result = model.load_state_dict(dict(state), strict=not skip_prefixes)
    assert not result.unexpected_keys and all(k.startswith(skip_prefixes) for k in result.missing_keys)


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | os.PathLike,
                    metadata: dict[str, str] | None = None) -> None:
    """Write a state dict atomically: safetensors for ``.safetensors``, else the official ``{"model": ...}`` .pt."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        if path.suffix == SAFETENSORS_SUFFIX:
            from safetensors.torch import save_file

            save_file(tensors, str(tmp), metadata=metadata)
        else:
            torch.save({"model": tensors}, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
