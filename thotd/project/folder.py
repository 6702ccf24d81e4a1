"""One folder of a project on disk: reading its object, and telling whether it moved.

The index (:mod:`thotd.project.index`) walks folders; this module reads one: a single
listing of the folder, its object files (each parsed once, refused when not a regular file
or too big), its notes, into a :class:`Node`. With signatures kept (for a snapshot, see
:mod:`thotd.engine.snapshot`) the node remembers what it was read from, and
:func:`moved_paths` later says which folders and files changed since, with one ``stat``
each, so only those are read again.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from typing import Any

from thotd.fingerprint import racy_from, stat_key, trusted_key, unmoved
from thotd.project import objectfile
from thotd.project.locate import resolve_path
from thotd.project.objectfile import (
    ASSET_FILE,
    CONTAINER_FILE,
    NOTES_DIR,
    SCRIPTS_FILE,
    ObjectError,
    ObjectFileError,
)
from thotd.project.objects import ThotObject

_MARKERS = frozenset((CONTAINER_FILE, ASSET_FILE, SCRIPTS_FILE, NOTES_DIR))


#: Shared empties: an asset's entries (never added to: only containers have children) and
#: the effective metadata of an object before the index sets it.
_NO_ENTRIES: list[str] = []
_NO_METADATA: dict[str, Any] = {}


class Node:
    """One object (container or asset) and what the index derived for it.

    A plain class, not a dataclass: ``dataclasses`` costs ~8 ms of every ``thot`` start-up
    (it imports ``inspect``)."""

    __slots__ = ("id", "kind", "parent", "props", "scripts", "notes", "entries", "metadata",
                 "errors", "warnings", "file", "sig", "dsig", "names", "subdirs", "_view", "_fp")

    def __init__(
        self, id: str, kind: str, parent: str | None, props: dict[str, Any],  # noqa: A002
        *, dsig: tuple[int, int, int, int] | None = None,
        names: frozenset[str] = frozenset(), subdirs: Sequence[str] = (),
    ) -> None:
        self.id = id
        self.kind = kind  # "container" | "asset"
        self.parent = parent
        self.props = props  # validated own properties, extras kept, defaults applied
        # Empty sequences are the shared empty tuple, not a list each: five empty lists were
        # 280 bytes and five objects for the garbage collector to walk per object, and most
        # objects have no scripts, notes, errors or warnings (assets never have entries).
        # Code that adds to one assigns a new sequence.
        self.scripts: Sequence[dict[str, Any]] = ()  # containers: resolved, ordered
        self.notes: Sequence[dict[str, Any]] = ()
        # Child object ids, by folder name; a container's is a list the index keeps sorted.
        self.entries: list[str] = [] if kind == "container" else _NO_ENTRIES
        self.metadata: dict[str, Any] = _NO_METADATA  # effective (inherited), never mutated
        self.errors: Sequence[ObjectError] = ()
        self.warnings: Sequence[str] = ()
        self.file: str | None = None  # assets: absolute data file
        # What the node was read from: the object files' (size, mtime_ns, ctime_ns, inode),
        # so a later load can reuse it without re-reading; None when that is not safe.
        self.sig: tuple[Any, ...] | None = None
        # Its folder's signature when listed, which of the marker names it held, and its
        # sub-folders: an unchanged folder need not be listed again.
        self.dsig = dsig
        self.names = names
        self.subdirs = subdirs
        self._view: ThotObject | None = None
        self._fp: str | None = None

    @property
    def valid(self) -> bool:
        return not self.errors

    def invalidate(self) -> None:
        self._view = None
        self._fp = None

    def __repr__(self) -> str:
        return f"Node({self.id!r}, {self.kind!r}, errors={len(self.errors)})"



#: Object files are small JSON descriptions; a bigger one is refused instead of being parsed
#: (and fingerprinted, and sent to scripts) on the daemon's loop: 64 MiB costs ~0.5 s a read.
MAX_OBJECT_BYTES = 16 * 1024 * 1024


def list_folder(folder: str, regular: set[str] | None = None) -> tuple[frozenset[str], list[str]]:
    """The marker names (object files, ``_notes``) a folder holds and its sub-folders
    (sorted, ``_notes`` left out), from one listing; raises ``OSError``. ``regular``, when
    given, receives the marker names the listing says are regular files (no ``stat``: the
    directory entry's type)."""
    names: set[str] = set()
    dirs: list[str] = []
    with os.scandir(folder) as it:
        for entry in it:
            name = entry.name
            if name in _MARKERS:
                names.add(name)
                if regular is not None and entry.is_file(follow_symlinks=False):
                    regular.add(name)
                    continue
            if name != NOTES_DIR and entry.is_dir(follow_symlinks=False):
                dirs.append(name)
    return frozenset(names), sorted(dirs)


def read_file(path: str) -> bytes:
    """An object file's bytes (see :func:`_read_stat`)."""
    return _read_stat(path)[0]


def _read_stat(path: str) -> tuple[bytes, os.stat_result]:
    # O_NONBLOCK: a named pipe called _asset.json must not hang the reader; only regular
    # files are read. Raw descriptors, not a file object: ``open()``'s buffered layer was a
    # third of a cold load (20,000 files: 0.43 s against 0.18 s).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_size > MAX_OBJECT_BYTES:
            raise OSError(
                errno.EFBIG,
                f"{st.st_size / 2**20:.1f} MiB, over the {MAX_OBJECT_BYTES >> 20} MiB limit for "
                "object files (they describe data; the data belongs in the asset's file)",
            )
        # One read of the size fstat gave, plus one byte: a file that grew meanwhile is
        # read on to its end (up to the limit) instead of being cut.
        data = os.read(fd, st.st_size + 1)
        if len(data) > st.st_size:
            data += _read_rest(fd, MAX_OBJECT_BYTES + 1 - len(data))
            if len(data) > MAX_OBJECT_BYTES:
                raise OSError(errno.EFBIG, f"over the {MAX_OBJECT_BYTES >> 20} MiB limit for "
                              "object files (it grew while being read)")
        return data, st
    finally:
        os.close(fd)


#: A first read this big finds the end of almost every object file, without an ``fstat``.
_FIRST_READ = 1 << 16


def _read_listed(path: str) -> bytes:
    """An object file its folder's listing said is a regular file: read without the
    ``fstat`` of :func:`_read_stat` (one system call of eight per object on a cold load).
    A file that filled the first read, or that was swapped for something else since it
    was listed, takes the careful way: nothing but a regular file is read to its end."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        data = os.read(fd, _FIRST_READ)
    finally:
        os.close(fd)
    if len(data) < _FIRST_READ:
        return data
    return _read_stat(path)[0]


def _read_rest(fd: int, budget: int) -> bytes:
    """What is left of a file that grew while it was read, at most ``budget`` bytes."""
    parts: list[bytes] = []
    while budget > 0:
        chunk = os.read(fd, min(budget, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        budget -= len(chunk)
    return b"".join(parts)


def _iso(timestamp: float) -> str:
    from datetime import datetime  # only for folders with notes

    return datetime.fromtimestamp(timestamp).isoformat(" ")


def read_notes(folder: str) -> list[dict[str, Any]]:
    notes: list[dict[str, Any]] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return notes
    for entry in entries:
        if not entry.is_file() or entry.name.startswith("."):
            continue
        try:
            content = read_file(entry.path).decode("utf-8", errors="replace")
            # a local-time ISO string, as the original Thot gave scripts
            created = _iso(entry.stat().st_mtime)
        except OSError:
            continue
        notes.append(
            {"title": os.path.splitext(entry.name)[0], "created": created, "content": content}
        )
    return notes


def resolve_scripts(assocs: list[dict[str, Any]], folder: str, root: str) -> list[dict[str, Any]]:
    """A ``_scripts.json``'s associations with absolute scripts, in run order (priority,
    then position in the file)."""
    out = []
    for order, assoc in enumerate(assocs):
        item = dict(assoc)
        item["script"] = resolve_path(assoc["script"], folder, root)
        item["order"] = order
        out.append(item)
    out.sort(key=lambda a: (a["priority"], a["order"]))
    return out


def _unreadable(folder: str, parent: str | None, exc: OSError) -> Node | None:
    """A folder that cannot be listed. One that may hold objects is an error entry: hold
    the runs that would see it rather than run them as if its data did not exist."""
    if parent is None or os.path.basename(folder) == "lost+found":
        return None
    node = Node(id=folder, kind="container", parent=parent, props={})
    node.errors = [ObjectError(folder, None, f"cannot read this folder ({exc.strerror}); "
                               "what it holds is unknown: fix its permissions")]
    return node


def _read_into(node: Node, path: str, name: str, root: str, racy_since: int | None,
               errors: list[ObjectError], listed_regular: bool = False) -> Any:
    """Read one object file (``name`` at ``path``) into ``node``; returns its signature.
    A file that does not parse keeps its signature: it is read again once it changes.
    ``listed_regular``: the folder's listing said it is a regular file."""
    sig = None
    try:
        if racy_since is None and listed_regular:
            data = _read_listed(path)
        else:
            data, st = _read_stat(path)
            if racy_since is not None:
                sig = trusted_key(st, racy_since)
    except OSError as exc:
        errors.append(ObjectError(path, None, f"cannot read: {exc.strerror or exc}"))
        return None
    try:
        loaded, tolerated = objectfile.load_tolerant(name, data, path)
    except ObjectFileError as exc:
        errors.extend(exc.errors)
        return sig
    if tolerated:
        node.warnings = [*node.warnings, *tolerated]
    if name == SCRIPTS_FILE:
        node.scripts = resolve_scripts(loaded, node.id, root)
    else:
        node.props = loaded
    return sig


