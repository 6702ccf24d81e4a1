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
  :func:`_read_regular`, so what may be opened (and how) is decided in one function. A named
  pipe would block ``open()`` forever and ``/dev/zero`` never ends: anything that is not a
  regular file is refused (:class:`NotRegular`), checked before opening and again on the
  open descriptor (``O_NONBLOCK``, so even a pipe swapped in between cannot block).
- *A size budget.* A file bigger than :data:`HASH_LIMIT_BYTES` is not read: its hash is its
  signature (size, mtime, inode), so touching it counts as a change (docs/decisions.md).

A leaf module (stdlib only): the index below the engine and the watcher above it both
import it, and the script side (``thot``) does too, on every run.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterable, Iterator
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

#: Files bigger than this are fingerprinted by their signature, not their bytes: hashing
#: runs at roughly 0.5-1 GB/s here, so 256 MiB keeps one hash under about half a second of
#: a worker thread, while a lab's usual data files (tables, spectra, images) stay well below.
HASH_LIMIT_BYTES = 256 * 1024 * 1024

_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISDIR, "a folder"))


class NotRegular(OSError):
    """A path whose content is never read: not a regular file (a pipe, a device...)."""


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    return next((words for test, words in _KINDS if test(mode)), "not a regular file")


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


def _refuse_irregular(st: os.stat_result, path: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise NotRegular(errno.EINVAL, f"{kind_of(st.st_mode)}: never read", path)


def _read_regular(path: str) -> Iterator[bytes]:
    """A file's content in chunks: the only place fingerprinting reads a file.

    Only a regular file is opened (a pipe blocks ``open()``, a device never ends), with
    ``O_NONBLOCK`` and its type checked again on the descriptor, against a swap in between.
    A file over :data:`HASH_LIMIT_BYTES` yields its signature instead of its bytes."""
    _refuse_irregular(os.stat(path), path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as fh:
        st = os.fstat(fd)
        _refuse_irregular(st, path)
        if st.st_size > HASH_LIMIT_BYTES:
            yield f"signature {st.st_size} {st.st_mtime_ns} {st.st_ino}".encode()
            return
        while chunk := fh.read(_CHUNK):
            yield chunk


def content_hash(path: str) -> str | None:
    """A digest of the file's bytes (of its signature, for a file over the size budget);
    None when it cannot be read or is not a regular file."""
    try:
        return checked_hash(path)
    except (OSError, ValueError):
        return None


def checked_hash(path: str) -> str:
    """:func:`content_hash`, raising ``OSError`` (:class:`NotRegular` for a pipe or a
    device) or ``ValueError`` for what cannot be read, so the caller can say why."""
    h = blake2b(digest_size=16)
    for chunk in _read_regular(path):
        h.update(chunk)
    return h.hexdigest()


#: What a content hash is cached under: the path and the size and mtime it had.
HashKey = tuple[str, int, int]

#: What :func:`hash_files` found: a key's hash (None when unreadable) and, for a file that is
#: never read (a pipe, a device), why.
HashResults = dict[HashKey, tuple[str | None, str | None]]


def hash_files(keys: Iterable[HashKey]) -> HashResults:
    """The content hashes of files, each under the key it was asked with; a file whose size
    or mtime moved while it was read is left out (asked again under its new key).

    Touches no shared state, so the daemon runs it in a worker thread
    (:meth:`Hasher.learn` takes the results back on the loop)."""
    out: HashResults = {}
    for key in keys:
        path = key[0]
        refused = None
        try:
            digest: str | None = checked_hash(path)
        except NotRegular as exc:
            digest, refused = None, exc.strerror
        except (OSError, ValueError):
            digest = None
        if stat_of(path) in (None, [key[1], key[2]]):
            out[key] = (digest, refused)
    return out


def hash_paths(paths: Iterable[str]) -> HashResults:
    """:func:`hash_files` of files as they are now (missing ones left out)."""
    keys = []
    for path in paths:
        st = stat_of(path)
        if st is not None:
            keys.append((path, st[0], st[1]))
    return hash_files(keys)


class Hasher:
    """Content hashes cached by ``(path, size, mtime_ns)``: a file is hashed only when its
    size or mtime moved, so a big data set is read once, not on every check.

    With ``read`` off (the daemon's: no file is read on its event loop) a miss is not read:
    it answers None and joins :attr:`wanted`, for the caller to hash elsewhere
    (:func:`hash_files`) and hand back (:meth:`learn`) before asking again."""

    def __init__(self, *, read: bool = True) -> None:
        self.cache: dict[HashKey, str | None] = {}
        self.read = read
        self.wanted: set[HashKey] = set()
        #: Files that are never read (pipes, devices), by path: why.
        self.refused: dict[str, str] = {}

    def hash(self, path: str, st: list[int] | None) -> str | None:
        if st is None:
            return None
        key = (path, st[0], st[1])
        if key not in self.cache:
            if not self.read:
                self.wanted.add(key)
                return None
            self.learn(hash_files([key]))
        return self.cache.get(key)

    def take_wanted(self) -> set[HashKey]:
        """The misses not read since the last call (see :attr:`read`)."""
        wanted, self.wanted = self.wanted, set()
        return wanted

    def learn(self, results: HashResults) -> None:
        """Take in what :func:`hash_files` found."""
        for key, (digest, refused) in results.items():
            self.cache[key] = digest
            if refused is None:
                self.refused.pop(key[0], None)
            else:
                self.refused[key[0]] = refused

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
