"""Run state in SQLite: projects, the last record of every run, and run history.

Shared by ``thot run`` and the daemon. WAL mode and one transaction per write make it safe
against a kill at any moment: a record is either all there or not at all. The schema carries
a version (``PRAGMA user_version``); :data:`MIGRATIONS` brings an older file forward.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE projects (
        root TEXT PRIMARY KEY,
        added REAL NOT NULL,
        paused INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE runs (
        project TEXT NOT NULL,
        container TEXT NOT NULL,
        script TEXT NOT NULL,
        status TEXT NOT NULL,
        exit_code INTEGER,
        started REAL,
        finished REAL,
        log TEXT,
        reasons TEXT,
        record TEXT,
        PRIMARY KEY (project, container, script)
    );
    CREATE TABLE history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        project TEXT NOT NULL,
        container TEXT NOT NULL,
        script TEXT NOT NULL,
        status TEXT NOT NULL,
        exit_code INTEGER,
        started REAL,
        finished REAL,
        log TEXT,
        reasons TEXT,
        trigger TEXT
    );
    CREATE INDEX history_by_run ON history (project, container, script, id);
    """,
    # 2: containers paused by path (``thotctl pause CONTAINER``), beside the project's flag
    """
    ALTER TABLE projects ADD COLUMN paused_containers TEXT NOT NULL DEFAULT '[]';
    """,
]


_compact = json.JSONEncoder(separators=(",", ":")).encode


class RunRow:
    """One run's row. ``record`` and ``reasons`` are decoded from JSON when first read: a
    quick ``thot run --changed`` loads every row but reads few records (1,100 records are
    ~1 MB of JSON, 15 ms to decode)."""

    __slots__ = ("project", "container", "script", "status", "exit_code", "started", "finished",
                 "log", "_reasons", "_record")

    def __init__(
        self, project: str, container: str, script: str, status: str, exit_code: int | None,
        started: float | None, finished: float | None, log: str | None,
        reasons: list[str] | str | None, record: dict[str, Any] | str | None,
    ) -> None:
        self.project, self.container, self.script = project, container, script
        self.status = status  # ok | failed | timeout | killed | error | running
        self.exit_code, self.started, self.finished, self.log = exit_code, started, finished, log
        self._reasons = reasons  # a str is still JSON
        self._record = _compact(record) if isinstance(record, dict) else record

    @property
    def reasons(self) -> list[str]:
        if isinstance(self._reasons, str):
            decoded: list[str] = json.loads(self._reasons)
            self._reasons = decoded
            return decoded or []
        return self._reasons or []

    @property
    def record(self) -> dict[str, Any] | None:
        """Decoded on every read, never kept: a decoded record is ~7x its JSON (a
        30,000-run project's records were ~250 MB decoded, ~40 MB as text), and a check
        reads each once. A record handed in decoded (a run just finished) is kept as text."""
        if isinstance(self._record, str):
            decoded: dict[str, Any] | None = json.loads(self._record)
            return decoded
        return self._record

    @property
    def has_record(self) -> bool:
        """Whether a record is kept, without decoding it (a check over every run)."""
        return self._record is not None and self._record != "null"

    @property
    def key(self) -> tuple[str, str]:
        return (self.container, self.script)

    def __repr__(self) -> str:
        return f"RunRow({self.container!r}, {self.script!r}, {self.status!r})"


#: SQLite's primary result codes that mean "the file is damaged", not "busy" or "no access".
_CORRUPT_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB


def _paths(text: str | None) -> list[str]:
    """A JSON list of paths as stored; anything else (hand-edited, damaged) as none."""
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the file is damaged (moving it aside helps) rather than locked,
    unreadable or full (moving it aside would lose a good database)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _CORRUPT_CODES
    text = str(exc)
    return "malformed" in text or "not a database" in text


