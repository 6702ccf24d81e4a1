"""What the fault tests share beyond the test kit: a status-latency prober and the state db
check; re-exports of the kit (the real daemon of ``daemonkit``, ``wait_for`` and the oracle of
``corekit``) and of the report's collector, so a fault test imports from one place.

Everything is real: a ``thotd`` process started with its own XDG folders and socket, real
project folders, real scripts, a real Unix socket. Nothing sleeps and hopes: conditions are
polled with deadlines (:func:`wait_for`). The few fixed delays are the *fault itself* (kill
the daemon N ms after a write) or a sampling interval.

Profiles: ``quick`` (the default, bounded for CI) and ``long`` (``THOTD_FAULTS=long``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corekit import REPO, add_sample, derived_assets, make_gs, oracle, user_files, wait_for
from daemonkit import Daemon, RpcFailure, make_daemon, proc_memory, rpc, tagged_processes

from .report import PROFILE, REPORT, Report, Row, pick

__all__ = [
    "PROFILE", "REPO", "REPORT", "Daemon", "Prober", "Report", "Row", "RpcFailure", "add_sample",
    "db_check", "derived_assets", "make_daemon", "make_gs", "oracle", "pick", "proc_memory",
    "rpc", "tagged_processes", "user_files", "wait_for",
]


# ---------------------------------------------------------------------------- the prober


class Prober:
    """Times a raw ``status`` call every ``interval`` seconds in a thread.

    ``worst_ms`` is the slowest answer; a call that fails while the daemon is supposed to
    be up counts in ``failures`` (with ``allow_down`` the refused connections of a killed
    daemon are expected and only counted in ``down``). ``check`` sees every status result
    (e.g. to assert the pool limit) and its exceptions are kept in ``problems``.
    """

    def __init__(self, sock: str | os.PathLike[str], *, interval: float = 0.1,
                 timeout: float = 10.0, allow_down: bool = False,
                 check: Callable[[dict[str, Any]], None] | None = None,
                 pid: int | None = None) -> None:
        self.sock = os.fspath(sock)
        self.pid = pid  # also sample this process's resident memory (VmRSS) each time
        self.rss_max_kib = 0
        self.interval = interval
        self.timeout = timeout
        self.allow_down = allow_down
        self.check = check
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.problems: list[str] = []
        self.down = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="status-prober", daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.timeout + 5)

    def probe(self) -> dict[str, Any] | None:
        if self.pid is not None:
            with contextlib.suppress(OSError, ValueError):
                self.rss_max_kib = max(self.rss_max_kib, proc_memory(self.pid).get("VmRSS", 0))
        t0 = time.perf_counter()
        try:
            result = rpc(self.sock, "status", timeout=self.timeout)
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            if self.allow_down:
                self.down += 1
            else:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            return None
        except (OSError, ValueError, RpcFailure) as exc:
            # A daemon killed on purpose may take a request down with it (no reply).
            if self.allow_down and isinstance(exc, ConnectionError):
                self.down += 1
                return None
            self.failures.append(f"{type(exc).__name__}: {exc}")
            self.latencies.append(time.perf_counter() - t0)
            return None
        self.latencies.append(time.perf_counter() - t0)
        if self.check is not None:
            try:
                self.check(result)
            except AssertionError as exc:
                self.problems.append(str(exc))
        return result

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.probe()
            self._stop.wait(self.interval)

    @property
    def worst_ms(self) -> float:
        return max(self.latencies, default=0.0) * 1000

    @property
    def count(self) -> int:
        return len(self.latencies)


# ---------------------------------------------------------------------------- the state db


def db_check(path: Path, copy: bool = False) -> dict[str, Any]:
    """Open the state database the way a restarting daemon would and check it fully.

    With ``copy``, a copy of the files as the crash left them (database and WAL) is checked,
    so that the daemon itself still finds and recovers the originals."""
    if copy:
        scratch = Path(tempfile.mkdtemp(prefix="thf-db-"))
        for suffix in ("", "-wal"):
            src = Path(str(path) + suffix)
            if src.exists():
                shutil.copy2(src, scratch / (path.name + suffix))
        try:
            return db_check(scratch / path.name)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    db = sqlite3.connect(path, timeout=30)
    try:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        running = db.execute(
            "SELECT container, script FROM runs WHERE status = 'running'").fetchall()
        history = db.execute("SELECT COALESCE(MAX(id), 0) FROM history").fetchone()[0]
    finally:
        db.close()
    return {"integrity": integrity, "version": version, "running": running, "history": history}
