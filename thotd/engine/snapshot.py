"""The index as the last ``thot run`` left it, kept beside the state database.

A one-shot ``thot run --changed`` has no watcher to tell it what moved since last time, so
it must look at the whole tree; but looking is cheap (one ``stat`` per folder and object
file) while reading and validating every object file is not. The snapshot keeps each
object's parsed node with the signatures of the folder and files it came from, the answers
to the scripts' queries, and what was known of the runs; :meth:`Index.restore` brings the
nodes up to date (only what moved is read again), only the answers a change can affect are
asked again, and :func:`clean_runs` names the runs that need no look at all.

It is a cache, never the truth: anything unexpected (missing, truncated, another version,
another root) means a full load, and it is replaced atomically, so a kill at any moment
leaves the old or the new one. It is written with :mod:`marshal` (plain tuples and dicts,
twice as fast as pickle both ways, and nothing in it can run code when read).
"""

from __future__ import annotations

import contextlib
import marshal
import operator
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thotd.digest import blake2b
from thotd.fingerprint import path_key, racy_from, unmoved
from thotd.paths import make_dirs, private_file_opener
from thotd.project.index import Changes, Index, Node
from thotd.project.locate import norm, upward
from thotd.project.objectfile import ObjectError

if TYPE_CHECKING:
    from thotd.engine.staleness import Engine, RunKey

FORMAT = 2  # 2: object properties hold only the keys their file sets
#: What is stored of a node (its view and the by-file map are derived on load).
_FIELDS = ("id", "kind", "parent", "props", "scripts", "notes", "warnings", "file", "sig",
           "dsig", "names", "subdirs", "metadata", "entries", "_fp")
_HEADER = (FORMAT, _FIELDS, tuple(sys.version_info[:2]))


_fields_of = operator.attrgetter(*_FIELDS)


def _interned(value: Any) -> Any:
    """``value`` with every dict key interned: marshal then writes each key once and refers
    to it after, and reading the snapshot allocates one string per key, not one per object
    (-40 % load time on the bench tree)."""
    if isinstance(value, dict):
        return {sys.intern(k) if type(k) is str else k: _interned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_interned(v) for v in value]
    return value


def _pack(node: Node) -> tuple[Any, ...]:
    errors = tuple((e.path, e.field, e.reason, e.line, e.column) for e in node.errors)
    row = _fields_of(node)
    return (*row[:3], _interned(row[3]), *row[4:], errors)


def _unpack(row: tuple[Any, ...]) -> Node:
    node = Node(row[0], row[1], row[2], row[3])
    (node.scripts, node.notes, node.warnings, node.file, node.sig, node.dsig, node.names,
     node.subdirs, node.metadata, node.entries, node._fp, errors) = row[4:]
    if errors:
        node.errors = [ObjectError(*e) for e in errors]
    return node


def path_for(state_dir: Path, root: str) -> Path:
    digest = blake2b(root.encode("utf-8", "surrogateescape"), digest_size=10).hexdigest()
    return state_dir / "snapshots" / f"{digest}.index"


class Progress:
    """How far a load is, for a daemon that answers ``status`` while it loads (written by
    the loading thread, read by the loop: plain attributes, each write atomic)."""

    def __init__(self) -> None:
        self.phase = "waiting"
        self.index: Index | None = None  # the index being read: its size is the progress
        self.total: int | None = None  # objects expected (the snapshot's count), if known

    @property
    def objects(self) -> int:
        index = self.index
        return len(index.nodes) if index is not None else 0


def _full_load(root: str, progress: Progress | None) -> Index:
    """A cold load, seen from ``progress`` while it runs (the index it fills is made by a
    subclass that hands itself over as soon as it exists)."""
    if progress is None:
        return Index.load(root, signatures=True)
    seen_by = progress

    class Seen(Index):
        def __init__(self, root: str) -> None:
            super().__init__(root)
            seen_by.index = self

    progress.phase = "reading every object file"
    return Seen.load(root, signatures=True)


def load(root: str, state_dir: Path, progress: Progress | None = None,
         ) -> tuple[Index, Changes | None, dict[str, Any] | None]:
    """The project's index, from the snapshot where it can be, what changed since, and what
    the snapshot knew of the runs (for :func:`clean_runs`); ``None`` changes when there was
    no usable snapshot (everything was read). ``progress`` follows it from another thread."""
    root = norm(root)
    try:
        if progress is not None:
            progress.phase = "reading the snapshot"
        with open(path_for(state_dir, root), "rb") as fh:
            saved: dict[str, Any] = marshal.loads(fh.read())  # load(fh) reads piecemeal: 8x slower
        if saved.get("header") != _HEADER or saved.get("root") != root:
            raise ValueError("another format or project")
        if progress is not None:
            progress.total = len(saved["nodes"])
        nodes = {row[0]: _unpack(row) for row in saved["nodes"]}
        # Files too fresh to trust when it was written are trusted once written again.
        racy = any(n.sig is None or n.dsig is None for n in nodes.values())
        plain, answers, runs = saved["plain"], saved["answers"], saved.get("runs")
    except Exception:  # noqa: BLE001 - a cache: whatever is wrong with it, read the tree
        full = _full_load(root, progress)
        full.keep_last_good = False  # as restore(): the snapshot must say what files say
        return full, None, None
    if progress is not None:
        progress.phase = "checking what moved since the snapshot"
    index, changes = Index.restore(root, nodes, plain, answers)
    index.generation = 0 if not changes and not racy else 1
    if progress is not None:
        progress.index = index
    return index, changes, runs


