"""When a file counts as unchanged: the one place that says it.

Three questions share these rules. The index and its snapshot ask whether an object file or
a folder can be reused without reading it again (:func:`stat_key`, :func:`trusted_key`); the
watcher asks whether a file held still between two looks (:func:`look`); the engine asks
whether a script or a data file differs from what a run recorded (:func:`stat_of` and the
content hash behind :class:`Hasher`: a ``touch`` is not a change).

Two rules hold for all of them:

- *Racy timestamps.* File times come from a coarse clock, so a file written within
  :data:`RACY_NS` of being looked at may change again within the same tick, keeping size
  and times: its signature is not trusted (git's "racy" entries).
- *Only regular files are read.* Every read of a file's content goes through
  :func:`_read_regular`, so what may be opened (and how) is decided in one function.

A leaf module (stdlib only): the index below the engine and the watcher above it both
import it, and the script side (``thot``) does too, on every run.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from typing import Any

from thotd.digest import blake2b

#: A file whose timestamps are this close to the moment it was looked at may still change
#: within the same timestamp tick, keeping size and times: its signature is not trusted.
RACY_NS = 100_000_000

#: A file's identity for reuse: size, mtime, ctime (which no ``touch -d`` can set back) and
#: inode (a replacement by rename).
Key = tuple[int, int, int, int]

#: What :func:`look` says of a folder (which has no content to hold still).
FOLDER: Key = (-1, -1, -1, -1)

#: What :func:`path_key` says of a path that is not there.
MISSING = "missing"

_CHUNK = 1 << 20


def _stat(path: str) -> os.stat_result:
    """``os.stat``; raises ``OSError`` (``ValueError`` for a NUL in the path)."""
    return os.stat(path)


def stat_key(st: os.stat_result) -> Key:
    """What says a file is unchanged: size, mtime, ctime and inode."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def racy_from(now_ns: int | None = None) -> int:
    """The first timestamp too fresh to trust, looking now (or at ``now_ns``)."""
    return (time.time_ns() if now_ns is None else now_ns) - RACY_NS


def trusted_key(st: os.stat_result, racy_since: int) -> Key | None:
    """:func:`stat_key`, or None when the file changed too recently to trust it (at or
    after ``racy_since``, see :func:`racy_from`)."""
    if st.st_ctime_ns >= racy_since or st.st_mtime_ns >= racy_since:
        return None
    return stat_key(st)


def path_key(path: str, racy_since: int) -> Key | str | None:
    """:func:`trusted_key` of a path: :data:`MISSING` when it is not there, None when it is
    too fresh to trust."""
    try:
        return trusted_key(_stat(path), racy_since)
    except (OSError, ValueError):
        return MISSING


def unmoved(path: str, then: Key | str | None) -> bool:
    """Whether a path still has the key :func:`path_key` gave it (an untrusted None never
    matches)."""
    try:
        return then == stat_key(_stat(path))
    except (OSError, ValueError):
        return then == MISSING


def look(path: str) -> Key | None:
    """A path's key as it is now, for "did it hold still": None if gone or unreadable,
    :data:`FOLDER` for a folder."""
    try:
        st = _stat(path)
    except (OSError, ValueError):
        return None
    if stat.S_ISDIR(st.st_mode):
        return FOLDER
    return stat_key(st)


def stat_of(path: str | None) -> list[int] | None:
    """``[size, mtime_ns]`` of a data file or script, as a run's record keeps it; None when
    it is missing."""
    if not path:
        return None
    try:
        st = _stat(path)
    except (OSError, ValueError):  # ValueError: a NUL in a path a script wrote down
        return None
    return [st.st_size, st.st_mtime_ns]


def _read_regular(path: str) -> Iterator[bytes]:
    """A file's content in chunks: the only place fingerprinting reads a file."""
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk


def content_hash(path: str) -> str | None:
    """A digest of the file's bytes; None when it cannot be read."""
    h = blake2b(digest_size=16)
    try:
        for chunk in _read_regular(path):
            h.update(chunk)
    except (OSError, ValueError):
        return None
    return h.hexdigest()


class Hasher:
    """Content hashes cached by ``(path, size, mtime_ns)``: a file is hashed only when its
    size or mtime moved, so a big data set is read once, not on every check."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, int, int], str | None] = {}

    def hash(self, path: str, st: list[int] | None) -> str | None:
        if st is None:
            return None
        key = (path, st[0], st[1])
        if key not in self.cache:
            self.cache[key] = content_hash(path)
        return self.cache[key]

    def fingerprint(self, path: str | None) -> dict[str, Any] | None:
        """What a record keeps of a file: its stat and its content hash."""
        if not path:
            return None
        st = stat_of(path)
        return {"stat": st, "hash": self.hash(path, st)}

    def changed(self, path: str | None, old: dict[str, Any] | None) -> bool:
        """Whether a file differs from its recorded fingerprint (a touch does not count)."""
        if not path:
            return False
        now = stat_of(path)
        if old is None:
            return now is not None
        if now is None or old.get("stat") is None:
            return now != old.get("stat")
        if list(now) == list(old["stat"]):
            return False
        return self.hash(path, now) != old.get("hash")