def _scripts_part(node: Node, path: str, root: str, racy_since: int | None,
                  errors: list[ObjectError], listed_regular: bool = False) -> Any:
    """Read a ``_scripts.json``; returns its part of the signature (1 in an asset, where
    only its presence matters: a warning)."""
    if node.kind == "asset":
        node.warnings = [*node.warnings, f"{path}: scripts belong to containers; ignored in an asset"]
        return 1
    return _read_into(node, path, SCRIPTS_FILE, root, racy_since, errors, listed_regular)


def object_files(folder: str, found: frozenset[str], parent: str | None,
                 skipped: dict[str, str] | None) -> tuple[bool, bool]:
    """Whether the folder holds a container file and an asset file. Below the root, one
    holding both is skipped with what is below it, as the original Thot did, and noted in
    ``skipped`` with the warning that says so."""
    has_c, has_a = CONTAINER_FILE in found, ASSET_FILE in found
    if skipped is not None:
        skipped.pop(folder, None)
    if has_c and has_a and parent is not None:
        if skipped is not None:
            skipped[folder] = (
                f"{folder}: holds both {CONTAINER_FILE} and {ASSET_FILE}; skipped with what is "
                "below it (a folder is one or the other: delete one of them)"
            )
        return False, False
    return has_c, has_a


