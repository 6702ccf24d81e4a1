"""Filesystem watching for thotd: raw watchdog events in, settled batches out.

Pipeline (see docs/DESIGN "The daemon")::

    kernel ─▶ watchdog observer thread ─▶ inbox (deque) ─call_soon_threadsafe─▶ loop thread
             settle per project ─▶ size/mtime stability looks ─▶ on_batch(root, Batch)

Design decisions, and why:

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
* **Only change events are subscribed** (created, deleted, modified, attrib, moved,
  close-write). Open / close-no-write events are *not*: the daemon and the scripts
  read the project's files constantly, and subscribing to reads would both flood
  the kernel queue (overflow) and turn every read into a "change".
* **Settle, then prove stability.** A project's batch closes once no event came for
  ``settle_s``. Each file path in it is then ``stat``-ed; it is ready once size,
  mtime and inode held across ``stable_checks`` looks spaced ``settle_s`` apart.
  A path whose stat fails (deleted, moved away) or that is a directory is ready at
  once. The looks are direct ``stat`` calls re-armed on a timer, not events, so a
  file grown through mmap, on a polled root or over NFS is caught too.
* **Partial delivery, only when needed.** A batch is delivered whole once every path
  in it is stable. If some paths are *seen growing* between two looks (or the batch
  has waited ``max_batch_delay_s``), the stable ones are delivered and the growing
  ones stay pending, re-checked every ``settle_s``: a multi-hour acquisition writing
  into the project must not hold back an edited script next to it. Rescan directories are
  the exception: a rescan entry is held while any path below it is still pending,
  so a consumer walking a freshly copied folder never reads a half-copied file.
  (Such files are in the pending set because watchdog reports the content of a new
  folder once its watch is up, and the watch reports later writes.)
* **FileClosedEvent (IN_CLOSE_WRITE) is a change notice, not a completion proof.**
  A writer that appends in chunks and closes between them (loggers, ``open("ab")``
  per sample, ``rsync --inplace``) would otherwise be delivered half-written; the
  look rule alone decides.
* **Bounded latency under a constant trickle.** If events never stop for
  ``settle_s`` (something writes every 50 ms forever), the project would never
  settle; after ``max_batch_delay_s`` the paths that have themselves been quiet for
  ``settle_s`` are checked and delivered anyway.
* **Lost events.** watchdog 7.1 rebuilds its recursive watches after an inotify
  queue overflow (``IN_Q_OVERFLOW``) but does not tell event handlers. The inotify
  emitter is subclassed to hook that rebuild: the project root goes into
  ``rescan`` and a warning is logged. New directories go into ``rescan`` as well
  (a folder filled before its watch existed reports nothing for that content).
* **Watch limit (ENOSPC) and instance limit (EMFILE).** watchdog raises only when
  the *root* cannot be watched; a limit reached part-way down the tree is silently
  swallowed for sub-folders. So after scheduling, a throw-away inotify instance
  probes whether one more watch can still be added; if not, the project is moved to
  polling and shown as ``degraded`` with the limit, its folder count and the sysctl
  fix (a later folder could not be watched either).
* **Network filesystems** (NFS, SMB/CIFS, sshfs, 9p, …) do not report changes made
  by other machines: such roots are polled every ``poll_fallback_s`` and shown as
  ``polling`` with the reason.

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
import ctypes
import errno
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
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
from watchdog.observers.polling import PollingObserver

from thotd.fingerprint import FOLDER, Key, look

__all__ = ["Batch", "Watcher"]

log = structlog.get_logger("thotd.service.watch")

# Only events that mean "something changed". DirModifiedEvent is left out on purpose:
# it repeats, for the parent folder, every create/delete/move already reported.
_EVENT_FILTER: list[type[FileSystemEvent]] = [
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

# Filesystems whose changes made elsewhere (another host, the VM host, Windows) do
# not reach local inotify.
_NETWORK_FS_TYPES = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "coda", "9p",
        "ceph", "glusterfs", "lustre", "gpfs", "beegfs", "ocfs2", "gfs2",
        "davfs", "vboxsf", "vmhgfs", "prl_fs", "virtiofs", "drvfs",
        "fuse.sshfs", "fuse.rclone", "fuse.s3fs", "fuse.gcsfuse", "fuse.glusterfs",
        "fuse.cephfs", "fuse.davfs2", "fuse.smbnetfs", "fuse.curlftpfs",
        "fuse.vmhgfs-fuse", "fuse.grpcfuse", "fakeowner", "fuse.juicefs",
    }
)

MOUNTS_FILE = "/proc/self/mounts"
MAX_USER_WATCHES_FILE = "/proc/sys/fs/inotify/max_user_watches"
MAX_USER_INSTANCES_FILE = "/proc/sys/fs/inotify/max_user_instances"
SYSCTL_CONF = "/etc/sysctl.d/90-thotd-inotify.conf"

_DRAIN_CHUNK = 5000  # events handled per loop callback, so a huge burst cannot starve the loop

_IN_ATTRIB = 0x00000004
_IN_CLOEXEC = 0o2000000


@dataclass
class Batch:
    """One settled set of changes in one project.

    ``paths``: absolute paths that changed — created, modified, deleted, both ends of
    a move, and a moved-away or deleted directory's own path (no per-file events
    exist for its content: the consumer drops the whole subtree).

    ``rescan``: directories whose whole subtree must be rescanned — new or moved-in
    folders (content that arrived before the watch was installed is not reported)
    and the project root after lost events (queue overflow).
    """

    paths: set[str] = field(default_factory=set)
    rescan: set[str] = field(default_factory=set)


# ---------------------------------------------------------------------------- helpers


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _unescape_mount_field(text: str) -> str:
    """Undo the octal escapes of /proc/self/mounts (space is ``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _filesystem_type(path: str) -> str | None:
    """Filesystem type of the mount holding ``path`` (longest matching mount point)."""
    try:
        with open(MOUNTS_FILE, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount_point = _unescape_mount_field(parts[1])
        prefix = mount_point.rstrip("/") + "/"
        if (real == mount_point or real.startswith(prefix) or mount_point == "/") and (
            best is None or len(mount_point) >= best[0]
        ):
            best = (len(mount_point), parts[2])
    return best[1] if best else None


def _is_network_fs(fstype: str | None) -> bool:
    if not fstype:
        return False
    return fstype in _NETWORK_FS_TYPES or fstype.startswith("nfs") or fstype.startswith("fuse.sshfs")


def _count_folders(root: str) -> int:
    """Folders an inotify watch of ``root`` needs: the root plus every real sub-folder."""
    count = 0
    for dirpath, dirnames, _files in os.walk(root):
        count += 1
        # os.walk lists symlinked folders without descending; watchdog skips them too.
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    return count


def _outermost(dirs: set[str]) -> set[str]:
    """Drop folders below another folder of the set: rescanning the outer one covers them.

    A moved or copied tree reports every sub-folder; the consumer needs one walk.
    Sorting by path components puts each folder right before its descendants.
    """
    kept: list[str] = []
    for d in sorted(dirs, key=lambda p: p.split(os.sep)):
        if kept and (d == kept[-1] or d.startswith(kept[-1].rstrip(os.sep) + os.sep)):
            continue
        kept.append(d)
    return set(kept)


def _watch_limit_reached(path: str) -> bool:
    """True when this user cannot add one more inotify watch right now.

    watchdog 7.1 swallows ENOSPC for sub-folders, so after scheduling a project we
    probe with a throw-away inotify instance instead of trusting the silence.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        init1 = libc.inotify_init1
        add_watch = libc.inotify_add_watch
    except (OSError, AttributeError):
        return False
    init1.argtypes = [ctypes.c_int]
    add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    fd = init1(_IN_CLOEXEC)
    if fd < 0:
        return False  # instance limit: a different problem, reported where it bites
    try:
        wd = add_watch(fd, os.fsencode(path), _IN_ATTRIB)
        return wd < 0 and ctypes.get_errno() == errno.ENOSPC
    finally:
        os.close(fd)


def _suggest_limit(current: int | None, folders: int) -> int:
    need = (current or 8192) + 2 * folders
    n = 524288  # the value most distributions' docs and IDEs recommend
    while n < need:
        n *= 2
    return n


def _watch_limit_fix(current: int | None, folders: int) -> str:
    n = _suggest_limit(current, folders)
    return (
        f"sudo sysctl fs.inotify.max_user_watches={n}; to keep it after a reboot: "
        f"echo 'fs.inotify.max_user_watches={n}' | sudo tee {SYSCTL_CONF}; "
        "then restart thotd (systemctl --user restart thotd)"
    )


def _instance_limit_fix(current: int | None) -> str:
    n = max(1024, 2 * (current or 128))
    return (
        f"sudo sysctl fs.inotify.max_user_instances={n}; to keep it after a reboot: "
        f"echo 'fs.inotify.max_user_instances={n}' | sudo tee {SYSCTL_CONF}; "
        "if the open-files limit is the cause instead, raise LimitNOFILE= in the unit; "
        "then restart thotd (systemctl --user restart thotd)"
    )


# ----------------------------------------------------------------- watchdog plumbing

_native_observer_factory: Callable[[Callable[[str], None]], BaseObserver]
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
                dirs, files = [], []
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
        _os_for_watchdog.walk = _iterative_walk  # type: ignore[attr-defined]
        _wd_inotify.os = _os_for_watchdog  # type: ignore[attr-defined]

    _native_observer_factory = _make_inotify_observer
    NATIVE_MODE = "inotify"
except Exception:  # not Linux, or a libc without inotify
    from watchdog.observers import Observer as _PlatformObserver

    def _make_platform_observer(on_overflow: Callable[[str], None]) -> BaseObserver:
        return _PlatformObserver()

    _native_observer_factory = _make_platform_observer
    NATIVE_MODE = "native"


_Item = tuple[Any, str, str, str, bool]  # (project, kind, src, dest, is_directory)


class _Handler(FileSystemEventHandler):
    """Runs on a watchdog thread: convert, hand over, never touch loop state."""

    def __init__(self, post: Callable[[_Item], None], project: _Project) -> None:
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


@dataclass
class _PathState:
    last_event: float
    sig: Key | None = None
    looks: int = 0


@dataclass(eq=False)
class _Project:
    root: str
    mode: str = NATIVE_MODE
    reason: str | None = None
    fix: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    observer: BaseObserver | None = None
    watch: ObservedWatch | None = None
    pending: dict[str, _PathState] = field(default_factory=dict)
    rescan: set[str] = field(default_factory=set)
    last_event: float = 0.0
    batch_started: float = 0.0
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
        self._settle_s = max(0.001, float(settle_s))
        self._stable_checks = max(1, int(stable_checks))
        self._poll_s = max(0.01, float(poll_fallback_s))
        self._max_delay_s = max(self._settle_s, float(max_batch_delay_s))
        self._projects: dict[str, _Project] = {}
        self._inbox: collections.deque[_Item] = collections.deque()
        self._wakeup_scheduled = False
        self._closed = False
        self._polling: BaseObserver | None = None
        self._native_error: OSError | None = None
        self._native: BaseObserver | None = None
        try:
            self._native = _native_observer_factory(self._on_overflow_threadsafe)
            self._native.start()
        except OSError as exc:  # EMFILE: no inotify instance left for this user
            self._native = None
            self._native_error = exc
            log.warning(
                "cannot create an inotify instance; every project will be polled",
                error=str(exc),
                fix=_instance_limit_fix(_read_int(MAX_USER_INSTANCES_FILE)),
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

    def status(self) -> dict[str, dict]:
        """Per root: how it is watched, why not normally, how to fix it, what is pending."""
        out: dict[str, dict] = {}
        for root, p in self._projects.items():
            entry: dict[str, Any] = {
                "mode": p.mode,
                "reason": p.reason,
                "fix": p.fix,
                "pending": len(p.pending),
                "settling": bool(p.pending or p.rescan),
            }
            entry.update(p.extra)
            out[root] = entry
        return out

    @property
    def settle_s(self) -> float:
        return self._settle_s

    def retune(self, settle_s: float, stable_checks: int) -> None:
        """A new settle period and number of stability looks (a configuration reload).
        Batches already timing finish on their old timer; every later look uses the new
        values."""
        self._settle_s = max(0.001, float(settle_s))
        self._stable_checks = max(1, int(stable_checks))
        self._max_delay_s = max(self._settle_s, self._max_delay_s)

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
        return not any(p.pending or p.rescan for p in self._projects.values())

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
        fstype = _filesystem_type(project.root)
        if _is_network_fs(fstype):
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
                _instance_limit_fix(_read_int(MAX_USER_INSTANCES_FILE)),
                max_user_instances=_read_int(MAX_USER_INSTANCES_FILE),
            )
            return
        handler = _Handler(self._post, project)
        try:
            watch = self._native.schedule(
                handler, project.root, recursive=True, event_filter=_EVENT_FILTER
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
                    _instance_limit_fix(_read_int(MAX_USER_INSTANCES_FILE)),
                    max_user_instances=_read_int(MAX_USER_INSTANCES_FILE),
                )
                return
            raise
        project.observer, project.watch = self._native, watch
        project.mode = NATIVE_MODE
        if NATIVE_MODE == "inotify" and _watch_limit_reached(project.root):
            # watchdog skipped the sub-folders it could not watch without a word, and
            # the next new folder could not be watched either: poll this project.
            self._unschedule(project)
            self._degrade_watch_limit(
                project, "inotify watch limit reached while watching this project"
            )

    def _degrade_watch_limit(self, project: _Project, what: str) -> None:
        limit = _read_int(MAX_USER_WATCHES_FILE)
        folders = _count_folders(project.root)
        self._degrade(
            project,
            f"{what} (fs.inotify.max_user_watches={limit}, this project has {folders} "
            f"folders); polling every {self._poll_s:g} s instead",
            _watch_limit_fix(limit, folders),
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
        handler = _Handler(self._post, project)
        project.watch = self._polling.schedule(
            handler, project.root, recursive=True, event_filter=_EVENT_FILTER
        )
        project.observer = self._polling

    def _unschedule(self, project: _Project) -> None:
        observer, watch = project.observer, project.watch
        project.observer = project.watch = None
        if observer is not None and watch is not None:
            with contextlib.suppress(KeyError, OSError):
                observer.unschedule(watch)

    # -- hand-off from watchdog threads ---------------------------------------------

    def _post(self, item: _Item) -> None:
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

    def _apply(self, item: _Item, now: float) -> None:
        project, kind, src, dest, is_dir = item
        if kind == "overflow":
            for p in self._projects.values():
                if p.mode == NATIVE_MODE and p.observer is self._native and p.root == src:
                    log.warning(
                        "inotify queue overflowed: events were lost, rescanning project",
                        root=p.root,
                    )
                    p.rescan.add(p.root)
                    self._touch(p, now)
            return
        if self._projects.get(project.root) is not project:
            return  # removed (or removed and re-added) since the event was queued
        if kind == "moved":
            self._note(project, src, now)
            if dest:
                self._note(project, dest, now)
                if is_dir:
                    project.rescan.add(dest)
        elif kind == "created":
            self._note(project, src, now)
            if is_dir:
                project.rescan.add(src)
        elif kind == "deleted":
            self._note(project, src, now)
            if src == project.root:
                self._unschedule(project)
                project.mode = "degraded"
                project.reason = "project folder was deleted or moved away; not watched"
                project.fix = "restore the folder, or update the project's registration"
                log.warning("project folder vanished", root=project.root)
        else:  # modified, attrib, closed
            self._note(project, src, now)
        self._touch(project, now)

    def _note(self, project: _Project, path: str, now: float) -> None:
        """Record a change. The first stability look is taken now, as the event arrives:
        every write raises a new event (which takes a new look), so a file whose signature
        still matches one settle period after its last event held still across the two
        looks. That halves the delay before delivery compared with looking only then."""
        sig = look(path)
        first = sig if sig is not None and sig != FOLDER else None
        state = project.pending.get(path)
        if state is None:
            project.pending[path] = _PathState(now, first, 1 if first else 0)
        else:  # changed again: stability has to be proven from scratch
            state.last_event = now
            state.sig = first
            state.looks = 1 if first else 0

    def _touch(self, project: _Project, now: float) -> None:
        if project.timer is None:
            project.batch_started = now
            project.timer = self._loop.call_later(self._settle_s, self._tick, project)
        project.last_event = now

    def _tick(self, project: _Project) -> None:
        """Settle timer: wait for quiet, take a stability look, deliver what is ready."""
        project.timer = None
        if self._closed or self._projects.get(project.root) is not project:
            return
        now = self._loop.time()
        settle = self._settle_s
        quiet_for = now - project.last_event
        overdue = now - project.batch_started >= self._max_delay_s
        if quiet_for < settle and not overdue:
            delay = min(settle - quiet_for, project.batch_started + self._max_delay_s - now)
            project.timer = self._loop.call_later(max(delay, 0.001), self._tick, project)
            return

        ready: set[str] = set()
        undecided = False  # some path is mid-way through its looks and may yet be ready
        for path, state in project.pending.items():
            if now - state.last_event < settle:
                continue  # only possible when overdue: this path itself is still hot
            sig = look(path)
            if sig is None or sig == FOLDER:
                ready.add(path)  # gone (nothing to read) or a folder (covered by rescan)
                continue
            changed = False
            if sig == state.sig:
                state.looks += 1
            else:
                changed = state.sig is not None  # seen growing between two looks
                state.sig, state.looks = sig, 1
            if state.looks >= self._stable_checks:
                ready.add(path)
            elif not changed:
                undecided = True
        if undecided and not overdue:
            # Keep the batch whole: wait for the paths still being confirmed. Only
            # paths proven to be growing (or an overdue batch) split a delivery.
            project.timer = self._loop.call_later(settle, self._tick, project)
            return
        for path in ready:
            del project.pending[path]

        rescan_ready = {r for r in project.rescan if not self._has_pending_below(project, r)}
        project.rescan -= rescan_ready

        if project.pending or project.rescan:
            if ready or rescan_ready:
                project.batch_started = now
            project.timer = self._loop.call_later(settle, self._tick, project)
        if ready or rescan_ready:
            batch = Batch(paths=ready, rescan=_outermost(rescan_ready))
            log.debug(
                "batch",
                root=project.root,
                paths=len(batch.paths),
                rescan=len(batch.rescan),
                still_pending=len(project.pending),
            )
            try:
                self._on_batch(project.root, batch)
            except Exception:
                log.exception("on_batch failed", root=project.root)

    @staticmethod
    def _has_pending_below(project: _Project, directory: str) -> bool:
        if not project.pending:
            return False
        prefix = directory.rstrip(os.sep) + os.sep
        return any(p == directory or p.startswith(prefix) for p in project.pending)
