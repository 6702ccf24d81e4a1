"""How many run logs are kept: the newest few of each run, and a cap on them all.

Every run writes a log (``runs/<script stem>-<digest>/<stamp>.log`` beside the state
database, see :meth:`thotd.engine.staleness.Engine.log_path`), and nothing else ever deletes
one: seven reruns of a chatty script left 71 MB. So after each finished run,
:meth:`~thotd.engine.staleness.Engine.complete` (the one place every run of both runners,
the daemon and ``thot run``, passes when it is over) calls :func:`prune`:

- the run's own folder keeps its newest ``keep_per_run`` logs;
- all the logs together are cut to ``max_total_bytes``, oldest first.

Never deleted: a log the state database still points to (:meth:`Store.logs_in_use
<thotd.engine.state.Store.logs_in_use>`): the one a running run writes, in this process or
another, and the last one of every run, which ``thotctl status`` and ``thot why`` show.

Oldest means started first: a log's name is its start time (``%Y%m%dT%H%M%S.mmm.log``),
so names sort in time order and no ``stat`` is needed to order them. Walking every run
folder for the total costs a ``stat`` per log, too much after every run of a project with
thousands of runs; so the total is walked once and then kept up to date here (per state
folder, for every engine of the process), and walked again when a minute has gone by
(other processes write logs too) or when it passes the cap with new logs that could go. A
walk for the cap cuts to 90 % of it, so a total kept at the cap is not walked after every
run.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Container
from pathlib import Path
from typing import NamedTuple

LOG_SUFFIX = ".log"
#: How old the kept total may get before the folders are walked again (other processes,
#: ``thot run`` beside the daemon, add logs this one does not see).
WALK_EVERY_S = 60.0
#: A walk for the cap cuts the total to this share of it.
HEADROOM = 0.9


class Retention(NamedTuple):
    """The limits (``[run_logs]`` in thotd's configuration)."""

    keep_per_run: int = 10
    max_total_bytes: int = 1024 * 1024 * 1024


class _Total:
    """The bytes of logs under one folder, as last walked plus what was added since; and
    what the last walk had to leave (``floor``: logs in use, or under the cap)."""

    __slots__ = ("bytes", "floor", "walked")

    def __init__(self, size: int, walked: float) -> None:
        self.bytes = size
        self.floor = size
        self.walked = walked


_totals: dict[str, _Total] = {}


def _logs(folder: Path) -> list[str]:
    """The log names in one run folder, oldest first."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries
                          if e.name.endswith(LOG_SUFFIX) and e.is_file(follow_symlinks=False))
    except OSError:
        return []


def _size(path: str) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def _delete(log: str) -> int | None:
    """Remove a log and what was written beside it (``<log>.record``...); the bytes freed,
    or ``None`` when it could not be removed (gone already counts as removed)."""
    size = _size(log)
    try:
        os.unlink(log)
    except FileNotFoundError:
        return 0
    except OSError:
        return None
    folder, name = os.path.split(log)
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(name + "."):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
    return size


def prune_run(folder: Path, keep_per_run: int, in_use: Container[str]) -> dict[str, int]:
    """Delete the logs of one run's folder beyond its newest ``keep_per_run``; returns the
    deleted logs and the bytes each freed."""
    names = _logs(folder)
    deleted: dict[str, int] = {}
    for name in names[: max(0, len(names) - keep_per_run)]:
        path = str(folder / name)
        if path not in in_use and (freed := _delete(path)) is not None:
            deleted[path] = freed
    return deleted


def _walk(log_root: Path) -> list[tuple[str, str, int]]:
    """Every log under ``log_root``: (name, path, size), oldest first."""
    out = []
    try:
        with os.scandir(log_root) as folders:
            runs = [f.path for f in folders if f.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    for folder in runs:
        for name in _logs(Path(folder)):
            path = os.path.join(folder, name)
            out.append((name, path, _size(path)))
    out.sort()
    return out


def prune_total(log_root: Path, max_total_bytes: int, in_use: Container[str]) -> dict[str, int]:
    """Delete the oldest logs under ``log_root`` until they take ``max_total_bytes`` or less
    (logs in use excepted); run folders left empty go too."""
    logs = _walk(log_root)
    total = sum(size for _name, _path, size in logs)
    deleted: dict[str, int] = {}
    for _name, path, size in logs:
        if total <= max_total_bytes:
            break
        if path in in_use or _delete(path) is None:
            continue
        total -= size
        deleted[path] = size
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(path))  # only when empty
    _totals[str(log_root)] = _Total(total, time.monotonic())
    return deleted


def prune(log_root: Path, log: str, retention: Retention, in_use: Container[str]) -> list[str]:
    """After the run that wrote ``log`` finished: apply both limits; returns the deleted logs.
    Only run folders of ``log_root`` are touched: a ``log`` elsewhere prunes no folder of it."""
    folder = Path(log).parent
    inside = folder.parent == log_root
    deleted = prune_run(folder, retention.keep_per_run, in_use) if inside else {}
    known = _totals.get(str(log_root))
    now = time.monotonic()
    if known is not None and inside:
        known.bytes += _size(log) - sum(deleted.values())
    cap = retention.max_total_bytes
    if known is None or now - known.walked > WALK_EVERY_S:
        deleted.update(prune_total(log_root, cap, in_use))
    elif known.bytes > cap and known.bytes - known.floor >= cap - int(cap * HEADROOM):
        deleted.update(prune_total(log_root, int(cap * HEADROOM), in_use))
    return list(deleted)
