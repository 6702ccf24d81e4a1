"""``from thot.db.local import LocalDB``: the original's database of a local project, thin
over the index (:class:`thotd.project.index.Index`).

``LocalDB(root).containers.find(search)`` and ``.assets.find_one(search)`` answer as a
script's ``find_*`` does, over ``root``'s subtree; the objects are the script API's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from thotd.project.index import Index
from thotd.project.locate import find_project_root, norm, resolve_path
from thotd.project.objects import ThotObject


class LocalCollection:
    """The containers (or assets) of a :class:`LocalDB`."""

    def __init__(self, index: Index, kind: str, root: str) -> None:
        self._index = index
        self._root = root
        self.kind = kind

    def find(self, search: Mapping[str, Any] | None = None) -> list[ThotObject]:
        return self._index.find(self.kind, search or {}, self._root)

    def find_one(self, search: Mapping[str, Any] | None = None) -> ThotObject | None:
        found = self.find(search)
        return found[0] if found else None


class LocalDB:
    """A local project seen from the container ``root`` (read only)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)
        start = norm(self.root)
        self._index = Index.load(find_project_root(start), focus=start)
        self.containers = LocalCollection(self._index, "container", start)
        self.assets = LocalCollection(self._index, "asset", start)

    def resolve(self, path: str, base: str) -> str:
        """A path as written in an object file of the folder ``base``."""
        return resolve_path(path, norm(base), self._index.root)

    def parse_path(self, path: str) -> str:
        """A path as object files write it: ``root:/…`` (project root), absolute, or
        relative to this database's root."""
        return resolve_path(path, norm(self.root), self._index.root)
