"""``build_model``: a model name -> a ready model (its family's builder, weights, accelerations).

The family (``effsam2.registry``) builds the image encoder and supplies weights that no checkpoint carries
(a pretrained trunk) or that ship with effsam2 (our own model). Checkpoints load strictly.
"""

from __future__ import annotations

import functools
import os
from dataclasses import replace

import torch

from effsam2.accel.spec import AccelSpec, make_frame_encoder, make_memory_backend
from effsam2.checkpoint import load_into, read_state_dict
from effsam2.configs import ModelConfig
from effsam2.dtypes import resolve_dtype
from effsam2.modeling.sam2_model import SAM2Model
from effsam2.registry import DEFAULT_ALIAS, get_config, get_family, list_models, shipped_weights


def build_from_config(config: ModelConfig, accel: AccelSpec | None = None, *, memory_backend=None,
                      frame_encoder=None) -> SAM2Model:
    """An untrained model of ``config`` (official default initialisation) in train mode on the CPU.

    Without ``accel`` the model runs the accelerations its official config uses (dense for SAM 2).
    Weights that a family takes from elsewhere (a pretrained trunk) are not loaded here: see
    :func:`build_model`.
    """
    accel = accel if accel is not None else AccelSpec.parse(config.memory_attention)
    encoder = get_family(config.name).build_image_encoder(config)
    memory_label = replace(accel, swr=False).short_label  # e.g. "pool", "dense"
    frame_label = "swr" if accel.swr else None
    if memory_backend is None:
        memory_backend = make_memory_backend(accel)
    else:
        memory_label = repr(memory_backend)
    if frame_encoder is None:
        frame_encoder = make_frame_encoder(accel, config)
    else:
        frame_label = repr(frame_encoder)
    parts = [p for p in (frame_label, memory_label) if p is not None and p != "dense"]
    return SAM2Model(config, encoder, memory_backend, frame_encoder, "+".join(parts) or "dense")


def build_model(name: str = DEFAULT_ALIAS, checkpoint: str | os.PathLike | None = None, *,
                device: str | torch.device = "cpu", image_size: int | None = None,
                accel: AccelSpec | str | None = None, dtype: str = "fp32", memory_backend=None,
                frame_encoder=None, shipped: bool = True, **accel_options) -> SAM2Model:
    """Build a named model in eval mode with its weights.

    ``name`` defaults to effsam2's own model (``"default"``), whose trained weights ship with the package.
    ``checkpoint`` is an official (or ``effsam2 train``) checkpoint, loaded strictly; without one, a model
    with shipped weights gets those (unless ``shipped`` is False: then, like every other model, its
    initialisation: the weights its family loads itself, e.g. an ImageNet trunk, the rest random). ``image_size`` builds
    another input resolution; ``accel`` chooses accelerations (``"pool"``, ``"smr"``, ``"swr+smr"``..., see
    :class:`effsam2.accel.spec.AccelSpec`) and ``accel_options`` set their parameters (e.g. smr_sparsity=0.9).
    ``dtype`` (``"fp32"``, ``"bf16"`` or ``"auto"``: bf16 on CUDA and on CPUs with native bf16) is the autocast
    dtype the predictors run this model in (``model.autocast_dtype``, resolved here); the weights stay fp32.
    ``memory_backend`` / ``frame_encoder`` plug in an acceleration of your own (objects with the interface of
    ``modeling.memory_attention.DenseMemoryBackend`` / ``modeling.frame_encoder.DenseFrameEncoder``), in place
    of the ones ``accel`` would choose.
    """
    config = get_config(name, image_size)
    family = get_family(config.name)
    autocast_dtype = resolve_dtype(dtype, device, config.bf16_auto)
    if isinstance(accel, str) or (accel is None and accel_options):
        accel = AccelSpec.parse(accel or config.memory_attention, **accel_options)
    model = build_from_config(config, accel, memory_backend=memory_backend, frame_encoder=frame_encoder)
    if family.load_base_weights is not None:
        family.load_base_weights(model)
    if checkpoint is None and shipped:
        checkpoint = shipped_weights(config)
    if checkpoint is not None:
        state = read_state_dict(checkpoint)
        # a family's checkpoints may leave out the weights it loads itself (e.g. the ImageNet trunk)
        prefixes = family.base_weight_prefixes
        skip = () if any(k.startswith(prefixes) for k in state) else prefixes
        load_into(model, state, config.name, str(checkpoint), matching_models, skip_prefixes=skip)
    model.autocast_dtype = autocast_dtype
    model = model.to(device).eval()
    model.frame_encoder.to(device)  # what a frame encoder holds outside the model (SWR's shortcut)
    return model


def trained_state_dict(model: SAM2Model, *, with_base: bool = False) -> dict[str, torch.Tensor]:
    """What a checkpoint of ``model`` holds: its state dict without the weights its family loads itself
    (the ImageNet trunk), or, ``with_base``, with them too (a run that trained the trunk)."""
    if with_base:
        return dict(model.state_dict())
    prefixes = get_family(model.config.name).base_weight_prefixes
    return {k: v for k, v in model.state_dict().items() if not k.startswith(prefixes)}


@functools.cache
def model_schema(name: str, trained_only: bool = False) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The state-dict layout of a named model, computed on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = build_from_config(get_config(name))
    state = trained_state_dict(model) if trained_only else model.state_dict()
    return tuple((k, tuple(v.shape)) for k, v in state.items())


def matching_models(found: dict[str, tuple[int, ...]]) -> list[str]:
    """Names of known models whose state-dict layout (whole, or its trained part) equals ``found``."""
    return [name for name in list_models()
            if dict(model_schema(name)) == found or dict(model_schema(name, True)) == found]
