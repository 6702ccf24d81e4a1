"""The settle state machine of one watched folder: change events in, settled batches out.

Pure logic: no threads, no timers, no kernel. The caller feeds it events with the time
they arrived (:meth:`Settle.event`), and calls :meth:`Settle.tick` when :attr:`Settle.due`
has come; how a file looks right now (size, mtime, inode) is asked of an injected
function. So tests drive it with scripted events, a fake clock and scripted looks, and
:class:`~thotd.service.watch.Watcher` drives it with watchdog's events, the event loop's
clock and ``os.stat``.

The rules, and why:

* **Settle, then prove stability.** A batch closes once no event came for ``settle_s``.
  Each file path in it is then looked at; it is ready once its size, mtime and inode held
  across ``stable_checks`` looks spaced ``settle_s`` apart (the first look is taken when
  its event arrives). A path that is gone or a folder is ready at once. The looks are
  direct ``stat`` calls, not events, so a file grown through mmap, on a polled root or over
  NFS is caught too.
* **A close-write is a change notice, not a completion proof**: a writer that appends in
  chunks and closes between them would otherwise be delivered half-written.
* **Partial delivery, only when needed.** A batch is delivered whole once every path in it
  is stable. If some paths are *seen growing* between two looks (or the batch has waited
  ``max_delay_s``), the stable ones are delivered and the growing ones stay pending: a
  multi-hour acquisition must not hold back an edited script next to it. A rescan folder
  is held while any path below it is pending, so a consumer walking a freshly copied folder
  never reads a half-copied file.
* **Bounded latency under a constant trickle.** If events never stop for ``settle_s``, the
  paths that have themselves been quiet for ``settle_s`` are checked and delivered anyway
  after ``max_delay_s``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

__all__ = ["Batch", "Look", "Settle", "Tuning", "outermost"]

#: How a path looks now: any value that changes when the file does (the watcher uses size,
#: mtime and inode), or None when there is nothing to prove stable: the path is gone, or it
#: is a folder (covered by a rescan).
Look = Callable[[str], Hashable | None]


@dataclass
class Batch:
    """One settled set of changes in one watched folder.

    ``paths``: absolute paths that changed — created, modified, deleted, both ends of
    a move, and a moved-away or deleted directory's own path (no per-file events
    exist for its content: the consumer drops the whole subtree).

    ``rescan``: directories whose whole subtree must be rescanned — new or moved-in
    folders (content that arrived before the watch was installed is not reported)
    and the project root after lost events (queue overflow).
    """

    paths: set[str] = field(default_factory=set)
    rescan: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Tuning:
    """``settle_s``: the quiet period that closes a batch, and the spacing of looks.
    ``stable_checks``: identical looks a file needs. ``max_delay_s``: how long a constant
    trickle of events may postpone paths that are themselves quiet."""

    settle_s: float = 0.1
    stable_checks: int = 2
    max_delay_s: float = 2.0

    @classmethod
    def of(cls, settle_s: float, stable_checks: int, max_delay_s: float) -> Tuning:
        """Clamped to what the rules need: a positive period, at least one look."""
        settle = max(0.001, float(settle_s))
        return cls(settle, max(1, int(stable_checks)), max(settle, float(max_delay_s)))


@dataclass
class PathState:
    last_event: float
    sig: Hashable | None = None
    looks: int = 0


def outermost(dirs: set[str]) -> set[str]:
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


class Settle:
    """The pending changes of one folder and when to look at them next.

    ``look(path)`` is how the path looks now (see :data:`Look`). ``due`` is when :meth:`tick` wants to run (None: nothing is
    pending, no timer is needed).
    """

    def __init__(self, look: Look) -> None:
        self._look = look
        self.pending: dict[str, PathState] = {}
        self.rescan: set[str] = set()
        self.last_event = 0.0
        self.batch_started = 0.0
        self.due: float | None = None

    @property
    def settling(self) -> bool:
        return bool(self.pending or self.rescan)

    # -- events ------------------------------------------------------------------------

    def event(self, kind: str, src: str, dest: str, is_dir: bool, now: float,
              tuning: Tuning) -> None:
        """One watchdog event (``created``, ``deleted``, ``moved``, ``modified``, ...)."""
        self.note(src, now)
        if kind == "moved" and dest:
            self.note(dest, now)
            if is_dir:
                self.rescan.add(dest)
        elif kind == "created" and is_dir:
            self.rescan.add(src)
        self.touch(now, tuning)

    def lost_events(self, root: str, now: float, tuning: Tuning) -> None:
        """The kernel dropped events (queue overflow): the whole folder is rescanned."""
        self.rescan.add(root)
        self.touch(now, tuning)

    def note(self, path: str, now: float) -> None:
        """Record a change. The first stability look is taken now, as the event arrives:
        every write raises a new event (which takes a new look), so a file whose signature
        still matches one settle period after its last event held still across the two
        looks. That halves the delay before delivery compared with looking only then."""
        first = self._look(path)
        state = self.pending.get(path)
        if state is None:
            self.pending[path] = PathState(now, first, 1 if first else 0)
        else:  # changed again: stability has to be proven from scratch
            state.last_event = now
            state.sig = first
            state.looks = 1 if first else 0

    def touch(self, now: float, tuning: Tuning) -> None:
        """Activity at ``now``: opens a batch (and arms :attr:`due`) if none is open."""
        if self.due is None:
            self.batch_started = now
            self.due = now + tuning.settle_s
        self.last_event = now

    # -- the timer ---------------------------------------------------------------------

    def tick(self, now: float, tuning: Tuning) -> Batch | None:
        """Wait for quiet, take a stability look, return what is ready (sets :attr:`due`)."""
        self.due = None
        quiet_for = now - self.last_event
        overdue = now - self.batch_started >= tuning.max_delay_s
        if quiet_for < tuning.settle_s and not overdue:
            delay = min(tuning.settle_s - quiet_for,
                        self.batch_started + tuning.max_delay_s - now)
            self.due = now + max(delay, 0.001)
            return None
        ready, undecided = self._looks(now, tuning)
        if undecided and not overdue:
            # Keep the batch whole: wait for the paths still being confirmed. Only
            # paths proven to be growing (or an overdue batch) split a delivery.
            self.due = now + tuning.settle_s
            return None
        for path in ready:
            del self.pending[path]
        rescan_ready = {r for r in self.rescan if not self._has_pending_below(r)}
        self.rescan -= rescan_ready
        if self.settling:
            if ready or rescan_ready:
                self.batch_started = now
            self.due = now + tuning.settle_s
        if not (ready or rescan_ready):
            return None
        return Batch(paths=ready, rescan=outermost(rescan_ready))

    def _looks(self, now: float, tuning: Tuning) -> tuple[set[str], bool]:
        """Paths ready now, and whether some path is mid-way through its looks."""
        ready: set[str] = set()
        undecided = False
        for path, state in self.pending.items():
            if now - state.last_event < tuning.settle_s:
                continue  # only possible when overdue: this path itself is still hot
            sig = self._look(path)
            if sig is None:
                ready.add(path)  # gone (nothing to read) or a folder (covered by rescan)
                continue
            changed = False
            if sig == state.sig:
                state.looks += 1
            else:
                changed = state.sig is not None  # seen growing between two looks
                state.sig, state.looks = sig, 1
            if state.looks >= tuning.stable_checks:
                ready.add(path)
            elif not changed:
                undecided = True
        return ready, undecided

    def _has_pending_below(self, directory: str) -> bool:
        if not self.pending:
            return False
        prefix = directory.rstrip(os.sep) + os.sep
        return any(p == directory or p.startswith(prefix) for p in self.pending)