def read_object(folder: str, parent: str | None, root: str,
                plain: dict[str, Any] | None = None,
                skipped: dict[str, str] | None = None) -> tuple[Node | None, list[str]]:
    """Read one folder's object files with a single listing of the folder.

    Returns the object (None when the folder is not one) and its sub-folders, which the
    walk needs anyway: no ``stat`` per candidate file, each file parsed once. With
    ``plain`` (signatures kept, for a snapshot: ~8 % of a cold load) the node keeps the
    signatures of its folder and files, and a folder holding no object is noted in
    ``plain`` with its signature (it may become one).
    """
    racy_since = racy_from() if plain is not None else None
    try:
        dsig = trusted_key(os.stat(folder), racy_since) if racy_since is not None else None
        regular: set[str] = set()
        found, dirs = list_folder(folder, regular)
    except PermissionError as exc:
        return _unreadable(folder, parent, exc), []
    except OSError:
        return None, []
    base = folder + os.sep if folder != os.sep else folder
    has_c, has_a = object_files(folder, found, parent, skipped)
    if not has_c and not has_a:
        if plain is not None:
            plain[folder] = dsig
        return None, []
    kind = "container" if has_c else "asset"
    subdirs = [base + d for d in dirs] if has_c else []
    if plain is not None:
        plain.pop(folder, None)
        node = Node(id=folder, kind=kind, parent=parent, props={}, dsig=dsig, names=found,
                    subdirs=subdirs)
    else:
        node = Node(id=folder, kind=kind, parent=parent, props={})
    errors: list[ObjectError] = []
    if has_c and has_a:
        errors.append(ObjectError(
            folder, None,
            f"holds both {CONTAINER_FILE} and {ASSET_FILE}; a folder is one or the "
            "other: delete one of them",
        ))
    own_name = CONTAINER_FILE if has_c else ASSET_FILE
    sigs = [_read_into(node, base + own_name, own_name, root, racy_since, errors,
                       own_name in regular), 0]
    if kind == "asset" and isinstance(node.props.get("file"), str):
        node.file = resolve_path(node.props["file"], folder, root)
    if SCRIPTS_FILE in found:
        sigs[1] = _scripts_part(node, base + SCRIPTS_FILE, root, racy_since, errors,
                                SCRIPTS_FILE in regular)
    if NOTES_DIR in found:
        node.notes = read_notes(base + NOTES_DIR)
    if errors:
        node.errors = errors
    if plain is not None and None not in sigs and not (has_a and has_c) and NOTES_DIR not in found:
        node.sig = (sigs[0], sigs[1])
    return node, subdirs