def _quick_check(db: sqlite3.Connection) -> str | None:
    """``PRAGMA quick_check``'s first complaint, or ``None`` when the file is sound."""
    rows = db.execute("PRAGMA quick_check").fetchall()
    if len(rows) == 1 and rows[0][0] == "ok":
        return None
    return "; ".join(str(r[0]) for r in rows[:3])


def _move_aside(path: Path) -> Path:
    """Rename ``path`` (and its ``-wal``/``-shm``) to ``<name>.corrupt-<local time>``.

    The WAL keeps its suffix after the new name, so SQLite can still open the pair for
    whoever wants to look at what was lost.
    """
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    number = 1
    while aside.exists():
        number += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{number}")
    for suffix in ("-wal", "-shm", ""):
        with contextlib.suppress(FileNotFoundError):
            os.rename(f"{path}{suffix}", f"{aside}{suffix}")
    return aside


def default_path() -> Path:
    from thotd import paths
    return paths.database_path()


class LogsInUse:
    """The logs the state database points to, read from it at the first question."""

    __slots__ = ("_db", "_logs")

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._logs: set[str] | None = None

    def _read(self) -> set[str]:
        if self._logs is None:
            rows = self._db.execute("SELECT log FROM runs WHERE log IS NOT NULL").fetchall()
            self._logs = {r[0] for r in rows}
        return self._logs

    def __contains__(self, log: object) -> bool:
        return log in self._read()

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())


