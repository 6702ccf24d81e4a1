"""The incremental engine: which runs exist, which are stale and why, and how a finished run
becomes a record.

A run is one (container, script) pair. Its record keeps the script's fingerprint, every
query the script made (asked again later: a query is a dependency on the *question*), the
fingerprints of the objects it got back, and the assets it produced, which are never its own
inputs. Scripts that never used the library, or asked with a callable, get their container's
whole subtree as input: coarse, but correct.

Order needs no recorded edges: a script sees only its own subtree, so producers are always
runs in that subtree (deeper first) or earlier runs of the same container (priority).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from thotd.digest import blake2b
from thotd.engine.logretention import Retention, prune
from thotd.engine.record import RunRecord, read_record
from thotd.engine.runlog import write_footer
from thotd.engine.state import RunRow, Store
from thotd.fingerprint import Hasher, stat_of
from thotd.paths import private_dir
from thotd.project.index import Index
from thotd.project.locate import upward
from thotd.project.search import SearchError

RunKey = tuple[str, str]  # (container id, absolute script path)
INTERRUPTED = ("running", "killed")


class Reason(NamedTuple):
    """Why a run must execute, as data: what happened (``kind``, a key of ``_WORDS``), to
    which path, and for a query's answer, the query (its kind and its search as JSON).
    :meth:`Engine.say` puts it in words."""

    kind: str
    path: str | None = None
    query: tuple[str, str] | None = None


_WORDS = {
    "interrupted": "interrupted before it finished",
    "never-ran": "never ran",
    "script-changed": "script changed",
    "script-missing": "script missing",
    "input-removed": "input {path} removed",
    "input-changed": "input {path} changed",
    "input-data-changed": "input {path} changed",
    "output-missing": "output {path} missing",
    "output-data-missing": "output {path} missing",
    "query-new": "new {what} {path} matches {search}",
    "query-lost": "{path} no longer matches {search}",
    "query-order": "the answer to {search} changed order",
}


class Planned:
    """One autorun association of one container, in run order."""

    __slots__ = ("key", "priority", "order", "depth", "schedule", "blocked")

    def __init__(self, key: RunKey, priority: float, order: int, depth: int,
                 schedule: str | None = None, blocked: str | None = None) -> None:
        self.key = key
        self.priority = priority
        self.order = order  # position in the full run order: children first, then priority
        self.depth = depth
        self.schedule = schedule
        self.blocked = blocked  # why it must wait (an invalid object in its subtree)

    @property
    def container(self) -> str:
        return self.key[0]

    @property
    def script(self) -> str:
        return self.key[1]

    def __repr__(self) -> str:
        return f"Planned({self.key!r}, order={self.order}, blocked={self.blocked!r})"


def _not_utf8(*paths: str) -> str | None:
    """Why a run cannot be recorded: a path that is not UTF-8 (its bytes are kept as
    surrogate escapes, which the state database cannot store)."""
    for path in paths:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(path).decode("utf-8", "backslashreplace")
            return f"waiting for a rename: {shown} is not a UTF-8 name"
    return None


class Engine:
    """Staleness and records for one project's runs, against one index and one store."""

    def __init__(self, index: Index, store: Store, log_root: Path | None = None,
                 rows: dict[RunKey, RunRow] | None = None) -> None:
        """``rows``: the project's run rows, when the caller read them already (a daemon
        builds its engine in a worker thread, where the store's connection may not go)."""
        self.index = index
        self.store = store
        self.project = index.root
        self.hasher = Hasher()
        self.log_root = log_root or store.path.parent / "runs"
        self.rows: dict[RunKey, RunRow] = store.runs(self.project) if rows is None else rows
        self._plan_cache: tuple[tuple[Any, ...], list[Planned]] | None = None
        self.history_ids: dict[RunKey, int] = {}  # running runs' history rows
        # Runs known to be up to date without looking (see thotd.engine.snapshot.clean_runs), by
        # container; a run's completion forgets those at or above its container.
        self.known_clean: dict[str, set[RunKey]] = {}
        self.completed = 0  # runs completed by this engine
        self.retention = Retention()  # how many run logs to keep; the runner sets its own

    # ------------------------------------------------------------------ plan

    def plan(self, start: str | None = None, *, manual: bool = False) -> list[Planned]:
        """Every autorun (or, with ``manual``, every) run below ``start``, in run order.

        Cached until the index's shape (containers, scripts, errors) changes: the daemon asks
        after every batch and every finished run."""
        key = (self.index.shape, start, manual)
        if self._plan_cache is not None and self._plan_cache[0] == key:
            return self._plan_cache[1]
        plan = self._plan(start, manual)
        self._plan_cache = (key, plan)
        return plan

    def _plan(self, start: str | None, manual: bool) -> list[Planned]:
        out: list[Planned] = []
        root_depth = self.index.root.count(os.sep)
        blocked_by = self.index.blocked_by()
        scripts: dict[str, str | None] = {}  # script -> why it cannot run (checked once each)
        for node in self.index.containers_postorder(start):
            if not node.scripts:
                continue
            invalid = blocked_by.get(node.id)
            blocked = f"waiting for a fix: {invalid}" if invalid else _not_utf8(node.id)
            depth = node.id.count(os.sep) - root_depth
            for assoc in node.scripts:
                if not assoc["autorun"] and not manual:
                    continue
                script = assoc["script"]
                if script not in scripts:
                    scripts[script] = _not_utf8(script)
                out.append(
                    Planned(
                        key=(node.id, script),
                        priority=assoc["priority"],
                        order=len(out),
                        depth=depth,
                        schedule=assoc.get("schedule"),
                        blocked=blocked or scripts[script],
                    )
                )
        return out

    def rel(self, path: str) -> str:
        try:
            rel = os.path.relpath(path, self.index.root)
        except ValueError:
            return path
        return path if rel.startswith("..") else ("." if rel == "." else rel)

    # ------------------------------------------------------------------ staleness

    def reasons(self, key: RunKey) -> list[str]:
        """Why the run must execute, in words; empty when it is up to date."""
        return list(dict.fromkeys(self.say(r) for r in self.why_stale(key)))

    def say(self, reason: Reason) -> str:
        """A :class:`Reason` in words, its paths relative to the project."""
        words = _WORDS[reason.kind]
        if reason.query is None:
            return words.format(path=self.rel(reason.path) if reason.path else "")
        kind, search = reason.query
        shown = "anything" if kind == "*" else search
        what = "object" if kind == "*" else kind
        return words.format(path=self.rel(reason.path) if reason.path else "", what=what,
                            search=shown)

    def why_stale(self, key: RunKey) -> list[Reason]:
        """Why the run must execute, as data; empty when it is up to date."""
        if key in self.known_clean.get(key[0], ()):
            return []
        row = self.rows.get(key)
        if row is not None and row.status in INTERRUPTED:
            return [Reason("interrupted")]
        rec = row.record if row is not None else None  # decoded once: ~20 us a record
        if rec is None:
            return [Reason("never-ran")]
        container, script = key
        out: list[Reason] = []
        if self.hasher.changed(script, rec.get("script")):
            out.append(Reason("script-changed" if os.path.exists(script) else "script-missing",
                              script))
        own = set(rec.get("outputs", {}))
        for q in rec.get("queries", []):
            out.extend(self._query_reasons(container, q, own))
        out.extend(self._input_reasons(rec))
        out.extend(self._output_reasons(rec))
        return list(dict.fromkeys(out))

    def _input_reasons(self, rec: dict[str, Any]) -> list[Reason]:
        """The recorded inputs that changed or went (one a query no longer returns is told
        by the query's reasons)."""
        out: list[Reason] = []
        for oid, info in rec.get("consumed", {}).items():
            node = self.index.nodes.get(oid)
            if node is None or not node.valid:
                if not any(oid in q["ids"] for q in rec.get("queries", [])):
                    out.append(Reason("input-removed", oid))
                continue
            if self.index.fingerprint(oid) != info.get("fp"):
                out.append(Reason("input-changed", oid))
            elif node.file and self.hasher.changed(node.file, info.get("data")):
                out.append(Reason("input-data-changed", node.file))
        return out

    def _output_reasons(self, rec: dict[str, Any]) -> list[Reason]:
        """An output someone deleted is made again (a full run would). Only deletion counts:
        two runs that write the same asset must not keep making each other stale."""
        out: list[Reason] = []
        for oid, info in rec.get("outputs", {}).items():
            data = info.get("data") or {}
            if oid not in self.index.nodes:
                out.append(Reason("output-missing", oid))
            elif data.get("stat") is not None and stat_of(info.get("file")) is None:
                out.append(Reason("output-data-missing", info["file"]))
        return out

    def forget_clean(self, container: str) -> None:
        """A run at ``container`` wrote something: the runs that can consume it (at that
        container or above: a script sees only its own subtree) must really be checked."""
        if not self.known_clean:
            return
        for folder in upward(container, self.project):
            self.known_clean.pop(folder, None)

    def current_ids(self, container: str, kind: str, search: Any) -> list[str]:
        """What a recorded query answers now (nothing, for a search that no longer parses)."""
        try:
            return self.index.query_ids(kind, search, container)
        except SearchError:
            return []

    def _query_reasons(self, container: str, q: dict[str, Any], own: set[str]) -> list[Reason]:
        if container not in self.index.nodes:
            return []
        now = [i for i in self.current_ids(container, q["kind"], q["search"]) if i not in own]
        then = [i for i in q["ids"] if i not in own]
        if now == then:
            return []
        asked = (q["kind"], json.dumps(q["search"], sort_keys=True))
        out = [Reason("query-new", i, asked) for i in now if i not in then]
        out += [Reason("query-lost", i, asked) for i in then if i not in now]
        return out or [Reason("query-order", None, asked)]

    def stale(self, plan: Iterable[Planned]) -> list[tuple[Planned, list[str]]]:
        return [(p, r) for p in plan if (r := self.reasons(p.key))]

    def input_state(self, key: RunKey) -> list[Any]:
        """A run's inputs as they are now (script, consumed objects and data files, the
        answers to its queries): what a run caught in a cycle is held on until someone
        changes it."""
        row = self.rows.get(key)
        record = (row.record if row else None) or {}
        state: list[Any] = [stat_of(key[1])]
        for oid, info in sorted(record.get("consumed", {}).items()):
            node = self.index.nodes.get(oid)
            fp = self.index.fingerprint(oid) if node is not None and node.valid else None
            state.append((oid, fp, stat_of((node.file if node else None) or info.get("file"))))
        for q in record.get("queries", []):
            state.append(self.current_ids(key[0], q["kind"], q["search"]))
        return state

    def candidates(self, plan: Iterable[Planned], containers: Iterable[str | None],
                   subtree_of: Iterable[str] = ()) -> list[Planned]:
        """The runs of ``plan`` that can see a change: those of the changed ``containers``
        and their ancestors, and, for a container in ``subtree_of`` (metadata flows down),
        its whole subtree."""
        wanted = self.reach(containers, subtree_of)
        return [p for p in plan if p.container in wanted]

    def reach(self, containers: Iterable[str | None], subtree_of: Iterable[str] = ()) -> set[str]:
        """The containers whose runs can see a change (see :meth:`candidates`)."""
        index = self.index
        wanted: set[str] = set()
        for c in containers:
            cur = c
            while cur is not None and cur not in wanted:
                wanted.add(cur)
                node = index.nodes.get(cur)
                cur = node.parent if node else None
        below = [c for c in subtree_of if c in index.nodes and index.nodes[c].kind == "container"]
        walked: set[str] = set()
        for c in sorted(below, key=len):  # an ancestor's walk covers its added descendants
            if c not in walked:
                ids = [n.id for n in index.walk(c, include_invalid=True) if n.kind == "container"]
                walked.update(ids)
                wanted.update(ids)
        return wanted

    def autorun(self, key: RunKey) -> bool:
        """Whether the run's association (still) says it runs by itself."""
        node = self.index.nodes.get(key[0])
        return bool(node and any(s["script"] == key[1] and s["autorun"] for s in node.scripts))


    # ------------------------------------------------------------------ executing

    def env_for(self, key: RunKey, record_path: str) -> dict[str, str]:
        container, script = key
        return {
            "THOT_CONTAINER_ID": container,
            "THOT_SCRIPT_ID": script,
            "THOT_PROJECT_ROOT": self.index.root,
            "THOT_RECORD": record_path,
            # Output reaches the log as it is printed, and is not lost when a timeout kills it.
            # (thotd.executor.process.start_forkserver starts its server with the same value.)
            "PYTHONUNBUFFERED": "1",
        }

    def log_path(self, key: RunKey, started: float) -> Path:
        digest = blake2b(f"{self.project}\0{key[0]}\0{key[1]}".encode(), digest_size=6)
        stem = Path(key[1]).stem
        stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(started))
        ms = int((started % 1) * 1000)
        return self.log_root / f"{stem}-{digest.hexdigest()}" / f"{stamp}.{ms:03d}.log"

    def begin(self, key: RunKey, reasons: list[str], trigger: str = "") -> tuple[Path, str]:
        """Mark the run started; returns (log path, record path)."""
        started = time.time()
        log = self.log_path(key, started)
        private_dir(log.parent)  # run logs reveal what a user analyses: 0700, whatever the umask
        record_path = str(log) + ".record"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record_path)
        self.history_ids[key] = self.store.mark_running(
            self.project, key[0], key[1], str(log), reasons, trigger
        )
        self.rows[key] = RunRow(self.project, key[0], key[1], "running", None, started, None,
                                str(log), reasons, self.rows[key].record if key in self.rows else None)
        return log, record_path

    def complete(
        self,
        key: RunKey,
        *,
        status: str,
        exit_code: int | None,
        started: float,
        finished: float,
        log: str,
        record_path: str,
        reasons: list[str],
        trigger: str = "",
        refresh_index: bool = True,
        rec: RunRecord | None = None,
    ) -> set[str]:
        """Turn a finished run into its record; returns the ids of the assets it produced.

        ``refresh_index`` re-reads what the run wrote (the one-shot runner has no watcher);
        ``rec`` is the record file already read (by the daemon, off its loop).
        """
        if rec is None:
            rec = read_record(record_path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record_path)
        container, _script = key
        self.completed += 1
        self.forget_clean(container)
        if refresh_index:
            if rec.opaque:
                self.index.update([], rescan=[container])
            elif rec.outputs:
                self.index.update([], rescan=list(rec.outputs))
        record = None
        if status != "killed":
            record = self._build_record(key, rec)
        self.store.finish_run(
            self.project, container, key[1], status=status, exit_code=exit_code,
            started=started, finished=finished, log=log, reasons=reasons, record=record,
            trigger=trigger, history_id=self.history_ids.pop(key, None),
        )
        prune(self.log_root, log, self.retention, self.store.logs_in_use())
        self.rows[key] = RunRow(self.project, container, key[1], status, exit_code, started,
                                finished, log, reasons, record)
        write_footer(log, status, exit_code, finished - started, rec.outputs, self.rel)
        return set(rec.outputs)

    def files_to_hash(self, key: RunKey, rec: RunRecord) -> set[str]:
        """The files :meth:`complete` fingerprints for ``rec``, as far as the index knows
        them before it is refreshed: the daemon hashes them in a worker thread first, so
        its loop reads no file's content (see :class:`~thotd.fingerprint.Hasher`)."""
        files = {key[1], *rec.outputs.values()}
        if rec.opaque:
            files.update(n.file for n in self.index.walk(key[0]) if n.file)
        for oid, info in rec.consumed.items():
            node = self.index.nodes.get(oid)
            files.add((info or {}).get("file") or (node.file if node else None) or "")
        files.discard("")
        return files

    def _build_record(self, key: RunKey, rec: RunRecord) -> dict[str, Any]:
        container, script = key
        outputs: dict[str, Any] = {}
        for oid, file in rec.outputs.items():
            node = self.index.nodes.get(oid)
            outputs[oid] = {
                "file": file,
                "fp": self.index.fingerprint(oid) if node is not None and node.valid else None,
                "data": self.hasher.fingerprint(file),
            }
        consumed: dict[str, Any] = {}
        queries: list[dict[str, Any]] = []
        if rec.opaque:
            # The whole subtree as it stands after the run: its own writes are absorbed,
            # so they never make it stale (no self-trigger loop).
            ids = [n.id for n in self.index.walk(container) if n.id != container and n.id not in outputs]
            queries.append({"kind": "*", "search": None, "ids": ids})
            for oid in ids:
                consumed[oid] = self._object_fp(oid, None)
        else:
            for q in rec.queries:
                queries.append({"kind": q.kind, "search": q.search, "ids": q.ids})
            for oid, info in rec.consumed.items():
                consumed[oid] = self._object_fp(oid, info)
        return {
            "script": self.hasher.fingerprint(script),
            "opaque": rec.opaque,
            "queries": queries,
            "consumed": consumed,
            "outputs": outputs,
        }

    def _object_fp(self, oid: str, seen: dict[str, Any] | None) -> dict[str, Any]:
        """The fingerprint of an input: what the script was given (its query-time view and
        data stat) when known; a data file that moved during the run keeps the old stat and
        no hash, so the run is stale at once and runs again, once."""
        node = self.index.nodes.get(oid)
        fp = seen.get("fp") if seen else (self.index.fingerprint(oid) if node and node.valid else None)
        file = (seen or {}).get("file") or (node.file if node else None)
        data = None
        if file:
            now = stat_of(file)
            then = seen.get("stat") if seen else now
            data = {"stat": then, "hash": self.hasher.hash(file, now) if then == now else None}
        return {"fp": fp, "file": file, "data": data}

    # ------------------------------------------------------------------ provenance

    def producers(self) -> dict[str, RunKey]:
        """Asset id -> the run whose record says it produced it."""
        out: dict[str, RunKey] = {}
        for key, row in self.rows.items():
            for oid in (row.record or {}).get("outputs", {}):
                out[oid] = key
        return out

    def edges(self) -> list[tuple[RunKey, str, RunKey]]:
        """(producer run, asset, consumer run) along recorded inputs."""
        made = self.producers()
        out = []
        for key, row in self.rows.items():
            for oid in (row.record or {}).get("consumed", {}):
                if oid in made and made[oid] != key:
                    out.append((made[oid], oid, key))
        return out