# ------------------------------------------------------------------ has it moved?

def listing_moved(node: Node) -> list[str]:
    """A folder whose listing changed: what appeared or went among its marker names and
    sub-folders. The node takes the new listing (the caller re-reads it if needed)."""
    try:
        dsig = trusted_key(os.stat(node.id), racy_from())
        names, dirs = list_folder(node.id)
    except OSError:
        return [node.id]
    base = node.id + os.sep
    out = [base + name for name in names ^ node.names]
    if node.kind == "container":
        now = [base + d for d in dirs]
        new, old = set(now), set(node.subdirs)
        out += [p for p in now if p not in old] + [p for p in node.subdirs if p not in new]
        node.subdirs = now
    node.dsig, node.names = dsig, names
    return out


def _node_moved(node: Node) -> list[str]:
    """What moved of one object since it was read: its folder's listing, its own file, its
    ``_scripts.json``."""
    folder = node.id
    try:
        st = os.stat(folder)
    except OSError:
        return [folder]  # gone (or unreadable): the update drops or re-reads it
    out: list[str] = []
    if node.dsig is None or node.dsig != stat_key(st):
        out.extend(listing_moved(node))
    own = folder + os.sep + (CONTAINER_FILE if node.kind == "container" else ASSET_FILE)
    if node.sig is None:  # not trusted (too fresh, unreadable, with notes): read again
        return [*out, own]
    then_own, then_scripts = node.sig
    if not unmoved(own, then_own):
        out.append(own)
    elif type(then_scripts) is tuple:
        spath = folder + os.sep + SCRIPTS_FILE
        if not unmoved(spath, then_scripts):
            out.append(spath)
    return out


def moved_paths(nodes: dict[str, Node], plain: dict[str, Any]) -> list[str]:
    """The paths whose signature differs from the one recorded, in the form
    :meth:`~thotd.project.index.Index.update` takes: an object file (read the object
    again), a folder (sync it), or a marker name that appeared or went (``_notes``,
    ``_scripts.json``...). ``plain`` (folders that held no object) drops the folders that
    can no longer become one."""
    out: list[str] = []
    for node in list(nodes.values()):
        out.extend(_node_moved(node))
    for folder, then in list(plain.items()):
        parent = nodes.get(os.path.dirname(folder))
        if parent is None or parent.kind != "container":
            del plain[folder]  # no longer where an object could be
            continue
        try:
            st = os.stat(folder)
        except OSError:
            del plain[folder]
            continue
        if then is None or then != stat_key(st):
            out.append(folder)  # it may have become an object
    return out
