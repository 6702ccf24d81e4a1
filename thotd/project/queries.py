"""What the index answers: walks, the views scripts see, fingerprints, ``find_*`` (answered
from a cache per container), errors and the run order.

The read side of :class:`thotd.project.index.Index`, kept apart from how the index is
loaded and kept up to date: nothing here changes an object, only the caches of views,
fingerprints and answers, which the index forgets when an object changes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

from thotd.digest import blake2b
from thotd.project.folder import Node, read_file
from thotd.project.locate import norm
from thotd.project.objectfile import (
    ASSET_FILE,
    CONTAINER_FILE,
    SCRIPTS_FILE,
    ObjectError,
    ObjectFileError,
)
from thotd.project.objects import ThotObject
from thotd.project.search import compile_search

_VIEW_RESERVED = ("_id", "parent", "children", "assets", "scripts", "notes", "metadata", "file")
_VIEW_RESERVED_SET = frozenset(_VIEW_RESERVED)

# One encoder for every cache key: json.dumps with options builds a new encoder per call.
_search_key = json.JSONEncoder(sort_keys=True, default=repr).encode


class Queries:
    """The questions asked of an index's objects (a base of
    :class:`~thotd.project.index.Index`, which holds and updates them)."""

    root: str
    nodes: dict[str, Node]
    # Answers to find_* by container, valid for the index as it is (see Index.forget).
    answers: dict[str, dict[tuple[str, str], tuple[str, ...]]]
    generation: int
    _skipped: dict[str, str]  # folders holding both object files -> the warning

    def query_ids(self, kind: str, search: Any, start: str) -> list[str]:
        """The ids a ``find_*`` (or, with kind ``*``, every object) in ``start``'s subtree
        answers now, in walk order.

        Each container's answer is cached and built from its children's, so after a change
        only the containers above it are asked again, each joining its children's cached
        lists: a new sample costs the depth of the tree, not the size of the project."""
        key = (kind, _search_key(search))
        ids = self._answer(start, key, kind, search)
        if kind == "*" and ids and ids[0] == start:
            ids = ids[1:]  # "everything below" does not include the container itself
        return list(ids)

    def _answer(self, start: str, key: tuple[str, str], kind: str, search: Any) -> tuple[str, ...]:
        cached = self.answers.get(start)
        if cached is not None and key in cached:
            return cached[key]
        test = None if kind == "*" else compile_search(search)

        def matches(node: Node) -> bool:
            if not node.valid:
                return False
            if test is None:
                return True
            if node.kind != kind:
                return False
            # A view is kept only once it is handed out (answer, find): a search walks
            # every object, and keeping a view of each it rejects doubled an index's size.
            return bool(test(node._view if node._view is not None else self._build_view(node)))

        # Iterative post-order (trees deeper than the recursion limit exist), descending
        # only into containers whose answer is not cached.
        stack: list[tuple[str, bool]] = [(start, False)]
        while stack:
            nid, children_done = stack.pop()
            node = self.nodes[nid]
            if not children_done:
                stack.append((nid, True))
                for e in node.entries:
                    child = self.nodes.get(e)
                    if child is not None and child.kind == "container" and key not in self.answers.get(e, ()):
                        stack.append((e, False))
                continue
            out = [nid] if matches(node) else []
            for e in node.entries:
                child = self.nodes.get(e)
                if child is None:
                    continue
                if child.kind == "container":
                    out.extend(self.answers[e][key])
                elif matches(child):
                    out.append(e)
            self.answers.setdefault(nid, {})[key] = tuple(out)
        self.generation += 1
        return self.answers[start][key]

    def walk(self, start: str | None = None, *, include_invalid: bool = False) -> Iterator[Node]:
        """Objects below ``start`` (default: the root) in preorder, siblings by folder name."""
        start = norm(start) if start else self.root
        if start not in self.nodes:
            return
        stack = [start]
        while stack:
            nid = stack.pop()
            node = self.nodes.get(nid)
            if node is None:
                continue
            if include_invalid or node.valid:
                yield node
            stack.extend(reversed(node.entries))

    def view(self, node_id: str) -> ThotObject:
        """The object as scripts see it: properties, effective metadata, ids of relatives."""
        node = self.nodes[node_id]
        if node._view is not None:
            return node._view
        node._view = self._build_view(node)
        return node._view

    def _build_view(self, node: Node) -> ThotObject:
        """A new view of ``node`` (see :meth:`view`). Built in place, without the
        intermediate dict a ``ThotObject(data)`` would copy: ``find_*`` over a whole
        project builds one per object."""
        props = node.props
        data = ThotObject(props)
        for key in _VIEW_RESERVED_SET.intersection(props):
            del data[key]
        data["_id"] = node.id
        data["name"] = props.get("name") or os.path.basename(node.id)
        data["metadata"] = dict(node.metadata)
        data["notes"] = [dict(n) for n in node.notes] if node.notes else []
        data["parent"] = node.parent
        if node.kind == "container":
            nodes = self.nodes
            children: list[str] = []
            assets: list[str] = []
            for c in node.entries:
                kid = nodes.get(c)
                if kid is not None and not kid.errors:
                    (children if kid.kind == "container" else assets).append(c)
            data["children"] = children
            data["assets"] = assets
            data["scripts"] = [  # in file order, as the original Thot listed them
                {k: v for k, v in s.items() if k != "order"}
                for s in sorted(node.scripts, key=lambda s: s["order"])
            ] if node.scripts else []
        else:
            data["file"] = node.file
        return data

    def fingerprint(self, node_id: str) -> str:
        """A digest of what a script sees of the object, minus the lists of its children:
        those are answered by queries, and a container listing its own new outputs must
        not make the run that wrote them stale."""
        node = self.nodes[node_id]
        if node._fp is None:
            # A view built only for this is not kept: the daemon fingerprints every object,
            # and keeping 30,000 views it never sends to a script was ~0.9 KB an object.
            whole = node._view if node._view is not None else self._build_view(node)
            view = {k: v for k, v in whole.items() if k not in ("children", "assets")}
            blob = json.dumps(view, sort_keys=True, default=str).encode()
            node._fp = blake2b(blob, digest_size=16).hexdigest()
        return node._fp

    def find(self, kind: str, search: Mapping[str, Any] | None, start: str | None = None) -> list[ThotObject]:
        """Valid objects of ``kind`` in ``start``'s subtree matching ``search``, in order."""
        test = compile_search(search)
        out = []
        for node in self.walk(start):
            if node.kind == kind:
                obj = self.view(node.id)
                if test(obj):
                    out.append(obj)
        return out

    def answer(self, kind: str, search: Any, start: str) -> dict[str, Any]:
        """A script's ``find_*`` asked over a socket (daemon or runner): the objects and their
        fingerprints, exactly what a local walk would give. Raises ``ValueError`` (a
        :class:`~thotd.project.search.SearchError` for a bad search) on a bad question."""
        if kind not in ("container", "asset"):
            raise ValueError("kind must be 'container' or 'asset'")
        start = norm(start)
        if start not in self.nodes:
            raise ValueError(f"{start} is not a container of the project {self.root}")
        found = [self.view(i) for i in self.query_ids(kind, search or {}, start)]
        return {"objects": found, "fingerprints": [self.fingerprint(o["_id"]) for o in found]}

    def find_containers(self, search: Mapping[str, Any] | None = None, start: str | None = None) -> list[ThotObject]:
        return self.find("container", search, start)

    def find_assets(self, search: Mapping[str, Any] | None = None, start: str | None = None) -> list[ThotObject]:
        return self.find("asset", search, start)

    def errors(self) -> list[ObjectError]:
        if not any(n.errors for n in self.nodes.values()):  # the usual case, 20x cheaper
            return []
        return [e for n in self.walk(include_invalid=True) for e in n.errors]

    def load_warnings(self) -> list[str]:
        """What the load tolerated and a person should fix (folders skipped, fields of the
        wrong type kept as written): cheap, for status displays; :meth:`warnings` adds
        the likely typos, which need the files parsed again."""
        out = [w for f, w in self._skipped.items() if self._still_skipped(f)]
        for node in self.walk(include_invalid=True):
            out.extend(node.warnings)
        return out

    def _still_skipped(self, folder: str) -> bool:
        parent = self.nodes.get(os.path.dirname(folder))
        return (parent is not None and parent.kind == "container"
                and os.path.isfile(os.path.join(folder, CONTAINER_FILE))
                and os.path.isfile(os.path.join(folder, ASSET_FILE)))

    def warnings(self) -> list[str]:
        """Likely typos (unknown fields) and misplaced files. Computed on demand by parsing
        the files again: only ``thot validate`` asks, and the load stays lean."""
        out = [w for f, w in self._skipped.items() if self._still_skipped(f)]
        for node in self.walk(include_invalid=True):
            out.extend(node.warnings)
            files = [CONTAINER_FILE if node.kind == "container" else ASSET_FILE]
            if node.kind == "container" and node.scripts:
                files.append(SCRIPTS_FILE)
            for name in files:
                path = os.path.join(node.id, name)
                from thotd.project import model
                try:
                    parsed = model.parse(name, read_file(path), path)
                except (ObjectFileError, OSError):
                    continue
                out.extend(f"{path}: unknown field {k!r} (kept; a typo?)" for k in model.extra_keys(parsed))
        return out

    def blocked_by(self) -> dict[str, ObjectError]:
        """Container id -> an invalid object file its runs must wait for: one in its subtree
        (a summary must not silently miss a sample) or an invalid container above it (whose
        metadata it would inherit). Walks from the few invalid objects, not every container."""
        out: dict[str, ObjectError] = {}
        if not any(n.errors for n in self.nodes.values()):  # the usual case: no walk
            return out
        for node in self.walk(include_invalid=True):
            if not node.errors:
                continue
            err = node.errors[0]
            cur: str | None = node.id
            while cur is not None and cur not in out:
                out[cur] = err
                par = self.nodes.get(cur)
                cur = par.parent if par else None
            if node.kind == "container":
                for below in self.walk(node.id, include_invalid=True):
                    out.setdefault(below.id, err)
        return out

    def containers_postorder(self, start: str | None = None) -> list[Node]:
        """Containers children-first (depth first, siblings by folder name): the run order."""
        order: list[Node] = []
        start = norm(start) if start else self.root
        # Iterative: a tree deeper than the recursion limit (~1000 levels) is still a tree.
        stack: list[tuple[str, bool]] = [(start, False)] if start in self.nodes else []
        while stack:
            nid, children_done = stack.pop()
            node = self.nodes[nid]
            if children_done:
                order.append(node)
                continue
            stack.append((nid, True))
            for child in reversed(node.entries):
                if child in self.nodes and self.nodes[child].kind == "container":
                    stack.append((child, False))
        return order

    def owner_container(self, path: str) -> str | None:
        """The nearest container at or above ``path`` (a folder or file path)."""
        cur = norm(path)
        while True:
            node = self.nodes.get(cur)
            if node is not None and node.kind == "container":
                return cur
            if cur == self.root or len(cur) < len(self.root):
                return None
            parent = os.path.dirname(cur)
            if parent == cur:
                return None
            cur = parent

    def ancestors(self, node_id: str) -> list[str]:
        """The object's ancestors, nearest first."""
        out = []
        cur = self.nodes[node_id].parent
        while cur is not None and cur in self.nodes:
            out.append(cur)
            cur = self.nodes[cur].parent
        return out
