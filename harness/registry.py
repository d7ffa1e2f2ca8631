"""String-keyed registries (one per kind) so that a CLI name maps to exactly one class.

Adding a model or a task is writing one file in its package and decorating its class with
``@MODELS.register("name")``: :meth:`Registry.discover` imports every module of the package, so no import list
has to be edited.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from harness.errors import VlbenchError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self.package = package
        """The package whose modules register members here (imported by :meth:`discover`)."""
        self._entries: dict[str, T] = {}
        self._discovered = False

    def discover(self) -> Registry[T]:
        """Import every module of :attr:`package` once, so that each registers its members."""
        if self._discovered or self.package is None:
            return self
        self._discovered = True  # first, so a module that asks this registry while it is imported does not recurse
        try:
            package = importlib.import_module(self.package)
            for module in pkgutil.iter_modules(package.__path__):
                if not module.name.startswith("_"):
                    importlib.import_module(f"{self.package}.{module.name}")
        except BaseException:
            self._discovered = False
            raise
        return self

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"duplicate {self.kind} name {name!r}: already registered to {self._entries[name]!r}")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        self.discover()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise VlbenchError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.names()]

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
