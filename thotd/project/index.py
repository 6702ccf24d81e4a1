"""The in-memory project index: every object of a tree, loaded in one pass.

Each object file is read once; effective metadata is computed top-down while walking, so no
ancestor is re-read (the original re-read every ancestor for every object). The same loader
serves a cold load, a one-folder refresh and a subtree rescan, which is what lets the daemon
apply a batch of filesystem events without reloading the tree (:meth:`Index.update`).

Invalid objects stay in the index as error entries (with the last good properties when there
were some) so the rest of the tree still loads and the runs that would see them can be held.

This module holds the tree and keeps it whole (load, restore, update); reading one folder
from disk, and telling whether it moved since, is :mod:`thotd.project.folder`; what the
index answers (walks, views, ``find_*``) is :mod:`thotd.project.queries`.
"""

from __future__ import annotations

import bisect
import gc
import itertools
import os
from collections.abc import Iterable, Mapping
from typing import Any

from thotd.project.folder import Node, moved_paths, read_object
from thotd.project.locate import NotAProject, find_project_root, norm, resolve_path, upward
from thotd.project.objectfile import (
    CONTAINER_FILE,
    NOTES_DIR,
    OBJECT_FILES,
)
from thotd.project.queries import Queries

__all__ = ["Changes", "Index", "Node", "NotAProject", "find_project_root", "load_project", "norm",
           "resolve_path"]

_SHAPES = itertools.count()  # shape versions, unique across Index instances


def _inherit(inherited: Mapping[str, Any], own: Mapping[str, Any] | None) -> dict[str, Any]:
    """Effective metadata. Without metadata of its own an object shares its parent's dict
    (never mutated in place), which keeps a 20,000-object index small."""
    if not own:
        return inherited  # type: ignore[return-value]
    return {**inherited, **own}


def _outermost(folders: Iterable[str]) -> list[list[str]]:
    """The folders none of which is below another, as sorted lists of path parts."""
    kept: list[list[str]] = []
    for parts in sorted(f.split(os.sep) for f in folders):
        if kept and parts[: len(kept[-1])] == kept[-1]:
            continue
        kept.append(parts)
    return kept


def _covered(folder: str, outer: list[list[str]]) -> bool:
    """Whether ``folder`` is strictly below one of ``outer`` (see :func:`_outermost`)."""
    parts = folder.split(os.sep)
    i = bisect.bisect_right(outer, parts) - 1
    return i >= 0 and len(outer[i]) < len(parts) and parts[: len(outer[i])] == outer[i]


