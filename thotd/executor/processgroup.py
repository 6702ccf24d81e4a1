"""Process control in one place: start processes in sessions of their own, signal and stop
their process groups, and read what ``/proc`` says about a process.

Every part of thotd that starts, signals or watches a process comes here: the exec and
fork paths of a run, the fork server and its client, the leftovers of a crashed daemon,
``thotd start``/``stop``, the snapshot written after ``thot run`` exits.  Nothing else calls
``fork``, ``setsid``, ``killpg``, ``os.kill`` or ``pidfd_open``, or parses
``/proc/<pid>/stat``.

**A session of its own per run** (``start_new_session=True``, or ``setsid`` after a fork):
the run's processes form one process group that is signalled as a whole, and a
terminal's Ctrl-C or the daemon's own signals never reach them by accident.  A process
that calls ``setsid`` itself leaves the group and escapes (only a cgroup could catch it).

**One stop rule** (:func:`escalation`): ``SIGTERM`` (with ``SIGCONT``, so that stopped
members get it) to the group, a grace period to exit, ``SIGKILL`` to what is left, and a
short wait for the kernel to remove it.  Interrupting a stop half-way sends the
``SIGKILL`` at once.  The run loops (sync and async), a cancelled run and
:func:`thotd.executor.leftovers.end_leftovers` all stop groups through it; they differ only
in how they wait between its steps.

Stdlib only and cheap to import: the fork server loads this module, so every forked run
has it in ``sys.modules``; ``subprocess`` (~2 ms) and ``asyncio`` are imported where used.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import warnings
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio
    import subprocess

__all__ = [
    "KILL_WAIT_S",
    "STOP_POLL_S",
    "ProcStat",
    "escalation",
    "fork_and_forget",
    "fork_in_new_session",
    "group_alive",
    "groups_with_env",
    "kill_group",
    "pid_alive",
    "pidfd_open",
    "proc_stat",
    "signal_group",
    "signal_process",
    "spawn",
    "spawn_async",
    "start_time",
    "stop_groups",
]

#: How often a stop looks whether the groups are gone (a stop's waits may wake earlier).
STOP_POLL_S = 0.05

#: After ``SIGKILL``, how long a stop waits for the groups to vanish before giving up (a
#: process in uninterruptible sleep, e.g. on a hung NFS mount, dies only later).
KILL_WAIT_S = 1.0


# --------------------------------------------------------------------------------------
# starting
# --------------------------------------------------------------------------------------


def spawn(argv: list[str], **popen_kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(argv, ...)`` in a session of its own: its pid is its group's id.

    No ``preexec_fn`` (callers have threads; Python code between ``fork`` and ``exec`` can
    deadlock there): the session comes from ``start_new_session``.
    """
    import subprocess

    return subprocess.Popen(argv, start_new_session=True, **popen_kwargs)


async def spawn_async(argv: list[str], **popen_kwargs: Any) -> asyncio.subprocess.Process:
    """:func:`spawn` on the running event loop (``asyncio.create_subprocess_exec``)."""
    import asyncio

    return await asyncio.create_subprocess_exec(*argv, start_new_session=True, **popen_kwargs)


def fork_in_new_session() -> int:
    """``fork``, the child in a session of its own: 0 in the child, its pid in the parent.

    The parent returns only once the child has called ``setsid``, so it may signal the
    child's group at once (before that, the child is still in the parent's group).
    ``OSError`` when the fork fails.
    """
    sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError:
        os.close(sync_r)
        os.close(sync_w)
        raise
    if pid == 0:
        os.close(sync_r)
        os.setsid()
        os.write(sync_w, b"\0")
        os.close(sync_w)
        return 0
    os.close(sync_w)
    os.read(sync_r, 1)  # EOF too if the child died first; either way setsid is past
    os.close(sync_r)
    return pid


def fork_and_forget(work: Callable[[], object]) -> bool:
    """Do ``work`` in a forked child that nobody waits for; True in the parent once forked.

    For a process about to exit that leaves a last chore behind.  The child lets go of the
    caller's stdin/stdout/stderr (whoever reads them, a pipe or ``$(...)``, waits for their
    end, not for the chore) and exits 0 however ``work`` ends.  False when the fork failed:
    the caller does the work itself.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: "multi-threaded"
        try:
            pid = os.fork()
        except OSError:
            return False
    if pid > 0:
        return True
    try:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        work()
    finally:
        os._exit(0)


# --------------------------------------------------------------------------------------
# signalling and stopping
# --------------------------------------------------------------------------------------


def signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to the group, ignoring a group that is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def kill_group(pgid: int) -> None:
    """``SIGKILL`` the group at once (for a group nobody will manage: no grace)."""
    signal_group(pgid, signal.SIGKILL)


def signal_process(pid: int, signum: int) -> None:
    """Send ``signum`` to one process, ignoring one that is already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def escalation(
    pgids: Iterable[int],
    grace_s: float,
    alive: Callable[[int], bool] | None = None,
    kill_wait_s: float = KILL_WAIT_S,
) -> Generator[float, None, None]:
    """Stop process groups: the one rule, as steps; yields how long to wait before the next.

    ``SIGTERM`` and ``SIGCONT`` to each group, up to ``grace_s`` for them to end,
    ``SIGKILL`` to those still alive, then up to ``kill_wait_s`` for those to vanish; the
    steps end as soon as no group is ``alive`` (default :func:`group_alive`).  The caller
    waits between steps however it likes (sleeping, on a pidfd, awaiting) and may wake
    early.  Closing the generator before the ``SIGKILL`` sends it at once: a stop that is
    interrupted (a second Ctrl-C, a second cancellation) skips the rest of the grace.
    """
    is_alive = group_alive if alive is None else alive
    left = list(pgids)
    for pgid in left:
        signal_group(pgid, signal.SIGTERM)
        signal_group(pgid, signal.SIGCONT)
    kill_at = time.monotonic() + grace_s
    try:
        while left:
            left = [pgid for pgid in left if is_alive(pgid)]
            now = time.monotonic()
            if not left or now >= kill_at:
                break
            yield min(STOP_POLL_S, kill_at - now)
    finally:
        for pgid in left:
            kill_group(pgid)
    give_up = time.monotonic() + kill_wait_s
    while left:
        left = [pgid for pgid in left if is_alive(pgid)]
        now = time.monotonic()
        if not left or now >= give_up:
            return
        yield min(STOP_POLL_S, give_up - now)


