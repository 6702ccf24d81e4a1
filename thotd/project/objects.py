"""Objects as scripts receive them: a dict that also allows ``obj.name``.

The original Thot handed scripts objects used both ways (``asset.file``, ``asset['file']``);
a dict subclass keeps JSON serialisation and equality free.

The dict holds what the object file sets (plus ``_id``, ``name``, ``metadata`` and the
relatives the index adds): a search tells a key the file leaves out from one it sets. Reading
a field the file leaves out gives the default the original Thot gave (``tags`` ``[]``,
``created`` now, ``creator_type`` ``None``...), so ``asset.created`` never raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _none() -> None:
    return None


def _now() -> Any:
    from datetime import datetime  # only when a script reads a missing ``created``

    return datetime.now()


#: Fields every object of the original Thot had, and their defaults when the file is silent.
DEFAULTS: dict[str, Callable[[], Any]] = {
    "_id": _none, "created": _now, "type": _none, "name": _none,
    "description": _none, "roles": list, "tags": list, "notes": list, "metadata": dict,
    "parent": _none,
}
#: Fields of assets only, and of containers only.
ASSET_DEFAULTS: dict[str, Callable[[], Any]] = {
    **DEFAULTS, "file": _none, "creator": _none, "creator_type": _none,
}
CONTAINER_DEFAULTS: dict[str, Callable[[], Any]] = {
    **DEFAULTS, "children": list, "assets": list, "scripts": list,
}


class ThotObject(dict[str, Any]):
    """A container or asset: item access and attribute access to the same fields."""

    __slots__ = ()

    def _defaults(self) -> dict[str, Callable[[], Any]]:
        return CONTAINER_DEFAULTS if "children" in self else ASSET_DEFAULTS

    def __missing__(self, key: str) -> Any:
        make = self._defaults().get(key)
        if make is None:
            raise KeyError(key)
        return make()

    def get(self, key: str, default: Any = None) -> Any:
        """Like ``obj[key]`` (defaults included), ``default`` for a field no object has."""
        if key in self:
            return dict.__getitem__(self, key)
        make = self._defaults().get(key)
        return default if make is None else make()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__} {self.get('_id')!r} has no field {name!r}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __repr__(self) -> str:
        kind = "Container" if "children" in self else "Asset"
        return f"<{kind} {self.get('name')!r} at {self.get('_id')!r}>"


class ScriptAssociation(dict[str, Any]):
    """One entry of a container's ``scripts``: ``.script`` (absolute path), ``.priority``,
    ``.autorun``, as the original Thot's objects of that name; still a dict."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"ScriptAssociation has no field {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __lt__(self, other: ScriptAssociation) -> bool:
        """Sorting runs by priority, as the original's did."""
        return bool(self["priority"] < other["priority"])
