"""Acceleration specs: which accelerations a model runs with, parsed from strings like ``swr+smr``.

Each '+'-joined part may carry its setting: ``pool@4`` (window), ``pool-sdpa@4``, ``smr@0.9`` (sparsity),
``smr@0.95:random`` (sparsity and token-selection policy: topk, random or uniform). A setting in the text
wins over the same option passed as a keyword. Names declared through ``effsam2.accel.plugins`` are
accepted too, with their own setting (``newest@2``) and range check. A spec is plain data.
``make_memory_backend`` turns its memory part into the backend object that the
model's memory attention uses, ``make_frame_encoder`` its window-routing part (SWR) into the model's frame
encoder; both are handed to the model at build time (sessions keep the router's state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from effsam2.accel.plugins import Acceleration, BuiltinAcceleration, get_acceleration, registered_names
from effsam2.accel.pooled_memory import POOL as POOL_DECLARATION
from effsam2.accel.pooled_memory import POOL_SDPA as POOL_SDPA_DECLARATION
from effsam2.accel.pooled_memory import make_pooled_backend
from effsam2.accel.sparse_memory import POLICIES as SMR_POLICY_CLASSES
from effsam2.accel.sparse_memory import SMR as SMR_DECLARATION
from effsam2.accel.sparse_memory import make_sparse_backend
from effsam2.accel.swr import SWR as SWR_DECLARATION
from effsam2.accel.swr import WindowRouting
from effsam2.errors import Effsam2Error
from effsam2.modeling.frame_encoder import DenseFrameEncoder
from effsam2.modeling.memory_attention import DenseMemoryBackend

# The built-in accelerations, each declared in its own module (name, slot, '@' setting, range checks).
BUILTINS: dict[str, BuiltinAcceleration] = {
    d.name: d for d in (POOL_DECLARATION, POOL_SDPA_DECLARATION, SMR_DECLARATION, SWR_DECLARATION)}
POOL, POOL_SDPA, SMR, SWR = (POOL_DECLARATION.name, POOL_SDPA_DECLARATION.name, SMR_DECLARATION.name,
                             SWR_DECLARATION.name)
DENSE = "dense"
KNOWN = (DENSE, *BUILTINS)
SMR_POLICIES = tuple(SMR_POLICY_CLASSES)


@dataclass(frozen=True)
class AccelSpec:
    pool: str | None = None  # None, "exact" or "sdpa"
    pool_window: int = 2
    smr: bool = False
    smr_sparsity: float = 0.95
    smr_policy: str = "topk"
    swr: bool = False
    swr_shortcut: str | None = None  # path of the trained shortcut (safetensors)
    swr_fraction: float | None = None  # benchmark only: force this fraction of stage-3 windows
    # declared accelerations (effsam2.accel.plugins) with their '@' setting: ((name, setting or None), ...)
    extra: tuple[tuple[str, float | None], ...] = ()

    @classmethod
    def parse(cls, text: str | None, **options) -> AccelSpec:
        """``"dense"``, ``"pool"``, ``"pool-sdpa"``, ``"smr"``, ``"swr"`` or '+'-joined combinations.

        ``options`` set the numeric settings (pool_window, smr_sparsity, swr_shortcut, swr_fraction).
        """
        spec = cls()
        parts, settings, extra = [], {}, []
        for raw in (p.strip().lower() for p in (text or DENSE).split("+") if p.strip()):
            name, value, policy = _split_part(raw, text)
            parts.append(name)
            if name in KNOWN:
                settings.update(_part_settings(BUILTINS.get(name), name, value, policy, text))
            elif get_acceleration(name) is not None:
                extra.append(_declared_part(name, value, policy, text))
            else:
                known = ", ".join((*KNOWN, *registered_names()))
                raise Effsam2Error(f"unknown acceleration {name!r} in {text!r}; known: {known}")
        _check_slots(parts, extra, text)
        if POOL in parts and POOL_SDPA in parts:
            raise Effsam2Error(f"choose one of {POOL} and {POOL_SDPA} in {text!r}")
        if DENSE in parts and len(parts) > 1:
            raise Effsam2Error(f"'dense' cannot be combined with other accelerations in {text!r}")
        if POOL in parts:
            spec = replace(spec, pool="exact")
        if POOL_SDPA in parts:
            spec = replace(spec, pool="sdpa")
        spec = replace(spec, smr=SMR in parts, swr=SWR in parts, extra=tuple(extra))
        spec = replace(spec, **{k: v for k, v in options.items() if v is not None})
        spec = replace(spec, **settings)
        spec.validate()
        return spec

    def validate(self) -> None:
        """Each built-in acceleration's range checks on the fields it owns (one line on a bad value)."""
        checked = set()
        for declaration in BUILTINS.values():
            for name, check in declaration.checks.items():
                if name not in checked:
                    check(getattr(self, name))
                    checked.add(name)

    @property
    def is_dense(self) -> bool:
        return self.pool is None and not self.smr and not self.swr and not self.extra

    @property
    def label(self) -> str:
        """Canonical short name, e.g. ``swr+smr`` or ``pool``."""
        return self._name(settings="none")

    @property
    def description(self) -> str:
        """The label with every setting, parseable back: e.g. ``pool@2+smr@0.95:topk``."""
        return self._name(settings="all")

    @property
    def short_label(self) -> str:
        """The label with the settings that differ from their defaults: ``pool``, ``pool@4``, ``smr:random``."""
        return self._name(settings="changed")

    def _name(self, settings: str) -> str:
        """'+'-joined parts with no settings, every setting, or those that differ from the defaults."""
        default = AccelSpec()

        def shown(value, default_value) -> bool:
            return settings == "all" or (settings == "changed" and value != default_value)

        parts = []
        if self.swr:
            parts.append(SWR)
        if self.pool is not None:
            name = POOL if self.pool == "exact" else POOL_SDPA
            parts.append(f"{name}@{self.pool_window}" if shown(self.pool_window, default.pool_window) else name)
        if self.smr:
            name = f"{SMR}@{self.smr_sparsity:g}" if shown(self.smr_sparsity, default.smr_sparsity) else SMR
            parts.append(f"{name}:{self.smr_policy}" if shown(self.smr_policy, default.smr_policy) else name)
        for name, value in self.extra:
            parts.append(name if value is None or settings == "none" else f"{name}@{value:g}")
        return "+".join(parts) or DENSE


