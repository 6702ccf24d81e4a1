"""The watchdog side of watching: which observer, which events, and one hook into watchdog.

Everything here runs on watchdog's threads or builds what does; nothing touches the
event loop's state. :class:`EventHandler` turns each event into a small tuple and hands it
to a ``post`` callable (the watcher's thread-safe inbox).

* **Only change events are subscribed** (created, deleted, modified, attrib, moved,
  close-write). Open / close-no-write events are *not*: the daemon and the scripts read
  the project's files constantly, and subscribing to reads would both flood the kernel
  queue (overflow) and turn every read into a "change".
* **Lost events.** watchdog 7.1 rebuilds its recursive watches after an inotify queue
  overflow (``IN_Q_OVERFLOW``) but does not tell event handlers. The inotify emitter is
  subclassed to hook that rebuild (:class:`_OverflowAwareEmitter`), so the watcher can
  rescan the project.
* **Deep trees before Python 3.12**: watchdog's module gets an ``os`` whose ``walk`` is
  iterative (see the comment at the patch).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import structlog
from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, ObservedWatch

__all__ = ["EVENT_FILTER", "NATIVE_MODE", "EventHandler", "Item", "native_observer"]

log = structlog.get_logger("thotd.service.watch")

# Only events that mean "something changed". DirModifiedEvent is left out on purpose:
# it repeats, for the parent folder, every create/delete/move already reported.
EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    DirAttribEvent,  # a folder made unreadable (chmod 000), or readable again
    FileMovedEvent,
    DirMovedEvent,
    FileClosedEvent,
]


native_observer: Callable[[Callable[[str], None]], BaseObserver]
NATIVE_MODE: str

try:  # Linux: hook watchdog's overflow recovery so that we learn about lost events.
    from watchdog.observers.inotify import InotifyEmitter
    from watchdog.observers.inotify_c import InotifyFD

    class _OverflowAwareEmitter(InotifyEmitter):
        """InotifyEmitter that also reports kernel queue overflows.

        watchdog 7.1 reacts to ``IN_Q_OVERFLOW`` by rebuilding the recursive watches
        (``InotifyWatchGroup.on_queue_overflow``) but emits nothing; we wrap that
        method so the rebuild happens first and the project is then rescanned.
        """

        def __init__(
            self,
            event_queue: Any,
            watch: ObservedWatch,
            *,
            on_overflow: Callable[[str], None] | None = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(event_queue, watch, **kwargs)
            self._thotd_on_overflow = on_overflow

        def on_thread_start(self) -> None:
            super().on_thread_start()
            group = getattr(self, "_inotify", None)
            original = getattr(group, "on_queue_overflow", None)
            notify = self._thotd_on_overflow
            if group is None or original is None or notify is None:
                log.warning(
                    "queue overflow detection unavailable with this watchdog version; "
                    "relying on periodic reconcile scans"
                )
                return
            path = os.fsdecode(self.watch.path)

            def on_queue_overflow() -> None:
                original()  # watchdog first re-adds the watches it may have lost
                notify(path)

            group.on_queue_overflow = on_queue_overflow

    class _InotifyObserver(BaseObserver):
        """Same wiring as watchdog's InotifyObserver, with the overflow-aware emitter."""

        def __init__(self, on_overflow: Callable[[str], None]) -> None:
            self._inotify_fd = InotifyFD()  # may raise OSError(EMFILE)
            self._inotify_fd.start()
            super().__init__(
                _OverflowAwareEmitter,
                timeout=1.0,
                inotify_fd=self._inotify_fd,
                on_overflow=on_overflow,
            )

        def on_thread_stop(self) -> None:
            super().on_thread_stop()
            self._inotify_fd.stop()
            self._inotify_fd.join()

    def _make_inotify_observer(on_overflow: Callable[[str], None]) -> BaseObserver:
        return _InotifyObserver(on_overflow)

    if sys.version_info < (3, 12):
        # watchdog walks new folders with os.walk on its inotify reader thread, and before
        # 3.12 os.walk recurses once per level: a tree ~1000 levels deep raised
        # RecursionError there and killed the one thread reading events for every project.
        # Its module gets an os whose walk is iterative (the same walk 3.12 has).
        import types

        import watchdog.observers.inotify as _wd_inotify

        def _iterative_walk(top: Any, topdown: bool = True, onerror: Any = None,
                            followlinks: bool = False) -> Any:
            stack = [top]
            while stack:
                path = stack.pop()
                try:
                    with os.scandir(path) as it:
                        entries = list(it)
                except OSError as exc:
                    if onerror is not None:
                        onerror(exc)
                    continue
                dirs: list[str] = []
                files: list[str] = []
                for entry in entries:
                    try:
                        is_dir = entry.is_dir()
                    except OSError:
                        is_dir = False
                    (dirs if is_dir else files).append(entry.name)
                yield path, dirs, files  # the caller may prune dirs, as with os.walk
                for name in reversed(dirs):
                    sub = os.path.join(path, name)
                    if followlinks or not os.path.islink(sub):
                        stack.append(sub)

        _os_for_watchdog = types.ModuleType("os")
        _os_for_watchdog.__dict__.update(os.__dict__)
        _os_for_watchdog.__dict__["walk"] = _iterative_walk
        vars(_wd_inotify)["os"] = _os_for_watchdog

    native_observer = _make_inotify_observer
    NATIVE_MODE = "inotify"
except Exception:  # not Linux, or a libc without inotify
    from watchdog.observers import Observer as _PlatformObserver

    def _make_platform_observer(on_overflow: Callable[[str], None]) -> BaseObserver:
        return _PlatformObserver()

    native_observer = _make_platform_observer
    NATIVE_MODE = "native"


#: What a handler posts: (project, kind, src, dest, is_directory).
Item = tuple[Any, str, str, str, bool]


class EventHandler(FileSystemEventHandler):
    """Runs on a watchdog thread: convert, hand over, never touch loop state."""

    def __init__(self, post: Callable[[Item], None], project: Any) -> None:
        super().__init__()
        self._post = post
        self._project = project

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._post(
                (
                    self._project,
                    event.event_type,
                    os.fsdecode(event.src_path),
                    os.fsdecode(event.dest_path),
                    event.is_directory,
                )
            )
        except Exception:  # an exception here would kill the shared observer thread
            log.exception("watch handler failed", root=self._project.root)
