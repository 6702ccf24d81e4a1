"""``from thot.utilities import ThotUtilities``: the original's project helpers (≤ 0.6.3) that
edit ``_scripts.json`` files, over the index. The rest of that class is not provided: each of
those methods says so."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from thot.db.local import LocalDB
from thotd.project.objects import ThotObject

_SCRIPTS_FILE = "_scripts.json"


def _as_list(scripts: Any) -> list[dict[str, Any]]:
    return [dict(s) for s in (scripts if isinstance(scripts, list) else [scripts])]


def _read(container: ThotObject) -> tuple[str, list[dict[str, Any]]]:
    """The container's scripts file and its entries as written (paths not resolved)."""
    path = os.path.join(container["_id"], _SCRIPTS_FILE)
    try:
        with open(path) as fh:
            return path, list(json.load(fh))
    except FileNotFoundError:
        return path, []


def _write(path: str, entries: list[dict[str, Any]]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(entries, fh, indent=4)
    os.replace(tmp, path)


class ThotUtilities:
    """Edit the scripts of the containers a search selects."""

    def __init__(self, root: str | os.PathLike[str] | LocalDB) -> None:
        self._db = root if isinstance(root, LocalDB) else LocalDB(root)

    def add_scripts(self, scripts: Any, search: Mapping[str, Any], overwrite: bool = False) -> list[ThotObject]:
        """Add script associations to every matching container; returns those changed."""
        modified = []
        for container in self._db.containers.find(search):
            path, entries = _read(container)
            ids = [e.get("script") for e in entries]
            changed = False
            for script in _as_list(scripts):
                if script["script"] not in ids:
                    entries.append(script)
                    changed = True
                elif overwrite:
                    entries[ids.index(script["script"])] = script
                    changed = True
            if changed:
                _write(path, entries)
                modified.append(container)
        return modified

    def remove_scripts(self, scripts: Any, search: Mapping[str, Any] | None = None) -> list[ThotObject]:
        """Remove the associations of these scripts (paths as written, or resolved)."""
        wanted = {s if isinstance(s, str) else s["script"] for s in (scripts if isinstance(scripts, list) else [scripts])}
        modified = []
        for container in self._db.containers.find(search or {}):
            path, entries = _read(container)
            kept = [e for e in entries
                    if e.get("script") not in wanted
                    and self._db.resolve(str(e.get("script")), container["_id"]) not in wanted]
            if len(kept) != len(entries):
                _write(path, kept)
                modified.append(container)
        return modified

    def set_scripts(self, scripts: Any, search: Mapping[str, Any]) -> list[ThotObject]:
        """Replace the scripts of every matching container."""
        containers = self._db.containers.find(search)
        for container in containers:
            _write(os.path.join(container["_id"], _SCRIPTS_FILE), _as_list(scripts))
        return containers

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(
            f"ThotUtilities.{name} of the original Thot is not provided by thotd; "
            "edit the object files directly, or see `thot --help`"
        )