def stop_groups(
    pgids: Iterable[int],
    grace_s: float,
    nap: Callable[[float], object] = time.sleep,
) -> None:
    """Stop the groups by :func:`escalation`, blocking; ``nap(seconds)`` waits a step."""
    with contextlib.closing(escalation(pgids, grace_s)) as steps:
        for wait in steps:
            nap(wait)


# --------------------------------------------------------------------------------------
# watching
# --------------------------------------------------------------------------------------


class ProcStat:
    """The fields of ``/proc/<pid>/stat`` that thotd reads."""

    __slots__ = ("pgrp", "start_time", "state")

    def __init__(self, state: str, pgrp: int, start_time: str) -> None:
        #: One letter: ``R``, ``S``, ``D``..., ``Z`` for a zombie, ``X`` for dead.
        self.state = state
        self.pgrp = pgrp
        #: Clock ticks since boot, as written there: with the pid, it names one process.
        self.start_time = start_time

    @property
    def running(self) -> bool:
        """Not a zombie (exited, not yet reaped) nor dead."""
        return self.state not in ("Z", "X")


def _read_stat(pid: int | str) -> ProcStat:
    """Parse ``/proc/<pid>/stat``; ``OSError`` (or ``ValueError``) when it cannot be read."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        data = fh.read()
    # "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
    fields = data[data.rfind(b")") + 2 :].split()  # fields[0] is field 3 (state)
    if len(fields) < 20:
        raise ValueError(f"short /proc/{pid}/stat")
    return ProcStat(fields[0].decode(), int(fields[2]), fields[19].decode())


def proc_stat(pid: int | str) -> ProcStat | None:
    """What ``/proc/<pid>/stat`` says, or None (no such process, or no ``/proc``)."""
    try:
        return _read_stat(pid)
    except (OSError, ValueError):
        return None


def start_time(pid: int) -> str | None:
    """When ``pid`` started (see :attr:`ProcStat.start_time`), or None if it is not running."""
    stat = proc_stat(pid)
    return stat.start_time if stat is not None and stat.running else None


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (``/proc``; ``kill(0)`` where it is not)."""
    try:
        return _read_stat(pid).running
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_alive(pgid: int) -> bool:
    """Whether the process group still has a member that is not a zombie.

    ``killpg(pgid, 0)`` also succeeds for zombies, and orphaned zombies disappear only when
    init (or the nearest subreaper) gets around to reaping them -- up to seconds on some
    systems.  Waiting for that would delay every run that left a ``sleep &`` behind, so on
    Linux /proc is consulted to ignore zombies.  If /proc shows no member at all (no
    procfs, another pid namespace), ``killpg``'s answer is trusted.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a member we may not signal (e.g. setuid); it exists
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    found_member = False
    for name in entries:
        if not name.isdigit():
            continue
        stat = proc_stat(name)  # None: exited meanwhile
        if stat is None or stat.pgrp != pgid:
            continue
        found_member = True
        if stat.running:
            return True
    return not found_member


def groups_with_env(entries: set[bytes]) -> set[int]:
    """The process groups of every process whose environment holds one of ``entries``
    (``b"NAME=value"``), as ``/proc/<pid>/environ`` shows it: the environment the process
    was exec'd with.  Empty without ``/proc``."""
    groups: set[int] = set()
    try:
        pids = [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return groups
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
            if entries.intersection(env):
                groups.add(os.getpgid(pid))
        except OSError:  # exited meanwhile, or not ours to read
            continue
    return groups


def pidfd_open(pid: int) -> int | None:
    """A pidfd for ``pid`` (Linux >= 5.3; not inheritable), or None where unsupported.

    It becomes readable the moment the process exits, so a wait on it wakes at once.
    Open it for a child not yet reaped: its pid cannot be reused before then.
    """
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        fd: int = opener(pid)
    except OSError:
        return None
    os.set_inheritable(fd, False)
    return fd
