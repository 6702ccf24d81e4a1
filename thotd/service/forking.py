"""The daemon's fork server: started at start-up, replaced when it dies, closed at the end.

Runs are forked from a preloaded interpreter (a few ms instead of ~50, see
:mod:`thotd.executor.forkserver`). The server is a separate process that can die or be
turned off by a reload (``[pool] fork = false``); this keeper decides when to replace it,
when to retire it, and keeps the counts ``thotctl status`` shows across replacements.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from thotd.executor.process import start_forkserver

if TYPE_CHECKING:
    from thotd.executor.forkserver.client import ForkServer

log = structlog.get_logger("thotd")

#: A fork server that died is replaced at the next run; one that died without ever getting
#: ready is replaced at most this often (one that cannot start would cost an interpreter per run).
FORKSERVER_RESTART_S = 10.0


class ForkServerKeeper:
    """Holds the current fork server. ``enabled`` and ``in_flight`` are read at each call:
    the configuration can change by a reload, and runs come and go."""

    def __init__(self, enabled: Callable[[], bool], in_flight: Callable[[], int],
                 env: Mapping[str, str] | None = None) -> None:
        self._enabled = enabled
        self._in_flight = in_flight
        #: Start environment the server adds to the runs' base, the same for all its runs.
        #: The daemon's socket: a forked script's /proc environ is the server's, and the
        #: control socket knows its own scripts by it (they keep idle connections).
        self._env = dict(env or {})
        self.server: ForkServer | None = None
        self._started = 0.0  # monotonic
        self._worked = False  # the current server has been seen ready
        self._counts = [0, 0]  # forked, refused: by servers replaced so far

    def for_run(self) -> ForkServer | None:
        """The fork server runs should use, (re)started as needed; None when forking is off.

        Started by :func:`thotd.executor.process.start_forkserver`, whose environment every
        run's is built on, so the server refuses no ordinary run. A server still starting is
        left to start (runs are exec'd meanwhile); one that died is replaced (at most every
        :data:`FORKSERVER_RESTART_S` if it never got ready).
        """
        fs = self.server
        if not self._enabled():
            self.retire_if_disabled()
            return None
        if fs is not None:
            if fs.ready():
                self._worked = True
                return fs
            if not fs.gone():
                return fs  # still starting
            if not self._worked and time.monotonic() - self._started < FORKSERVER_RESTART_S:
                return None
            log.warning("fork server died; starting a new one", pid=fs.server_pid)
            self._retire()
        self.server = start_forkserver(self._env)
        self._started = time.monotonic()
        self._worked = False
        return self.server

    def retire_if_disabled(self) -> None:
        """``fork = false`` since a reload: close the server once no run is in flight.

        Not before: a run it forked would lose its exit status with it (the server is
        the run's parent).
        """
        if self.server is not None and not self._enabled() and not self._in_flight():
            self._retire()

    def _take(self) -> ForkServer | None:
        fs, self.server = self.server, None
        if fs is not None:
            self._counts[0] += fs.forked
            self._counts[1] += fs.refused
        return fs

    def _retire(self) -> None:
        """Close the current server in a worker thread (its runs, if any, go on)."""
        fs = self._take()
        if fs is not None:
            asyncio.get_running_loop().run_in_executor(None, fs.close)

    async def close(self) -> None:
        fs = self._take()
        if fs is not None:
            await asyncio.to_thread(fs.close)

    def status(self) -> dict[str, Any]:
        """For ``thotctl status``: is forking on, and how often it was used."""
        fs = self.server
        return {
            "enabled": self._enabled(),
            "ready": bool(fs is not None and fs.ready()),
            "server_pid": fs.server_pid if fs is not None else None,
            "forked": self._counts[0] + (fs.forked if fs is not None else 0),
            "refused": self._counts[1] + (fs.refused if fs is not None else 0),
            "last_refusal": fs.last_refusal if fs is not None else None,
        }
