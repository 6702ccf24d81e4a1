"""The single-instance lock of the daemon: one ``thotd`` per user and runtime folder.

Re-exported by :mod:`thotd.service.control` (its old home).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["AlreadyRunning", "acquire_lock"]


class AlreadyRunning(RuntimeError):
    """Another thotd holds the single-instance lock."""

    def __init__(self, lock_path: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"thotd is already running ({who} holds {lock_path}); "
            "use `thotctl status`, or stop it first with `thotctl stop` "
            "or `systemctl --user stop thotd`"
        )
        self.lock_path = lock_path
        self.pid = pid


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or "0") or None
    except (OSError, ValueError):
        return None


def acquire_lock(lock_path: Path) -> int:
    """Take the single-instance lock and return its fd; keep the fd open while running.

    ``flock`` is released by the kernel when the process dies, however it dies, so a stale
    lock file never blocks a restart (unlike "connect, refused, unlink", which races). The
    fd is close-on-exec, so scripts the daemon starts cannot keep the lock alive after it.
    Our pid is written into the file only to make the ``AlreadyRunning`` message useful.
    Raises ``AlreadyRunning`` if another process holds it.
    """
    lock_path = Path(lock_path)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        raise AlreadyRunning(lock_path, pid) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
