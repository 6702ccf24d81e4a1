"""Content hashes for the daemon, computed in worker threads and taken in on the loop.

The engine's staleness check wants a content hash whenever a file's stat moved since its
record (:mod:`thotd.fingerprint`). Reading a file on the event loop would let one slow or
huge file (or a pipe) stop every answer the daemon gives, so the daemon's engines never
read (``hasher.read = False``): the check returns the hashes it is missing, this module
hashes them in a thread, hands the results to the engine on the loop (where its state
lives) and has the waiting runs checked again.

It keeps, per project, the files being hashed (asked for once, however many runs wait on
them) and the runs waiting, with the trigger each was checked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog

from thotd.fingerprint import HashKey, HashResults, hash_files, hash_paths

if TYPE_CHECKING:
    from thotd.engine.staleness import Planned, RunKey
    from thotd.service.registered import Project

log = structlog.get_logger("thotd")

Recheck = Callable[["Project", list["Planned"], str], None]
Emit = Callable[..., None]


class OffLoopHashes:
    """The daemon's hashing in flight: tasks, files being hashed, runs waiting for them."""

    def __init__(self, recheck: Recheck, emit: Emit,
                 current: Callable[[Project], bool],
                 idle: Callable[[Project], Awaitable[None]] | None = None) -> None:
        self._recheck = recheck  # Daemon.check_runs
        self._emit = emit
        self._current = current  # is this still a registered project (not removed)?
        self._idle = idle  # until no worker thread changes the project's index
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy: dict[str, set[HashKey]] = {}  # by project root
        self._waiting: dict[str, dict[RunKey, str]] = {}  # by project root: run -> trigger

    def busy(self) -> bool:
        """Hashes are being computed (the daemon is not quiet)."""
        return bool(self._tasks)

    def settled_reasons(self, proj: Project, p: Planned, trigger: str) -> list[str] | None:
        """The run's staleness reasons, or None when they wait for content hashes (a file
        whose stat moved since its record): those are computed in a worker thread, and the
        run is checked again, with ``trigger``, once they are in."""
        assert proj.engine is not None
        reasons = proj.engine.reasons(p.key)
        wanted = proj.engine.hasher.take_wanted()
        if not wanted:
            return reasons
        self._waiting.setdefault(proj.root, {})[p.key] = trigger
        self.start(proj, wanted)
        return None

    async def reasons_once_hashed(self, proj: Project, p: Planned, rounds: int = 3) -> list[str]:
        """The run's staleness reasons, waiting for the hashes they need (a few rounds, for
        files that keep moving; then a hash still missing counts as a change). Right after
        a run, where the rerun-once and cycle rules need the answer now."""
        assert proj.engine is not None
        engine = proj.engine
        for _ in range(rounds):
            reasons = engine.reasons(p.key)
            wanted = engine.hasher.take_wanted()
            if not wanted:
                return reasons
            task = self.start(proj, wanted)
            hashing = [task] if task is not None else list(self._tasks)
            if hashing:
                await asyncio.wait(hashing)  # never cancels them
            if self._idle is not None:
                await self._idle(proj)
        reasons = engine.reasons(p.key)
        engine.hasher.take_wanted()
        return reasons

    def start(self, proj: Project, keys: set[HashKey] | None = None,
              paths: set[str] | None = None) -> asyncio.Task[None] | None:
        """Hash ``keys`` (or the files at ``paths``) in a worker thread; the results are
        taken in on the loop. None when all of them are being hashed already: the task
        doing it checks the waiting runs again."""
        busy = self._busy.setdefault(proj.root, set())
        keys = (keys or set()) - busy
        if not keys and not paths:
            return None
        busy |= keys
        task = asyncio.create_task(self._hash_and_recheck(proj, keys, paths or set()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _hash_and_recheck(self, proj: Project, keys: set[HashKey], paths: set[str]) -> None:
        try:
            results = await asyncio.to_thread(hash_files, keys)
            if paths:
                results.update(await asyncio.to_thread(hash_paths, paths))
        finally:
            self._busy.get(proj.root, set()).difference_update(keys)
        if proj.engine is None or not self._current(proj):
            return
        self._learn(proj, results)
        waiting = self._waiting.pop(proj.root, {})
        for trigger in dict.fromkeys(waiting.values()):
            again = [proj.plan[k] for k, t in waiting.items() if t == trigger and k in proj.plan]
            self._recheck(proj, again, trigger)

    def _learn(self, proj: Project, results: HashResults) -> None:
        """Take hashes in; say once which files are never read (a pipe, a device)."""
        assert proj.engine is not None
        hasher = proj.engine.hasher
        before: dict[str, Any] = dict(hasher.refused)
        hasher.learn(results)
        for path, why in hasher.refused.items():
            if before.get(path) != why:
                log.warning("file not fingerprinted", project=proj.root, file=path, why=why)
                self._emit("unreadable", project=proj.root, file=path, why=why)
