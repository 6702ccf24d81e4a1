"""The projects to watch, kept in a small JSON file beside the state database.

The database holds run history that can be rebuilt; the list of projects a user registered
with ``thotctl add`` cannot be guessed. A database that has to be moved aside (see
:class:`thotd.engine.state.Store`) must not take that list with it, so every change to it
is mirrored into ``<database stem>.projects.json`` (``state.projects.json`` by default),
written whole and atomically (temporary file, fsync, rename, fsync of the folder), and a
fresh database is seeded from it. The store does both itself, at every change: no caller
has to remember to.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1

log = logging.getLogger(__name__)


def path_for(database: str | os.PathLike[str]) -> Path:
    """The projects file that goes with ``database``."""
    database = Path(database)
    return database.with_name(f"{database.stem}.projects.json")


def load(database: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The projects saved beside ``database`` (``root``, ``paused``, and
    ``paused_containers`` when some are paused); ``[]`` when there is no
    usable file (a damaged one is logged and ignored: the database is the first source)."""
    path = path_for(database)
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable projects file %s: %s", path, exc)
        return []
    items = data.get("projects") if isinstance(data, dict) else None
    if not isinstance(items, list):
        log.warning("ignoring projects file %s: no 'projects' list", path)
        return []
    out = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("root"), str):
            entry = {"root": item["root"], "paused": bool(item.get("paused", False))}
            held = item.get("paused_containers")
            if isinstance(held, list) and held:  # written only when there are some
                entry["paused_containers"] = [c for c in held if isinstance(c, str)]
            out.append(entry)
    return out


def save(database: str | os.PathLike[str], projects: list[dict[str, Any]]) -> None:
    """Write the whole list atomically (0600): a crash leaves the old file or the new one."""
    from thotd.paths import open_private

    path = path_for(database)
    body = {
        "version": FORMAT_VERSION,
        "projects": [{"root": p["root"], "paused": bool(p.get("paused", False)),
                      **({"paused_containers": list(p["paused_containers"])}
                         if p.get("paused_containers") else {})}
                     for p in projects],
    }
    data = (json.dumps(body, indent=1, ensure_ascii=False) + "\n").encode("utf-8", "surrogateescape")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: some filesystems refuse a directory fd)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