def _split_part(raw: str, text: str) -> tuple[str, str | None, str | None]:
    """``smr@0.9:random`` -> ("smr", "0.9", "random")."""
    name, _, policy = raw.partition(":")
    name, _, value = name.partition("@")
    return name.strip(), (value.strip() or None), (policy.strip() or None)


def _declared_part(name: str, value: str | None, policy: str | None, text: str) -> tuple[str, float | None]:
    """(name, setting) of a declared acceleration, its setting checked by the acceleration itself."""
    if policy is not None:
        raise Effsam2Error(f"only smr takes a policy (':{policy}') in {text!r}")
    number = None
    if value is not None:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise Effsam2Error(f"{name}@{value}: the setting must be a finite number in {text!r}")
    try:
        get_acceleration(name).check(number)
    except Effsam2Error as err:
        raise Effsam2Error(f"{err} in {text!r}") from None
    return name, number


def _check_slots(parts: list[str], extra: list[tuple[str, float | None]], text: str) -> None:
    """A declared acceleration fills one slot of the model alone: no other acceleration of that slot."""
    taken: dict[str, list[str]] = {"memory": [], "frame": []}
    for name in parts:
        if name in BUILTINS:
            taken[BUILTINS[name].slot].append(name)
    for name, _ in extra:
        slot = get_acceleration(name).slot
        if taken[slot]:
            raise Effsam2Error(f"{name} and {taken[slot][0]} both replace the {slot} "
                               f"{'backend' if slot == 'memory' else 'encoder'} in {text!r}: choose one")
        taken[slot].append(name)


def _part_settings(declaration: BuiltinAcceleration | None, name: str, value: str | None, policy: str | None,
                   text: str) -> dict:
    """The settings one built-in part of a spec sets (``declaration`` None: 'dense'), converted by its
    declaration; their range checks run in :meth:`AccelSpec.validate`."""
    out: dict = {}
    if policy is not None:
        if declaration is None or declaration.policy is None:
            raise Effsam2Error(f"only smr takes a policy (':{policy}') in {text!r}")
        out[declaration.policy] = policy
    if value is None:
        return out
    if declaration is None or declaration.setting is None:
        raise Effsam2Error(f"{name} takes no setting ('@{value}') in {text!r}")
    try:
        number = float(value)
    except ValueError:
        raise Effsam2Error(f"{name}@{value}: the setting must be a number in {text!r}") from None
    try:
        out[declaration.setting] = declaration.convert(number)
    except Effsam2Error as err:
        raise Effsam2Error(f"{name}@{value}: {err} in {text!r}") from None
    return out


def _declared(spec: AccelSpec) -> list[tuple[Acceleration, float | None]]:
    """The declared accelerations of a spec with their settings (each must still be registered)."""
    out = []
    for name, value in spec.extra:
        declared = get_acceleration(name)
        if declared is None:
            raise Effsam2Error(f"acceleration {name!r} is no longer registered")
        out.append((declared, value))
    return out


def make_memory_backend(spec: AccelSpec):
    """The memory-attention backend for a spec (dense when it asks for no memory acceleration)."""
    for declared, value in _declared(spec):
        if declared.make_memory_backend is not None:
            return declared.make_memory_backend(value)
    if spec.smr:
        return make_sparse_backend(spec)
    if spec.pool is not None:
        return make_pooled_backend(spec)
    return DenseMemoryBackend()


def make_frame_encoder(spec: AccelSpec, config):
    """The frame encoder for a spec: SWR's routed encoder, a declared one, or the dense one."""
    for declared, value in _declared(spec):
        if declared.make_frame_encoder is not None:
            return declared.make_frame_encoder(value, config)
    if spec.swr:
        return WindowRouting.for_spec(spec, config)
    return DenseFrameEncoder()
