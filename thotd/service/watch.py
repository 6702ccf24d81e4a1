"""Filesystem watching for thotd: raw watchdog events in, settled batches out.

Pipeline::

    kernel ─▶ watchdog observer thread ─▶ inbox (deque) ─call_soon_threadsafe─▶ loop thread
             settle per project ─▶ size/mtime stability looks ─▶ on_batch(root, Batch)

Three modules beside this one hold the parts: :mod:`~thotd.service.watch_observers` (the
watchdog side: observers, event filter, overflow hook), :mod:`~thotd.service.watch_limits`
(network filesystems and inotify limits: when to poll, and the fix to show) and
:mod:`~thotd.service.settle` (the settle state machine, pure logic). This module wires them
to the event loop. Design decisions, and why:

* **One observer for all projects.** inotify watches are a per-user budget
  (``fs.inotify.max_user_watches``); one observer means one inotify instance, one
  reader thread and one dispatch thread however many projects are registered. A
  second, :class:`~watchdog.observers.polling.PollingObserver`, is created only
  when some project cannot use inotify (network filesystem, watch limit).
* **Hand-off without locks.** The watchdog handler runs on the observer thread. It
  turns the event into a small tuple, appends it to a :class:`collections.deque`
  (atomic append) and wakes the loop with ``call_soon_threadsafe`` — coalesced, so a
  copy producing 10 000 events costs a handful of wake-ups, not 10 000 self-pipe
  writes. Every piece of watcher state is touched only on the loop thread.
* **No filtering of names.** Editors save atomically (write ``.x.tmp``, rename onto
  ``x``); rsync renames a temp file into place. Every path is delivered, including
  both ends of a move; the consumer ignores what it does not care about.
* **Lost events and new folders** go into ``rescan``: after a queue overflow the project
  root, and every new folder (a folder filled before its watch existed reports nothing
  for that content).
* **Limits and network filesystems**: a project that hits the watch limit, or lives on a
  filesystem whose remote changes make no events, is polled every ``poll_fallback_s`` and
  shown as ``degraded`` or ``polling`` with the reason and the fix.

``quiet()`` covers events still in the inbox and in watchdog's dispatch queue, not
events still inside the kernel or inside watchdog's 0.5 s move-pairing delay; a
caller that has just written files should wait for ``quiet()`` to hold over about
one settle period.

All public methods must be called on the loop thread (``add`` and ``remove`` may
block it briefly while watchdog walks the tree to install watches).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

from thotd.fingerprint import FOLDER, Key, look
from thotd.service import watch_limits as limits
from thotd.service.settle import Batch, Settle, Tuning
from thotd.service.watch_observers import (
    EVENT_FILTER,
    NATIVE_MODE,
    EventHandler,
    Item,
    native_observer,
)

__all__ = ["Batch", "Watcher"]

log = structlog.get_logger("thotd.service.watch")

_DRAIN_CHUNK = 5000  # events handled per loop callback, so a huge burst cannot starve the loop


def _signature(path: str) -> Key | None:
    """What the settle machine looks at: the file's fingerprint key (:func:`thotd.fingerprint.look`);
    None if it is gone or unreadable, or a folder (nothing there to prove stable: a rescan
    covers it)."""
    key = look(path)
    return None if key is FOLDER or key == FOLDER else key


@dataclass(eq=False)
class _Project:
    root: str
    settle: Settle = field(default_factory=lambda: Settle(_signature))
    mode: str = NATIVE_MODE
    reason: str | None = None
    fix: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    observer: BaseObserver | None = None
    watch: ObservedWatch | None = None
    timer: asyncio.TimerHandle | None = None


# ------------------------------------------------------------------------- Watcher


class Watcher:
    """Watches project roots and calls ``on_batch(root, batch)`` on the loop thread.

    ``settle_s``: quiet period that closes a batch, and the spacing of stability looks.
    ``stable_checks``: identical (size, mtime, inode) looks a file needs before delivery.
    ``poll_fallback_s``: polling interval for roots that cannot use inotify.
    ``max_batch_delay_s``: bound on how long a constant trickle of events in a project
    can postpone the delivery of paths that are themselves quiet and stable.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_batch: Callable[[str, Batch], None],
        settle_s: float = 0.1,
        stable_checks: int = 2,
        poll_fallback_s: float = 5.0,
        *,
        max_batch_delay_s: float = 2.0,
    ) -> None:
        self._loop = loop
        self._on_batch = on_batch
        self._tuning = Tuning.of(settle_s, stable_checks, max_batch_delay_s)
        self._poll_s = max(0.01, float(poll_fallback_s))
        self._projects: dict[str, _Project] = {}
        self._inbox: collections.deque[Item] = collections.deque()
        self._wakeup_scheduled = False
        self._closed = False
        self._polling: BaseObserver | None = None
        self._native_error: OSError | None = None
        self._native: BaseObserver | None = None
        try:
            self._native = native_observer(self._on_overflow_threadsafe)
            self._native.start()
        except OSError as exc:  # EMFILE: no inotify instance left for this user
            self._native = None
            self._native_error = exc
            log.warning(
                "cannot create an inotify instance; every project will be polled",
                error=str(exc),
                fix=limits.instance_limit_fix(limits.read_int(limits.MAX_USER_INSTANCES_FILE)),
            )

    # -- public API -----------------------------------------------------------------

    def add(self, root: str) -> None:
        """Start watching ``root`` (absolute path); a no-op if it is already watched.

        Raises FileNotFoundError (NotADirectoryError for a file) with the path in
        the message, so the daemon can show the user which entry is wrong.
        """
        if self._closed:
            raise RuntimeError("Watcher is closed")
        root = os.path.abspath(root)
        if not os.path.isdir(root):
            if os.path.exists(root):
                raise NotADirectoryError(
                    errno.ENOTDIR, f"project root is not a folder: {root}", root
                )
            raise FileNotFoundError(
                errno.ENOENT,
                f"project folder does not exist: {root} (create it, or fix or remove "
                "the project's registration)",
                root,
            )
        if root in self._projects:
            return
        project = _Project(root)
        self._projects[root] = project
        try:
            self._start_watch(project)
        except BaseException:
            self._projects.pop(root, None)
            raise
        log.info("watching project", root=root, mode=project.mode, reason=project.reason)

    async def add_off_loop(self, root: str) -> None:
        """:meth:`add`, with the recursive watch set up in a worker thread: watchdog adds
        one inotify watch per folder, ~3 s at 20,000 folders, which the loop must not wait
        for. The project is registered on the loop first, so events that arrive while the
        watches go up are delivered as usual."""
        if self._closed:
            raise RuntimeError("Watcher is closed")
        root = os.path.abspath(root)
        if root in self._projects or not os.path.isdir(root):
            self.add(root)  # a no-op, or the error that names the path
            return
        project = _Project(root)
        self._projects[root] = project
        try:
            await asyncio.to_thread(self._start_watch, project)
        except BaseException:
            if self._projects.get(root) is project:
                del self._projects[root]
            raise
        if self._projects.get(root) is not project:  # removed meanwhile
            self._unschedule(project)
            return
        log.info("watching project", root=root, mode=project.mode, reason=project.reason)

    def remove(self, root: str) -> None:
        """Stop watching ``root``; pending, undelivered changes are dropped."""
        project = self._projects.pop(os.path.abspath(root), None)
        if project is None:
            return
        if project.timer is not None:
            project.timer.cancel()
            project.timer = None
        self._unschedule(project)
        log.info("stopped watching project", root=project.root)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per root: how it is watched, why not normally, how to fix it, what is pending."""
        out: dict[str, dict[str, Any]] = {}
        for root, p in self._projects.items():
            entry: dict[str, Any] = {
                "mode": p.mode,
                "reason": p.reason,
                "fix": p.fix,
                "pending": len(p.settle.pending),
                "settling": p.settle.settling,
            }
            entry.update(p.extra)
            out[root] = entry
        return out

    @property
    def settle_s(self) -> float:
        return self._tuning.settle_s

    def retune(self, settle_s: float, stable_checks: int) -> None:
        """A new settle period and number of stability looks (a configuration reload).
        Batches already timing finish on their old timer; every later look uses the new
        values."""
        self._tuning = Tuning.of(settle_s, stable_checks, self._tuning.max_delay_s)

    def quiet(self) -> bool:
        """True when no event is waiting to be handed over, settled, or delivered.

        Polled roots (network filesystems, degraded) only see a change at their next
        poll, so ``quiet()`` can be True before such a change is even noticed.
        """
        if self._inbox:
            return False
        for observer in (self._native, self._polling):
            if observer is not None and observer.event_queue.unfinished_tasks:
                return False
        return not any(p.settle.settling for p in self._projects.values())

    def healthy(self) -> bool:
        """Observer threads that were started are still alive.

        A degraded root is not "unhealthy": it is polled and shown in status; only a
        dead thread (nothing reports events any more) should trip the systemd watchdog.
        """
        if self._closed:
            return False
        reader = getattr(self._native, "_inotify_fd", None)  # the thread reading inotify
        if reader is not None and not reader.is_alive():
            return False
        return all(o.is_alive() for o in (self._native, self._polling) if o is not None)

    def close(self) -> None:
        """Stop all watches and observer threads; no batch is delivered afterwards."""
        if self._closed:
            return
        self._closed = True
        for root in list(self._projects):
            self.remove(root)
        self._inbox.clear()
        for observer in (self._native, self._polling):
            if observer is None:
                continue
            with contextlib.suppress(Exception):
                observer.stop()
            with contextlib.suppress(RuntimeError):
                observer.join(timeout=5)

    # -- watch set-up ---------------------------------------------------------------

    def _start_watch(self, project: _Project) -> None:
        fstype = limits.filesystem_type(project.root)
        if limits.is_network_fs(fstype):
            project.mode = "polling"
            project.reason = (
                f"{fstype} filesystem: changes made from other machines produce no "
                f"events; polling every {self._poll_s:g} s"
            )
            project.extra["fstype"] = fstype
            self._schedule_polling(project)
            return
        if self._native is None:
            err = self._native_error
            self._degrade(
                project,
                f"no inotify instance available ({err}); polling every {self._poll_s:g} s",
                limits.instance_limit_fix(limits.read_int(limits.MAX_USER_INSTANCES_FILE)),
                max_user_instances=limits.read_int(limits.MAX_USER_INSTANCES_FILE),
            )
            return
        cap = limits.watch_cap()
        if cap is not None:
            folders = limits.count_folders(project.root)
            if folders > cap:
                self._degrade(
                    project,
                    f"watch cap {limits.CAP_VAR}={cap} is below this project's {folders} "
                    f"folders; polling every {self._poll_s:g} s instead",
                    f"unset {limits.CAP_VAR} (or raise it) and restart thotd",
                    watch_cap=cap, folders=folders,
                )
                return
        handler = EventHandler(self._post, project)
        try:
            watch = self._native.schedule(
                handler, project.root, recursive=True, event_filter=EVENT_FILTER
            )
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                self._degrade_watch_limit(project, "inotify watch limit reached")
                return
            if exc.errno == errno.EMFILE:
                self._degrade(
                    project,
                    f"inotify instance or open-file limit reached ({exc}); "
                    f"polling every {self._poll_s:g} s",
                    limits.instance_limit_fix(limits.read_int(limits.MAX_USER_INSTANCES_FILE)),
                    max_user_instances=limits.read_int(limits.MAX_USER_INSTANCES_FILE),
                )
                return
            raise
        project.observer, project.watch = self._native, watch
        project.mode = NATIVE_MODE
        if NATIVE_MODE == "inotify" and limits.watch_limit_reached(project.root):
            # watchdog skipped the sub-folders it could not watch without a word, and
            # the next new folder could not be watched either: poll this project.
            self._unschedule(project)
            self._degrade_watch_limit(
                project, "inotify watch limit reached while watching this project"
            )

    def _degrade_watch_limit(self, project: _Project, what: str) -> None:
        limit = limits.read_int(limits.MAX_USER_WATCHES_FILE)
        folders = limits.count_folders(project.root)
        self._degrade(
            project,
            f"{what} (fs.inotify.max_user_watches={limit}, {limits.limit_scope()}; this "
            f"project has {folders} folders); polling every {self._poll_s:g} s instead",
            limits.watch_limit_fix(limit, folders),
            max_user_watches=limit,
            folders=folders,
        )

    def _degrade(self, project: _Project, reason: str, fix: str, **extra: Any) -> None:
        project.mode = "degraded"
        project.reason = reason
        project.fix = fix
        project.extra.update(extra)
        log.warning("project watch degraded", root=project.root, reason=reason, fix=fix)
        try:
            self._schedule_polling(project)
        except OSError as exc:
            project.reason = f"{reason}; polling failed too ({exc}): reconcile scans only"
            log.warning("cannot poll project", root=project.root, error=str(exc))

    def _schedule_polling(self, project: _Project) -> None:
        if self._polling is None:
            self._polling = PollingObserver(timeout=self._poll_s)
            self._polling.start()
        handler = EventHandler(self._post, project)
        project.watch = self._polling.schedule(
            handler, project.root, recursive=True, event_filter=EVENT_FILTER
        )
        project.observer = self._polling

    def _unschedule(self, project: _Project) -> None:
        observer, watch = project.observer, project.watch
        project.observer = project.watch = None
        if observer is not None and watch is not None:
            with contextlib.suppress(KeyError, OSError):
                observer.unschedule(watch)

    # -- hand-off from watchdog threads ---------------------------------------------

    def _post(self, item: Item) -> None:
        """Called on watchdog threads. deque.append is atomic; the wake-up is coalesced.

        Lost wake-ups are impossible: the loop clears the flag *before* draining, so
        an item appended after the drain started sees the cleared flag and schedules
        another drain. A duplicate drain is harmless.
        """
        self._inbox.append(item)
        if not self._wakeup_scheduled:
            self._wakeup_scheduled = True
            # RuntimeError: the loop is closed, the daemon is shutting down.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._drain)

    def _on_overflow_threadsafe(self, watch_path: str) -> None:
        """Called on the inotify thread after watchdog rebuilt the watches."""
        self._post((None, "overflow", watch_path, "", True))

    # -- loop thread ----------------------------------------------------------------

    def _drain(self) -> None:
        self._wakeup_scheduled = False
        if self._closed:
            self._inbox.clear()
            return
        now = self._loop.time()
        for _ in range(_DRAIN_CHUNK):
            try:
                item = self._inbox.popleft()
            except IndexError:
                return
            self._apply(item, now)
        # More left: yield to other loop work, continue right after.
        if self._inbox and not self._wakeup_scheduled:
            self._wakeup_scheduled = True
            self._loop.call_soon(self._drain)

    def _apply(self, item: Item, now: float) -> None:
        posted_for, kind, src, dest, is_dir = item
        if kind == "overflow":
            for p in self._projects.values():
                if p.mode == NATIVE_MODE and p.observer is self._native and p.root == src:
                    log.warning(
                        "inotify queue overflowed: events were lost, rescanning project",
                        root=p.root,
                    )
                    p.settle.lost_events(p.root, now, self._tuning)
                    self._arm(p)
            return
        project = self._projects.get(posted_for.root)
        if project is None or project is not posted_for:
            return  # removed (or removed and re-added) since the event was queued
        project.settle.event(kind, src, dest, is_dir, now, self._tuning)
        if kind == "deleted" and src == project.root:
            self._unschedule(project)
            project.mode = "degraded"
            project.reason = "project folder was deleted or moved away; not watched"
            project.fix = "restore the folder, or update the project's registration"
            log.warning("project folder vanished", root=project.root)
        self._arm(project)

    def _arm(self, project: _Project) -> None:
        """A timer for the project's settle machine when it wants one and has none."""
        due = project.settle.due
        if project.timer is None and due is not None:
            delay = max(due - self._loop.time(), 0.0)
            project.timer = self._loop.call_later(delay, self._tick, project)

    def _tick(self, project: _Project) -> None:
        """Settle timer: let the settle machine look, deliver what it says is ready."""
        project.timer = None
        if self._closed or self._projects.get(project.root) is not project:
            return
        batch = project.settle.tick(self._loop.time(), self._tuning)
        self._arm(project)
        if batch is None:
            return
        log.debug("batch", root=project.root, paths=len(batch.paths), rescan=len(batch.rescan),
                  still_pending=len(project.settle.pending))
        try:
            self._on_batch(project.root, batch)
        except Exception:
            log.exception("on_batch failed", root=project.root)