class Store:
    """One SQLite file; open it once per process and keep it."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, verify: bool = False) -> None:
        """Open (or create) the database.

        A file SQLite cannot read (truncated, overwritten, a bad page) is moved aside and a
        fresh one started: ``recovered`` then says what happened, for the log and status.
        ``verify`` also runs ``PRAGMA quick_check`` (a few ms per 10 MB), which finds a bad
        page before a query trips on it: the daemon asks for it at start, ``thot run`` not.
        A fresh database takes the projects to watch from the file beside it
        (:mod:`thotd.engine.projectfile`), so losing the database does not lose them.
        """
        self.path = Path(path) if path is not None else default_path()
        self.recovered: str | None
        self.db, fresh, self.recovered = self._open(verify)
        if self.recovered is None and not fresh:
            from thotd.engine import projectfile

            if not projectfile.path_for(self.path).exists():
                self._mirror_projects()  # a database from before there was a projects file
            return
        if self.recovered is not None:
            logging.getLogger(__name__).warning("%s", self.recovered)
        self._restore_projects()

    def _open(self, verify: bool) -> tuple[sqlite3.Connection, bool, str | None]:
        """Connect and migrate; move a corrupt file aside once.

        Returns the connection, whether the database is new, and what was recovered.
        """
        from thotd.paths import make_dirs, make_private

        make_dirs(self.path.parent)
        recovered = None
        for attempt in (1, 2):
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                 0o600))  # SQLite gives its -wal and -shm the same mode
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db = db
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                fresh = db.execute("PRAGMA user_version").fetchone()[0] == 0
                problem = _quick_check(db) if verify else None
                if problem is None:
                    self._migrate()
            except sqlite3.DatabaseError as exc:
                if not _is_corrupt(exc) or attempt == 2:
                    db.close()
                    raise
                problem = str(exc)
            if problem is None:
                for suffix in ("", "-wal", "-shm"):
                    make_private(f"{self.path}{suffix}")
                return db, fresh, recovered
            db.close()
            aside = _move_aside(self.path)
            recovered = (
                f"state database {self.path} was unreadable ({problem}); moved it aside to "
                f"{aside} and started a fresh one (run history is lost; projects are kept)"
            )
        raise AssertionError("unreachable")

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"{self.path} was written by a newer thotd (schema {version}); upgrade thotd"
            )
        for number in range(version, len(MIGRATIONS)):
            with self.tx():
                self.db.executescript(
                    "BEGIN IMMEDIATE;" + MIGRATIONS[number] + f"PRAGMA user_version={number + 1};"
                )

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` unless a script already began one)."""
        began = not self.db.in_transaction
        if began:
            self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        else:
            if self.db.in_transaction:
                self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ projects

    def add_project(self, root: str) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO projects (root, added) VALUES (?, ?)", (root, time.time())
            )
        self._mirror_projects()

    def remove_project(self, root: str) -> bool:
        with self.tx() as db:
            cur = db.execute("DELETE FROM projects WHERE root = ?", (root,))
            db.execute("DELETE FROM runs WHERE project = ?", (root,))
        self._mirror_projects()
        return cur.rowcount > 0

    def set_paused(self, root: str, paused: bool) -> None:
        with self.tx() as db:
            db.execute("UPDATE projects SET paused = ? WHERE root = ?", (int(paused), root))
        self._mirror_projects()

    def paused_containers(self, root: str) -> list[str]:
        """The containers of project ``root`` paused by path (``[]`` when none)."""
        row = self.db.execute("SELECT paused_containers FROM projects WHERE root = ?",
                              (root,)).fetchone()
        return _paths(row[0]) if row else []

    def set_paused_containers(self, root: str, containers: list[str]) -> None:
        with self.tx() as db:
            db.execute("UPDATE projects SET paused_containers = ? WHERE root = ?",
                       (_compact(sorted(set(containers))), root))
        self._mirror_projects()

    def _mirror_projects(self) -> None:
        """Keep the projects to watch in the file beside the database
        (:mod:`thotd.engine.projectfile`), so a database moved aside does not lose them."""
        from thotd.engine import projectfile

        try:
            projectfile.save(self.path, [{**p, "paused_containers": self.paused_containers(p["root"])}
                                         for p in self.projects()])
        except OSError as exc:  # the database has them; the next change tries again
            logging.getLogger(__name__).error("cannot save the list of projects: %s", exc)

    def _restore_projects(self) -> None:
        """Seed a fresh (or recovered) database with the saved projects it does not know,
        then write the file back (one from before there was one, or from a lost database)."""
        from thotd.engine import projectfile

        known = {p["root"] for p in self.projects()}
        with self.tx() as db:
            for item in projectfile.load(self.path):
                if item["root"] in known:
                    continue
                db.execute("INSERT INTO projects (root, added, paused, paused_containers)"
                           " VALUES (?, ?, ?, ?)",
                           (item["root"], time.time(), int(item["paused"]),
                            _compact(item.get("paused_containers", []))))
                known.add(item["root"])
        self._mirror_projects()

    def projects(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT root, added, paused FROM projects ORDER BY root").fetchall()
        return [{"root": r[0], "added": r[1], "paused": bool(r[2])} for r in rows]

    # ------------------------------------------------------------------ runs

    def runs(self, project: str) -> dict[tuple[str, str], RunRow]:
        rows = self.db.execute(
            "SELECT project, container, script, status, exit_code, started, finished, log,"
            " reasons, record FROM runs WHERE project = ?",
            (project,),
        ).fetchall()
        out = {}
        intern = sys.intern  # one string for the project, each script and each status
        for r in rows:
            row = RunRow(intern(r[0]), r[1], intern(r[2]), intern(r[3]), r[4], r[5], r[6], r[7],
                         r[8] or None, r[9] or None)
            out[row.key] = row
        return out

    def mark_running(
        self, project: str, container: str, script: str, log: str, reasons: list[str],
        trigger: str = "",
    ) -> int:
        """Note that a run started, keeping its previous record: a kill now leaves it
        'running', which the next start treats as interrupted and runs again. Returns the
        run's history id, so ``thotctl logs -f`` can follow it while it runs."""
        now = time.time()
        with self.tx() as db:
            db.execute(
                "INSERT INTO runs (project, container, script, status, started, log, reasons)"
                " VALUES (?, ?, ?, 'running', ?, ?, ?)"
                " ON CONFLICT (project, container, script) DO UPDATE SET status='running',"
                " started=excluded.started, finished=NULL, exit_code=NULL, log=excluded.log,"
                " reasons=excluded.reasons",
                (project, container, script, now, log, json.dumps(reasons)),
            )
            cur = db.execute(
                "INSERT INTO history (project, container, script, status, started, log, reasons,"
                " trigger) VALUES (?, ?, ?, 'running', ?, ?, ?, ?)",
                (project, container, script, now, log, json.dumps(reasons), trigger),
            )
        return int(cur.lastrowid or 0)

    def finish_run(
        self,
        project: str,
        container: str,
        script: str,
        *,
        status: str,
        exit_code: int | None,
        started: float,
        finished: float,
        log: str | None,
        reasons: list[str],
        record: dict[str, Any] | None,
        trigger: str = "",
        history_id: int | None = None,
    ) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT INTO runs (project, container, script, status, exit_code, started,"
                " finished, log, reasons, record) VALUES (?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (project, container, script) DO UPDATE SET status=excluded.status,"
                " exit_code=excluded.exit_code, started=excluded.started,"
                " finished=excluded.finished, log=excluded.log, reasons=excluded.reasons,"
                " record=excluded.record",
                (project, container, script, status, exit_code, started, finished, log,
                 json.dumps(reasons), json.dumps(record) if record is not None else None),
            )
            values = (status, exit_code, started, finished, log, json.dumps(reasons), trigger)
            if history_id:
                db.execute(
                    "UPDATE history SET status=?, exit_code=?, started=?, finished=?, log=?,"
                    " reasons=?, trigger=? WHERE id=?",
                    (*values, history_id),
                )
            else:
                db.execute(
                    "INSERT INTO history (status, exit_code, started, finished, log, reasons,"
                    " trigger, project, container, script) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (*values, project, container, script),
                )

    def logs_in_use(self) -> LogsInUse:
        """The run logs the database points to: each run's last one, which is also the one
        a running run writes (:mod:`thotd.engine.logretention` never deletes these). Read
        when first asked: after most runs nothing is pruned and nothing asks, and reading
        every run's log after every run made a full run quadratic."""
        return LogsInUse(self.db)

    def finish_history(self, history_id: int, status: str, exit_code: int | None,
                       finished: float) -> None:
        """End a history row whose run has no run row to update any more (its project was
        removed while it ran): the history must not say 'running' forever."""
        with self.tx() as db:
            db.execute("UPDATE history SET status=?, exit_code=?, finished=? WHERE id=?",
                       (status, exit_code, finished, history_id))

    def running_logs(self) -> list[str]:
        """The logs of runs left 'running' (by a daemon that died), every project's."""
        rows = self.db.execute(
            "SELECT log FROM runs WHERE status = 'running' AND log IS NOT NULL").fetchall()
        return [r[0] for r in rows]

    def interrupt_stale(self) -> int:
        """History rows left 'running' by a process that died: they were interrupted."""
        with self.tx() as db:
            cur = db.execute("UPDATE history SET status='interrupted' WHERE status='running'")
        return cur.rowcount

    _HISTORY_COLUMNS = ("id", "project", "container", "script", "status", "exit_code",
                        "started", "finished", "log", "reasons", "trigger")

    def _history(self, where: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        rows = self.db.execute(
            f"SELECT {', '.join(self._HISTORY_COLUMNS)} FROM history {where}", args
        ).fetchall()
        out = []
        for r in rows:
            item = dict(zip(self._HISTORY_COLUMNS, r, strict=True))
            item["reasons"] = json.loads(item["reasons"] or "[]")
            out.append(item)
        return out

    def history(self, project: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Finished runs, newest first."""
        if project is None:
            return self._history("ORDER BY id DESC LIMIT ?", (limit,))
        return self._history("WHERE project = ? ORDER BY id DESC LIMIT ?", (project, limit))

    def history_entry(self, run_id: int) -> dict[str, Any] | None:
        found = self._history("WHERE id = ?", (run_id,))
        return found[0] if found else None
