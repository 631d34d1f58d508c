"""Names mapped to objects imported on first use: the registries of stream families,
strategies and models.

Example:
    >>> r = Registry("colour", {"teal": "colorsys:rgb_to_hsv"})
    >>> r.names()
    ['teal']
    >>> r.get("teal").__name__
    'rgb_to_hsv'
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Registry:
    """Names mapped to ``"module:attribute"`` targets, imported only when first used.

    The built-in entries are listed explicitly (no import-time registration); users may add
    their own objects with :meth:`register`.
    """

    what: str
    entries: dict[str, str | Any] = field(default_factory=dict)

    def register(self, name: str, target: Any) -> None:
        """Make ``target`` (an object, or a ``"module:attribute"`` string) available as ``name``."""
        self.entries[name] = target

    def names(self) -> list[str]:
        return sorted(self.entries)

    def get(self, name: str) -> Any:
        """The object registered as ``name``; a ``KeyError`` listing the valid names if absent."""
        if name not in self.entries:
            raise KeyError(f"unknown {self.what} {name!r}; valid: {', '.join(self.names())}")
        target = self.entries[name]
        if isinstance(target, str):
            module, attr = target.split(":")
            target = getattr(importlib.import_module(module), attr)
            self.entries[name] = target
        return target
