"""A dict that remembers which keys moved: the daemon's queue and running runs.

The dispatch pass hands the engine's :class:`~thotd.engine.dispatch.ReadyQueue` what moved
in the queue since the last pass. Handing over the whole queue and letting the ready queue
find the difference costs O(queue) per pass: at the 30,000 queued runs of a first full run
that is most of the daemon's time per run. The queue is written in a dozen places (new
stale runs, reruns, schedules, retries, starts, obsolete runs), so the dict itself keeps the
keys it saw set or removed, and no writer can forget to say so.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

K = TypeVar("K")
V = TypeVar("V")

__all__ = ["Tracked"]


class Tracked(dict[K, V]):
    """``dict`` whose writes record their keys; :meth:`moved` hands them over once."""

    __slots__ = ("_moved",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._moved: set[K] = set(self)

    def __setitem__(self, key: K, value: V) -> None:
        self._moved.add(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: K) -> None:
        self._moved.add(key)
        super().__delitem__(key)

    def pop(self, key: K, *default: Any) -> Any:
        self._moved.add(key)
        return super().pop(key, *default)

    def setdefault(self, key: K, default: Any = None) -> Any:
        self._moved.add(key)
        return super().setdefault(key, default)

    def popitem(self) -> tuple[K, V]:
        key, value = super().popitem()
        self._moved.add(key)
        return key, value

    def update(self, *args: Any, **kwargs: Any) -> None:
        new: dict[K, V] = dict(*args, **kwargs)
        self._moved.update(new)
        super().update(new)

    def clear(self) -> None:
        self._moved.update(self)
        super().clear()

    def moved(self) -> set[K]:
        """The keys set or removed since the last call."""
        out, self._moved = self._moved, set()
        return out

    def forget_moves(self) -> None:
        self._moved = set()

    def mark(self, keys: Iterable[K]) -> None:
        self._moved.update(keys)
