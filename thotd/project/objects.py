"""Objects as scripts receive them: a dict that also allows ``obj.name``.

The original Thot handed scripts objects used both ways (``asset.file``, ``asset['file']``);
a dict subclass keeps JSON serialisation and equality free.
"""

from __future__ import annotations

from typing import Any


class ThotObject(dict[str, Any]):
    """A container or asset: item access and attribute access to the same fields."""

    __slots__ = ()

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
