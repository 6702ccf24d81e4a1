"""Equality and ``repr`` from ``__slots__``: what ``@dataclass`` gave the small value classes
on ``thot run``'s start-up path, without importing ``dataclasses`` (~8 ms: it imports
``inspect``)."""

from __future__ import annotations

from typing import Any


class Slotted:
    """A value class: equal to another of its class with equal slots, shown with them all.
    Unhashable, like a dataclass with ``eq=True`` (a subclass may define ``__hash__``)."""

    __slots__ = ()

    def _values(self) -> tuple[Any, ...]:
        names: tuple[str, ...] = self.__slots__
        return tuple(getattr(self, name) for name in names)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Slotted) and other.__class__ is self.__class__:
            return self._values() == other._values()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        names: tuple[str, ...] = self.__slots__
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{self.__class__.__qualname__}({inner})"
