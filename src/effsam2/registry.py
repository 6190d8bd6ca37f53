"""The model registry: each model family registers its named configs and how to build them.

A family (``effsam2.families.*``, or any module of a user's) is one :class:`ModelFamily`: its configs, a
builder for its image encoder (trunk + neck), and optionally weights that come from elsewhere than a
checkpoint (a pretrained trunk from a package; weights shipped inside effsam2). Nothing outside a family
module needs to know its trunk type: ``build_model``, ``effsam2 models`` and the command line read this
registry. ``"default"`` names the default model wherever a model name is accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from effsam2.configs import ModelConfig
from effsam2.errors import ConfigError, UnknownModelError

DEFAULT_ALIAS = "default"


@dataclass(frozen=True)
class ModelFamily:
    """One model family: its named configs and the parts of building a model that differ between families.

    build_image_encoder(config) -> an ``ImageEncoder`` (trunk + neck) of the config, freshly initialised.
    load_base_weights(model) fills in weights that no checkpoint of the family carries (e.g. an ImageNet
    trunk from an installed package); their state-dict keys start with one of ``base_weight_prefixes``.
    shipped_weights(config) -> the weight file that ships with effsam2 for that model, or None.
    """

    name: str
    configs: tuple[ModelConfig, ...]
    build_image_encoder: Callable[[ModelConfig], nn.Module]
    load_base_weights: Callable[[nn.Module], None] | None = None
    base_weight_prefixes: tuple[str, ...] = ()
    shipped_weights: Callable[[ModelConfig], Path | None] | None = None
    description: str = ""


@dataclass
class _Registry:
    families: dict[str, ModelFamily]
    models: dict[str, str]  # model name -> family name
    default_model: str | None = None


_REGISTRY = _Registry({}, {})


def register_family(family: ModelFamily, *, default_model: str | None = None) -> None:
    """Add a family; its model names must be new. ``default_model`` makes one of them the default."""
    clash = [c.name for c in family.configs if c.name in _REGISTRY.models]
    if family.name in _REGISTRY.families or clash:
        raise ConfigError(f"model family {family.name!r} is already registered"
                          + (f" (models {', '.join(clash)})" if clash else ""))
    wrong = [c.name for c in family.configs if c.family != family.name]
    if wrong:
        raise ConfigError(f"configs {', '.join(wrong)} do not name family {family.name!r}")
    if default_model is not None and default_model not in {c.name for c in family.configs}:
        raise ConfigError(f"default model {default_model!r} is not a model of family {family.name!r}")
    _REGISTRY.families[family.name] = family
    for config in family.configs:
        _REGISTRY.models[config.name] = family.name
    if default_model is not None:
        _REGISTRY.default_model = default_model


def unregister_family(name: str) -> None:
    """Remove a family (for tests that register a toy family)."""
    family = _REGISTRY.families.pop(name)
    for config in family.configs:
        _REGISTRY.models.pop(config.name, None)
    if _REGISTRY.default_model in {c.name for c in family.configs}:
        _REGISTRY.default_model = None


def _builtin() -> _Registry:
    # the built-in family modules register themselves on import; they import this module (a real cycle)
    import effsam2.families  # noqa: F401

    return _REGISTRY


def default_model() -> str:
    """The name ``"default"`` stands for."""
    registry = _builtin()
    if registry.default_model is None:
        raise UnknownModelError("no default model is registered")
    return registry.default_model


def resolve_name(name: str) -> str:
    """``"default"`` -> the default model's name; any other name unchanged."""
    return default_model() if name == DEFAULT_ALIAS else name


def list_models() -> list[str]:
    """Names accepted by :func:`effsam2.build_model` (and ``"default"``)."""
    return list(_builtin().models)


def get_family(model_name: str) -> ModelFamily:
    registry = _builtin()
    name = resolve_name(model_name)
    try:
        return registry.families[registry.models[name]]
    except KeyError:
        known = list(registry.models)
        close = [m for m in known if name.lower().replace("-", "_") in m or m in name.lower()]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model name {name!r}.{hint} Known models: {DEFAULT_ALIAS}, {', '.join(known)}") from None


def shipped_weights(config: ModelConfig) -> Path | None:
    """The weight file that ships with effsam2 for ``config``'s model, or None (official models)."""
    family = get_family(config.name)
    return family.shipped_weights(config) if family.shipped_weights is not None else None


def get_config(name: str, image_size: int | None = None) -> ModelConfig:
    """The named config (``"default"`` allowed), optionally at another image size."""
    name = resolve_name(name)
    family = get_family(name)
    config = next(c for c in family.configs if c.name == name)
    return config.with_image_size(image_size) if image_size is not None else config
