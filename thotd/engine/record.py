"""The run record: what a script asked for, what it got, what it made.

Nobody declares a script's inputs in Thot, so the library writes them down while the script
runs. The runner names a file in ``THOT_RECORD``; each event is one JSON line, appended and
flushed at once, so a script that crashes still leaves every query it made. Stdlib only: the
script side imports this on every run.
"""

from __future__ import annotations

import json
import os
from typing import Any

from thotd.slotted import Slotted

ENV_RECORD = "THOT_RECORD"


class Recorder:
    """Appends events to the record file; does nothing when the runner gave none."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path if path is not None else os.environ.get(ENV_RECORD)

    def _write(self, event: dict[str, Any]) -> None:
        if not self.path:
            return
        from thotd.paths import private_file_opener  # lazy: only a run writes a record

        line = json.dumps(event, default=str) + "\n"
        with open(self.path, "a", encoding="utf-8", opener=private_file_opener) as fh:
            fh.write(line)

    def query(
        self, kind: str, search: Any, opaque: bool, ids: list[str], objects: dict[str, Any]
    ) -> None:
        self._write(
            {"event": "query", "kind": kind, "search": search, "opaque": opaque,
             "ids": ids, "objects": objects}
        )

    def output(self, asset_id: str, file: str) -> None:
        self._write({"event": "output", "id": asset_id, "file": file})

    def library(self, mode: str) -> None:
        self._write({"event": "library", "mode": mode, "pid": os.getpid()})


class Query(Slotted):
    """One query of the script, as recorded (plain classes here, not dataclasses: importing
    ``dataclasses`` costs every run ~5 ms)."""

    __slots__ = ("kind", "search", "opaque", "ids")

    def __init__(self, kind: str, search: Any, opaque: bool, ids: list[str]) -> None:
        self.kind = kind
        self.search = search
        self.opaque = opaque
        self.ids = ids


class RunRecord(Slotted):
    """A record read back by the engine after the run."""

    __slots__ = ("used_library", "queries", "consumed", "outputs", "damaged")

    def __init__(
        self,
        used_library: bool = False,
        queries: list[Query] | None = None,
        consumed: dict[str, dict[str, Any]] | None = None,
        outputs: dict[str, str] | None = None,
        damaged: bool = False,
    ) -> None:
        self.used_library = used_library
        self.queries: list[Query] = [] if queries is None else queries
        self.consumed: dict[str, dict[str, Any]] = {} if consumed is None else consumed  # id -> {fp, file, stat}
        self.outputs: dict[str, str] = {} if outputs is None else outputs  # asset id -> data file
        self.damaged = damaged  # a line could not be understood: some inputs may be unknown

    @property
    def opaque(self) -> bool:
        """True when a query cannot be asked again (a callable in it), the script never
        used the library, or its record is damaged: then anything in the container's
        subtree is an input."""
        return not self.used_library or self.damaged or any(q.opaque for q in self.queries)


def read_record(path: str) -> RunRecord:
    rec = RunRecord()
    try:
        # The script writes this file: it may hold anything, and must not break the caller.
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()
    except OSError:
        return rec
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            rec.damaged = True  # a line cut by a crash (the run failed anyway), or garbage
            continue
        if not isinstance(ev, dict):
            rec.damaged = True
            continue
        kind = ev.get("event")
        if kind == "library":
            rec.used_library = True
        elif kind == "query":
            rec.used_library = True
            if not _valid_query(ev):
                rec.damaged = True
                continue
            rec.queries.append(Query(ev["kind"], ev.get("search"), bool(ev.get("opaque")),
                                     list(ev["ids"])))
            for oid, info in ev.get("objects", {}).items():
                rec.consumed.setdefault(oid, info)
        elif kind == "output":
            rec.used_library = True
            if not (isinstance(ev.get("id"), str) and isinstance(ev.get("file"), str)):
                rec.damaged = True
                continue
            rec.outputs[ev["id"]] = ev["file"]
    # A run's own outputs are not its inputs, even when a query returned them.
    for oid in rec.outputs:
        rec.consumed.pop(oid, None)
    return rec


def _valid_query(ev: dict[str, Any]) -> bool:
    ids, objects, search = ev.get("ids"), ev.get("objects", {}), ev.get("search")
    return (
        ev.get("kind") in ("container", "asset")
        and (search is None or isinstance(search, dict))
        and isinstance(ids, list) and all(isinstance(i, str) for i in ids)
        and isinstance(objects, dict)
        and all(isinstance(v, dict) and isinstance(v.get("file"), str | None)
                and isinstance(v.get("stat"), list | None) for v in objects.values())
    )
