"""Find and stop what runs left behind when the daemon that started them died.

A daemon killed with ``kill -9`` never sees its runs finish; their processes live on in
their own sessions and would keep writing into the project while the same runs start
again.  The next daemon ends them at start-up with :func:`end_leftovers`.  Exec'd runs are
found by ``THOT_RECORD`` in their ``/proc/<pid>/environ``; a forked run's main process
shows the fork server's environment there, so while it lasts the run keeps a pgid file
beside its record (:func:`write_pgid_file`), written by the fork server between the fork
and its answer: a daemon killed at any moment after asking for the run leaves the file.
Linux (``/proc``) only.  Standard library only: the fork server imports this module, and
its runs see what it imported.
"""

from __future__ import annotations

import contextlib
import os

from thotd.executor.processgroup import groups_with_env, proc_stat, start_time, stop_groups

__all__ = ["PGID_SUFFIX", "end_leftovers", "write_pgid_file"]

#: Beside a daemon run's record file (``THOT_RECORD``), while a forked run lasts: its
#: process group id and its main process's start time, so that :func:`end_leftovers` can
#: find it after a daemon crash (its /proc environ is the fork server's, not the run's).
PGID_SUFFIX = ".pgid"


def end_leftovers(record_paths: list[str], grace_s: float = 1.0) -> int:
    """End what is left of runs whose daemon died without seeing them finish (``kill -9``).

    A run's processes are found by ``THOT_RECORD`` in their environment (a path unique to
    the run) or by its pgid file; their process groups are stopped (SIGTERM, ``grace_s``,
    SIGKILL: :func:`~thotd.executor.processgroup.escalation`).  Elsewhere than on Linux
    nothing is found.  Returns the number of groups ended.
    """
    groups = _groups_of(record_paths)
    stop_groups(groups, grace_s)
    for record in record_paths:
        with contextlib.suppress(OSError):
            os.unlink(record + PGID_SUFFIX)
    return len(groups)


def _groups_of(record_paths: list[str]) -> set[int]:
    """The process groups of the runs that write ``record_paths``, but never our own."""
    wanted = {f"THOT_RECORD={p}".encode(errors="surrogateescape") for p in record_paths}
    groups: set[int] = set()
    if not wanted:
        return groups
    # A forked run's main process shows the fork server's start environment in /proc: it
    # is found through the pgid file its run wrote instead (see write_pgid_file).
    for record in record_paths:
        pgid = _pgid_from_file(record + PGID_SUFFIX)
        if pgid is not None:
            groups.add(pgid)
    groups |= groups_with_env(wanted)
    groups.discard(os.getpgrp())
    return groups


def write_pgid_file(record: str | None, pgid: int) -> str | None:
    """Write ``<record>.pgid`` for a forked run; return its path (None if not written)."""
    if not record:
        return None
    started = start_time(pgid)
    if started is None:
        return None  # already gone (or no /proc): nothing a crash could leave behind
    path = record + PGID_SUFFIX
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        # A new file (O_EXCL): the umask can only narrow 0600, never widen it.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with open(fd, "w", encoding="ascii") as fh:
            fh.write(f"{pgid} {started}\n")
        os.replace(tmp, path)  # whole or absent, whenever the daemon dies
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return None
    return path


def _pgid_from_file(path: str) -> int | None:
    """The group of a pgid file, if its leader still runs with the start time written there.

    A pid reused since (another process, another start time) is never signalled.  A group
    whose leader has exited is left to the ``THOT_RECORD`` search: its other members were
    exec'd by the script and show the run's environment.
    """
    try:
        with open(path, encoding="ascii") as fh:
            text = fh.read().split()
        pgid, started = int(text[0]), text[1]
    except (OSError, ValueError, IndexError):
        return None
    stat = proc_stat(pgid) if pgid > 1 else None
    if stat is None or not stat.running or stat.start_time != started or stat.pgrp != pgid:
        return None
    return pgid
