"""How an acceleration declares itself: the built-in ones (pool, pool-sdpa, smr, swr) and those from outside.

A built-in acceleration's module declares a :class:`BuiltinAcceleration` (its name, its slot, the spec field
its ``@`` setting sets and the range check of every field it owns); ``accel.spec`` parses and validates
specs from those declarations alone. The built-ins combine with each other (``pool+smr`` reads pooled whole
frames), so ``accel.spec`` makes their strategies from the whole spec.

An acceleration from outside registers an :class:`Acceleration`:

Each registers its name, what its ``@`` setting means (with its range check) and the strategy it makes for
one slot of the model: the memory backend or the frame encoder. ``AccelSpec.parse("name@3")``, and with it
``--accel name@3`` on every command and ``build_model(accel="name@3")``, then work unchanged:

    register_acceleration(Acceleration("newest", "read only the N newest memory frames",
                                       make_memory_backend=lambda n: NewestFrames(int(n)),
                                       check_setting=check_frames))

Like model families (``effsam2.registry``), the table is filled when the declaring module is imported: in
Python, import it before building; for the ``effsam2`` command, an installed package names the module in
the ``effsam2.accelerations`` entry-point group (``[project.entry-points."effsam2.accelerations"]
newest = "my_package.newest"``), which the command imports first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from effsam2.errors import Effsam2Error

BUILTIN_NAMES = ("dense", "pool", "pool-sdpa", "smr", "swr")


def no_setting(name: str) -> Callable[[float | None], None]:
    """The check of an acceleration that takes no ``@`` setting."""
    def check(value: float | None) -> None:
        if value is not None:
            raise Effsam2Error(f"{name} takes no setting ('@{value:g}')")
    return check


@dataclass(frozen=True)
class BuiltinAcceleration:
    """One built-in acceleration, declared in its own module.

    ``setting`` is the ``AccelSpec`` field its ``@`` number sets (None: it takes none), ``convert`` turns that
    number into the field's value (raising ``Effsam2Error``, one line, for a malformed one), ``checks`` maps each
    ``AccelSpec`` field it owns to that field's range check, and ``policy`` is the field a ``:name`` suffix sets.
    """

    name: str
    description: str
    slot: str  # "memory" (the memory backend) or "frame" (the frame encoder)
    setting: str | None = None
    convert: Callable[[float], object] = float
    checks: Mapping[str, Callable[[object], None]] = field(default_factory=dict)
    policy: str | None = None


@dataclass(frozen=True)
class Acceleration:
    """One declared acceleration. Exactly one of the two makers is given; each gets the ``@`` setting (None
    when the spec gives none); ``check_setting`` raises ``Effsam2Error`` (one line) for a setting it refuses."""

    name: str
    description: str
    make_memory_backend: Callable[[float | None], object] | None = None
    make_frame_encoder: Callable[[float | None, object], object] | None = None  # (setting, ModelConfig)
    check_setting: Callable[[float | None], None] | None = None

    @property
    def slot(self) -> str:
        return "memory" if self.make_memory_backend is not None else "frame"

    def check(self, value: float | None) -> None:
        (self.check_setting or no_setting(self.name))(value)


_ACCELERATIONS: dict[str, Acceleration] = {}


def register_acceleration(acceleration: Acceleration) -> None:
    name = acceleration.name
    if not name or any(c in name for c in "+@:,") or name != name.lower():
        raise Effsam2Error(f"acceleration name {name!r}: use lower case, without '+', '@', ':' or ','")
    if name in BUILTIN_NAMES or name in _ACCELERATIONS:
        raise Effsam2Error(f"an acceleration named {name!r} already exists")
    if (acceleration.make_memory_backend is None) == (acceleration.make_frame_encoder is None):
        raise Effsam2Error(f"acceleration {name!r} must make exactly one of a memory backend or a frame encoder")
    _ACCELERATIONS[name] = acceleration


def unregister_acceleration(name: str) -> None:
    _ACCELERATIONS.pop(name, None)


def get_acceleration(name: str) -> Acceleration | None:
    return _ACCELERATIONS.get(name)


def registered_names() -> tuple[str, ...]:
    return tuple(sorted(_ACCELERATIONS))


ENTRY_POINT_GROUP = "effsam2.accelerations"


def load_declared_accelerations() -> list[str]:
    """Import the modules that installed packages declare in the ``effsam2.accelerations`` entry-point group
    (each registers its accelerations on import); the ``effsam2`` command calls this first, so that
    ``--accel name@3`` works from the shell. Returns the entry points' names."""
    loaded = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as err:  # noqa: BLE001 - a broken plugin is one line, not a traceback
            raise Effsam2Error(f"cannot load the acceleration plugin {entry.name!r} ({entry.value}): "
                               f"{type(err).__name__}: {err}") from None
        loaded.append(entry.name)
    return loaded
