"""What the dashboard may ask of the daemon: the same control methods ``thotctl`` calls.

The daemon (``thotd.service``) ranks above this room, so the page cannot import it; the
daemon hands the server a :class:`Source` instead. Everything the page shows comes through
:meth:`Source.call` (the control socket's method table, by name), so the page and
``thotctl`` can never disagree.
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Protocol


class Events(Protocol):
    """One subscription to the daemon's event stream (bounded backlog, see the fanout)."""

    async def next(self) -> dict[str, Any]:
        """The next event, waiting for one."""
        ...

    def close(self) -> None:
        """Stop receiving; the daemon forgets this subscriber."""
        ...


class Source(Protocol):
    """The daemon as the dashboard sees it."""

    def call(self, method: str, params: dict[str, Any]) -> Awaitable[Any]:
        """A control method's result (``status``, ``runs``, ``why``...); raises on an error."""
        ...

    def subscribe(self) -> Events:
        """A new subscription to the event stream; raises when too many are open."""
        ...

    def objects(self, root: str, ids: list[str]) -> list[dict[str, Any]]:
        """The objects ``ids`` of the project ``root`` as ``query`` returns them (the index's
        views: effective metadata, ids of children, assets, scripts), in order, missing ones
        left out. By id, because a ``query`` for "the children of X" walks and caches X's
        whole subtree per X (1.3 s and 18 MB at 10,000 containers)."""
        ...

    def roots(self) -> list[str]:
        """The roots of the watched projects (normalised absolute paths)."""
        ...

    @property
    def state_dir(self) -> Path:
        """The daemon's state folder: the token and ``web.json`` live here."""
        ...