def clean_runs(engine: Engine, changes: Changes, runs: dict[str, Any]) -> dict[str, set[RunKey]]:
    """The runs that are up to date for certain, without reading their records.

    When the snapshot was written, every run except ``runs["stale"]`` was up to date. A run
    can only have gone stale since if its row changed (something ran it), its script
    changed, or something changed in its container's subtree: its queries see nothing else,
    its inputs and outputs are objects of that subtree, and an object whose data file
    changed counts as changed. Those runs are checked for real; the others are not.
    """
    index = engine.index
    dirty: set[str] = set()

    def mark(nid: str) -> None:
        for folder in upward(nid, index.root):
            if folder in dirty:
                break  # and so is everything above it
            dirty.add(folder)

    for nid in changes.added | changes.removed | changes.modified:
        mark(nid)
    for file, then in runs["data"].items():
        if then is None:
            index.generation += 1  # worth writing again, once it can be trusted
        elif unmoved(file, then):
            continue
        for aid in index.by_file.get(file, ()):
            mark(aid)
    scripts = {s for s, then in runs["scripts"].items() if then is not None and unmoved(s, then)}
    stale, stamps = set(runs["stale"]), runs["stamps"]
    out: dict[str, set[RunKey]] = {}
    for key, row in engine.rows.items():
        container, script = key
        if (key in stale or container in dirty or script not in scripts
                or stamps.get(key) != (row.status, row.finished)):
            continue
        out.setdefault(container, set()).add(key)
    return out


def _runs_info(engine: Engine, known_stale: Iterable[RunKey] | None = None) -> dict[str, Any]:
    """What :func:`clean_runs` needs next time. The files' signatures are taken *before* the
    runs are checked, so a change that slips in between shows next time as a changed file.
    ``known_stale``: a caller that knows which runs are stale (a quiet daemon: what it holds
    queued or back) says so, and no run is checked here."""
    index = engine.index
    racy_since = racy_from()
    data = {f: path_key(f, racy_since) for f in index.by_file}
    plan = engine.plan()
    scripts = {p.script: path_key(p.script, racy_since) for p in plan}
    if known_stale is not None:
        stale = list(known_stale)
    else:
        engine.known_clean = {}
        stale = [p.key for p in plan if engine.reasons(p.key)]
    stamps = {key: (row.status, row.finished) for key, row in engine.rows.items()}
    return {"data": data, "scripts": scripts, "stale": stale, "stamps": stamps}


def save(index: Index, state_dir: Path, *, engine: Engine | None = None,
         detach: bool = False, known_stale: Iterable[RunKey] | None = None) -> None:
    """Write the snapshot unless it would say what the one on disk says (best effort: a
    failure costs the next run its shortcut, nothing else).

    ``detach`` writes it from a forked child, for a process about to exit: the ~20 ms it
    takes then overlap with the user reading the result. A run started meanwhile reads the
    previous snapshot, which is just as valid (it only finds more changes), and the rename
    keeps the file whole either way. With ``engine`` (whose index is ``index``) it also
    keeps which runs are up to date, checked there and then (in the child, with ``detach``).
    """
    if index.generation == 0 and (engine is None or not engine.completed):
        return
    if detach:
        from thotd.executor.processgroup import fork_and_forget

        if fork_and_forget(lambda: _write(index, state_dir, engine)):
            return
    _write(index, state_dir, engine, known_stale)


def _write(index: Index, state_dir: Path, engine: Engine | None,
           known_stale: Iterable[RunKey] | None = None) -> None:
    target = path_for(state_dir, index.root)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        runs = _runs_info(engine, known_stale) if engine is not None else None
        blob = marshal.dumps({
            "header": _HEADER, "root": index.root,
            "nodes": [_pack(n) for n in index.nodes.values()],
            "plain": index._plain, "answers": index.answers, "runs": runs,
        })
    except ValueError:
        return  # something marshal cannot hold: no snapshot, a full load next time
    try:
        make_dirs(target.parent)
        with open(tmp, "wb", opener=private_file_opener) as fh:
            fh.write(blob)
        os.replace(tmp, target)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
