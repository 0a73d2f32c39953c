"""Name -> class registries: the one place a configured name is turned into behaviour.

A likelihood, pixel mode, prior, model, objective or device registers itself where it is
defined; everything else asks the object it gets back instead of comparing names.

The registries that a config setting names are declared here, at the bottom of the
package, with the setting and the package that fills them (their *home*). `config` takes
each setting's choices from `SETTINGS` and so imports nothing above it; a registry imports
its home the first time it is asked for its names. Registries that no setting names (score
kinds, samplers, calibration methods, containers) live beside their entries.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# setting ("model.prior") -> the registry of its choices
SETTINGS: dict[str, Registry[Any]] = {}


class Registry(Generic[T]):
    """A named table of classes (or factories) of one kind, e.g. ``Registry("prior")``.

    `setting`: the config setting whose value names an entry (listed in `SETTINGS`);
    `home`: the module whose import registers every entry.
    """

    def __init__(self, kind: str, setting: str | None = None, home: str | None = None):
        self.kind, self.setting, self.home = kind, setting, home
        self._entries: dict[str, T] = {}
        self._loaded = home is None
        if setting is not None:
            if setting in SETTINGS:
                raise ValueError(f"setting {setting!r} has two registries")
            SETTINGS[setting] = self

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # first: the home's own registrations must not recurse here
            importlib.import_module(self.home)

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: make `name` build this class."""

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def unregister(self, name: str) -> T:
        """Remove `name` (a plugin's or a test's entry); returns what it held."""
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        """The entry for `name`, or a ValueError that lists the choices."""
        self._load()
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose from {', '.join(self)}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def name_of(self, entry: T) -> str:
        """The name `entry` is registered under."""
        self._load()
        return next(name for name, e in self._entries.items() if e is entry)

    def names(self) -> tuple[str, ...]:
        """Every registered name, in the order registered."""
        self._load()
        return tuple(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        """(name, entry) pairs, in the order registered."""
        self._load()
        return iter(tuple(self._entries.items()))


MODELS: Registry[Any] = Registry("model family", "model.family", "vaekit.models")
PIXEL_MODES: Registry[Any] = Registry("pixel mode", "model.pixels", "vaekit.data.pixels")
ARCHITECTURES: Registry[Any] = Registry("architecture", "model.arch", "vaekit.nets")
ACTIVATIONS: Registry[Any] = Registry("activation", "model.activation", "vaekit.nets.mlp")
PRIORS: Registry[Any] = Registry("prior", "model.prior", "vaekit.priors")
OBJECTIVES: Registry[Any] = Registry("objective", "train.objective", "vaekit.objectives")
DEVICES: Registry[Any] = Registry("device", "train.device", "vaekit.device")


def choices() -> dict[str, tuple[str, ...]]:
    """Each configured setting's allowed names."""
    return {setting: reg.names() for setting, reg in SETTINGS.items()}
