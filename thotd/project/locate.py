"""Where things are: normalised ids, ``root:`` paths and the project root above a folder.

Standard library only: daemon-run scripts need these without loading the index (and its
pydantic models), which would cost every run a tenth of a second.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

ROOT_PREFIX = "root:"
_CONTAINER_FILE = "_container.json"  # the same name as thotd.project.model.CONTAINER_FILE


class NotAProject(Exception):
    """The folder given is not a Thot container."""


def norm(path: str | os.PathLike[str]) -> str:
    return os.path.normpath(os.path.abspath(os.fspath(path)))


def resolve_path(value: str, base: str, root: str) -> str:
    """Resolve a ``file``/``script`` value: ``root:/…`` (project root), absolute, or relative."""
    if value.startswith(ROOT_PREFIX):
        rest = value[len(ROOT_PREFIX):].lstrip("/\\")
        return os.path.normpath(os.path.join(root, rest))
    value = os.path.expanduser(value)
    if os.path.isabs(value):
        return os.path.normpath(value)
    return os.path.normpath(os.path.join(base, value))


def find_project_root(start: str | os.PathLike[str]) -> str:
    """The top-most container above ``start`` (the folder whose parent is not a container)."""
    cur = norm(start)
    if not os.path.isfile(os.path.join(cur, _CONTAINER_FILE)):
        raise NotAProject(f"{cur} is not a Thot container (no {_CONTAINER_FILE})")
    while True:
        parent = os.path.dirname(cur)
        if parent == cur or not os.path.isfile(os.path.join(parent, _CONTAINER_FILE)):
            return cur
        cur = parent


def upward(path: str, root: str) -> Iterator[str]:
    """``path`` and every folder above it, up to and including ``root`` (nothing when
    ``path`` is not inside ``root``): the containers whose view of the tree a change at
    ``path`` can reach."""
    inside = root.rstrip(os.sep) + os.sep
    cur = path
    while cur == root or cur.startswith(inside):
        yield cur
        parent = os.path.dirname(cur)
        if parent == cur:
            return
        cur = parent