class Index(Queries):
    """All objects of one project, by id (the absolute, normalised folder path)."""

    def __init__(self, root: str) -> None:
        self.root = norm(root)
        self.nodes: dict[str, Node] = {}
        # Data file -> the asset ids that point at it. Tuples, not sets: almost every file
        # has one asset, and a set of one was 216 bytes against a tuple's 48.
        self.by_file: dict[str, tuple[str, ...]] = {}
        # Bumped whenever containers (their scripts, their order) or object errors change:
        # the run plan depends on nothing else, so it is rebuilt only when this moves.
        self.shape = next(_SHAPES)
        # Answers to find_* by container, valid for the index as it is: forgotten for every
        # container at or above a changed object (see forget), so they never go stale.
        self.answers: dict[str, dict[tuple[str, str], tuple[str, ...]]] = {}
        # Moves whenever objects or answers change; 0 means "as the snapshot on disk says"
        # (see thotd.engine.snapshot), which a new index never is.
        self.generation = 1
        # A live index (the daemon's) keeps a broken object's last good properties; a
        # restored one must end exactly where a fresh load would.
        self.keep_last_good = True
        self.signatures = False  # record folder signatures (for a snapshot: see restore)
        # Folders met that hold no object (by signature), for restore(): one may become one.
        self._plain: dict[str, Any] = {}
        # Folders skipped because they hold both object files -> the warning saying so.
        self._skipped: dict[str, str] = {}

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls, root: str | os.PathLike[str], focus: str | None = None, *, signatures: bool = False
    ) -> Index:
        """Load the project at ``root``; with ``focus``, only that container's subtree plus the
        chain of its ancestors (what a script can see, and the metadata it inherits).
        ``signatures`` also records each folder's, for a snapshot (one more ``stat`` each)."""
        idx = cls(norm(root))
        idx.signatures = signatures
        if not os.path.isfile(os.path.join(idx.root, CONTAINER_FILE)):
            raise NotAProject(
                f"{idx.root} is not a Thot project: it has no {CONTAINER_FILE} "
                f"(create one, even '{{}}', to mark the root container)"
            )
        if focus is None or norm(focus) == idx.root:
            idx._load_subtree(idx.root, None, {})
            return idx
        focus = norm(focus)
        chain: list[str] = []
        cur = focus
        while cur != idx.root:
            chain.append(cur)
            parent = os.path.dirname(cur)
            if parent == cur:
                raise NotAProject(f"{focus} is not inside the project {idx.root}")
            cur = parent
        meta: dict[str, Any] = {}
        parent_id: str | None = None
        for folder in [idx.root, *reversed(chain[1:])]:
            node, _subdirs = idx._read_object(folder, parent_id)
            if node is None or node.kind != "container":
                raise NotAProject(f"{folder} is not a Thot container (no {CONTAINER_FILE})")
            node.metadata = _inherit(meta, node.props.get("metadata"))
            meta = node.metadata
            idx._add(node)
            parent_id = folder
        idx._load_subtree(focus, parent_id, meta)
        if focus not in idx.nodes:
            raise NotAProject(f"{focus} is not a Thot container (no {CONTAINER_FILE})")
        for folder in [idx.root, *reversed(chain[1:])]:
            idx.nodes[folder].entries = [c for c in chain if os.path.dirname(c) == folder]
        return idx

    @classmethod
    def restore(
        cls, root: str, nodes: dict[str, Node], plain: dict[str, Any] | None = None,
        answers: dict[str, dict[tuple[str, str], tuple[str, ...]]] | None = None,
    ) -> tuple[Index, Changes]:
        """The index an earlier load left (``nodes``, with their entries and metadata, and
        the ``plain`` folders it met), brought up to date with the disk; returns it and what
        changed since.

        A one-shot process has no watcher to say what moved, so every folder and object file
        is ``stat``-ed; only those whose signature moved are listed or read, through
        :meth:`update` -- the same incremental path the daemon takes for its events.
        """
        idx = cls(root)
        if not os.path.isfile(os.path.join(idx.root, CONTAINER_FILE)):
            return cls.load(root), Changes()  # raises NotAProject
        idx.nodes = nodes
        for node in nodes.values():
            if node.file is not None:
                idx._point(node.file, node.id)
        idx._plain = dict(plain or {})
        idx.answers = answers or {}
        idx.signatures = True
        paths = moved_paths(idx.nodes, idx._plain)
        # What a fresh load would give, now and for the rest of this index's life (the
        # snapshot it is saved to must say what the files say).
        idx.keep_last_good = False
        return idx, (idx.update(paths) if paths else Changes())

    def _read_object(self, folder: str, parent: str | None) -> tuple[Node | None, list[str]]:
        """:func:`~thotd.project.folder.read_object`, keeping signatures when asked to."""
        return read_object(folder, parent, self.root, self._plain if self.signatures else None,
                           self._skipped)

    def _load_subtree(self, folder: str, parent: str | None, meta: Mapping[str, Any]) -> list[str]:
        """Load ``folder`` and everything below it; returns the ids added (preorder).

        The cyclic garbage collector is paused meanwhile: a load allocates tens of thousands
        of dicts and lists that all stay alive, and the collections they trigger (each
        walking everything allocated so far) were a third of a cold load. Nothing here
        makes reference cycles, so nothing is left for the collector afterwards."""
        paused = gc.isenabled()
        gc.disable()
        try:
            return self._load_walk(folder, parent, meta)
        finally:
            if paused:
                gc.enable()

    def _load_walk(self, folder: str, parent: str | None, meta: Mapping[str, Any]) -> list[str]:
        added: list[str] = []
        stack: list[tuple[str, str | None, Mapping[str, Any]]] = [(folder, parent, meta)]
        while stack:
            path, par, inherited = stack.pop()
            node, subdirs = self._read_object(path, par)
            if node is None:
                continue
            node.metadata = _inherit(inherited, node.props.get("metadata"))
            self._add(node)
            added.append(path)
            for sub in reversed(subdirs):
                stack.append((sub, path, node.metadata))
        # Attach each object to its parent. The walk is preorder over sorted folders, so
        # siblings arrive in order; only the top one may join an existing list of entries.
        for path in added:
            par = self.nodes[path].parent
            if par is None or par not in self.nodes:
                continue
            entries = self.nodes[par].entries
            if path == folder:
                if path not in entries:
                    names = [os.path.basename(e) for e in entries]
                    entries.insert(bisect.bisect(names, os.path.basename(path)), path)
            else:
                entries.append(path)
        return added

    def _add(self, node: Node) -> None:
        old = self.nodes.get(node.id)
        if node.kind == "container" or node.errors or (old is not None and old.errors):
            self.shape = next(_SHAPES)
        self.nodes[node.id] = node
        if node.file is not None:
            self._point(node.file, node.id)

    def _point(self, file: str, node_id: str) -> None:
        """Note that asset ``node_id`` points at data ``file``."""
        ids = self.by_file.get(file, ())
        if node_id not in ids:
            self.by_file[file] = (*ids, node_id)

    def _unpoint(self, file: str, node_id: str) -> None:
        ids = tuple(i for i in self.by_file.get(file, ()) if i != node_id)
        if ids:
            self.by_file[file] = ids
        else:
            self.by_file.pop(file, None)

    def _drop(self, node_id: str) -> list[str]:
        """Remove an object and its subtree; returns the removed ids."""
        removed = [n.id for n in self.walk(node_id, include_invalid=True)]
        for nid in removed:
            node = self.nodes.pop(nid)
            if node.kind == "container" or node.errors:
                self.shape = next(_SHAPES)
            if node.file is not None:
                self._unpoint(node.file, nid)
        top = removed[0] if removed else node_id
        parent = os.path.dirname(top)
        if parent in self.nodes and top in self.nodes[parent].entries:
            self.nodes[parent].entries.remove(top)
            self.nodes[parent].invalidate()
        return removed

    # ------------------------------------------------------------------ incremental update

    def update(self, paths: Iterable[str], rescan: Iterable[str] = ()) -> Changes:
        """Apply changed filesystem paths (and subtrees to rescan) to the index.

        Object files and ``_notes/`` re-read their object; a folder path re-syncs that folder
        (created, deleted, moved); any other file is a possible asset data file.
        """
        changes = Changes()
        todo: dict[str, bool] = {}  # folder -> full rescan
        for raw in paths:
            p = norm(raw)
            name = os.path.basename(p)
            parent = os.path.dirname(p)
            if name in OBJECT_FILES or name == NOTES_DIR:
                todo.setdefault(parent, False)
            elif os.path.basename(parent) == NOTES_DIR:
                todo.setdefault(os.path.dirname(parent), False)
            elif p in self.nodes or os.path.isdir(p):
                todo[p] = True
            if p in self.by_file:
                changes.data.update(self.by_file[p])
        for raw in rescan:
            todo[norm(raw)] = True
        # A folder below one that is rescanned whole is covered by that rescan: a new deep
        # tree reports every level, and rescanning each would cost depth² reads.
        whole = _outermost(f for f, full in todo.items() if full)
        for folder in sorted(todo, key=lambda f: f.count(os.sep)):
            if folder != self.root and not folder.startswith(self.root + os.sep):
                continue
            if _covered(folder, whole):
                continue
            self._sync(folder, todo[folder], changes)
        for nid in list(changes.data):
            if nid not in self.nodes:
                changes.data.discard(nid)
        if changes:
            self.generation += 1
        self.forget(changes)
        return changes

    def forget(self, changes: Changes) -> None:
        """Drop the cached answers a change can affect: a query sees its container's subtree
        (and metadata inherited from above, which reaches it as changed objects below), so
        only containers at or above a changed object can answer differently."""
        if not self.answers:
            return
        for nid in changes.added | changes.removed | changes.modified:
            for folder in upward(nid, self.root):
                self.answers.pop(folder, None)

    def _sync(self, folder: str, full: bool, changes: Changes) -> None:
        """Bring one folder's object in line with the disk: drop it, reload its subtree
        (new, changed kind, or ``full``), or re-read only its own files."""
        parent = os.path.dirname(folder)
        in_project = folder == self.root or (
            parent in self.nodes and self.nodes[parent].kind == "container"
        )
        old = self.nodes.get(folder)
        fresh = None
        if in_project and os.path.isdir(folder):
            fresh, _subdirs = self._read_object(folder, None if folder == self.root else parent)
        if fresh is None:
            if old is not None:
                changes.removed.update(self._drop(folder))
        elif old is None or old.kind != fresh.kind or full:
            self._reload(folder, parent, old, fresh, changes)
        else:
            self._replace(folder, parent, old, fresh, changes)

    def _reload(self, folder: str, parent: str, old: Node | None, fresh: Node,
                changes: Changes) -> None:
        """Load ``folder``'s subtree again; what differs from before goes into ``changes``."""
        before = {n.id: n for n in self.walk(folder, include_invalid=True)} if old else {}
        old_fps = {nid: self.fingerprint(nid) for nid in before}
        old_errors = {nid: n.errors for nid, n in before.items()}
        if old is not None:
            self._drop(folder)
        inherited = self.nodes[parent].metadata if folder != self.root else {}
        added = self._load_subtree(folder, fresh.parent, inherited)
        if parent in self.nodes:
            self.nodes[parent].invalidate()
        for nid in added:
            if nid not in before:
                changes.added.add(nid)
            elif self.fingerprint(nid) != old_fps[nid] or self.nodes[nid].errors != old_errors[nid]:
                changes.modified.add(nid)
        changes.removed.update(set(before) - set(added))

    def _replace(self, folder: str, parent: str, old: Node, fresh: Node, changes: Changes) -> None:
        """The same kind of object, re-read: only this folder's files; children keep their
        nodes (and inherit its metadata again when that moved)."""
        fresh.entries = old.entries
        if fresh.errors and old.valid and self.keep_last_good:
            # Keep the last good version's properties: dependents must not run on garbage,
            # and queries keep answering as before until the file is fixed.
            fresh.props, fresh.scripts, fresh.file = old.props, old.scripts, old.file
        meta_changed = fresh.props.get("metadata") != old.props.get("metadata")
        inherited = self.nodes[parent].metadata if folder != self.root else {}
        fresh.metadata = _inherit(inherited, fresh.props.get("metadata"))
        old_fp = self.fingerprint(folder)
        if old.file is not None and old.file != fresh.file:
            self._unpoint(old.file, folder)
        self._add(fresh)
        if fresh.valid != old.valid and parent in self.nodes:
            # The parent's view lists only valid children and assets.
            self.nodes[parent].invalidate()
        if self.fingerprint(folder) != old_fp or fresh.errors != old.errors:
            changes.modified.add(folder)
        if meta_changed:
            self._inherit_below(folder, changes)

    def _inherit_below(self, folder: str, changes: Changes) -> None:
        """``folder``'s metadata moved: everything below inherits it again."""
        for node in self.walk(folder, include_invalid=True):
            if node.id == folder:
                continue
            par = self.nodes[node.parent] if node.parent else None
            node.metadata = _inherit(par.metadata if par else {}, node.props.get("metadata"))
            node.invalidate()
            changes.modified.add(node.id)

class Changes:
    """What one :meth:`Index.update` changed, by object id."""

    __slots__ = ("added", "removed", "modified", "data")

    def __init__(self) -> None:
        self.added: set[str] = set()
        self.removed: set[str] = set()
        self.modified: set[str] = set()
        self.data: set[str] = set()  # assets whose data file path was touched

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.modified or self.data)

    def __repr__(self) -> str:
        return (f"Changes(added={self.added!r}, removed={self.removed!r}, "
                f"modified={self.modified!r}, data={self.data!r})")

    def ids(self) -> set[str]:
        return self.added | self.removed | self.modified | self.data


def load_project(root: str | os.PathLike[str]) -> Index:
    """Load a whole project (the bench and the CLIs' entry point)."""
    return Index.load(root)
