"""Where thotd keeps its files.

Daemon and client must compute the same locations without talking to each other, so every
path comes from one place: platformdirs with the app name ``thotd`` (which honours the
``XDG_*`` variables on Linux), overridable in the ``SSH_AUTH_SOCK`` style: an explicit flag
beats an environment variable (``THOTD_SOCKET``, ``THOTD_CONFIG``), which beats the default.

This module is imported by ``thotctl`` on every invocation, so it uses only the standard
library and platformdirs.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import warnings
from pathlib import Path

import platformdirs

APP_NAME = "thotd"
CONFIG_ENV = "THOTD_CONFIG"
SOCKET_ENV = "THOTD_SOCKET"
SOCKET_NAME = "thotd.sock"
LOCK_NAME = "thotd.lock"
DB_NAME = "state.sqlite3"
RUNS_DIR_NAME = "runs"
LOG_NAME = "thotd.log"

#: Size of ``sockaddr_un.sun_path``: 108 bytes on Linux, 104 on macOS and the BSDs.
SUN_PATH_SIZE = 108 if sys.platform.startswith("linux") else 104
#: Longest usable socket path. One byte is kept for the terminating NUL: Linux itself accepts
#: an unterminated 108-byte path, but many clients (Rust's std, C code using ``strncpy`` plus a
#: terminator, ``socat`` on some platforms) refuse or truncate it.
SOCKET_PATH_MAX = SUN_PATH_SIZE - 1


def _env(name: str) -> str | None:
    """An environment override, treating an empty value as unset (the XDG habit)."""
    value = os.environ.get(name)
    return value or None


def _absolute(value: str | os.PathLike[str]) -> Path:
    """Expand ``~`` and make absolute, so a later ``chdir`` cannot change what a path means."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(value))))


#: Modes of everything thotd creates for itself: run logs, the state database and the
#: socket can reveal what a user analyses, whatever the umask says.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def make_dirs(path: str | os.PathLike[str]) -> Path:
    """``mkdir -p`` where every folder it creates is 0700 whatever the umask.

    Folders that already exist are left as they are (``--state ./mine.db`` must not change
    the mode of the user's own folder); only the ones made here are ours to make private.
    """
    path = Path(path)
    missing: list[Path] = []
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by someone else: not ours to chmod
        os.chmod(folder, PRIVATE_DIR_MODE)  # the umask may have taken bits away
    return path


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (mode 0700, missing parents too) if needed; refuse one that is not ours.

    An existing folder of ours with a wider mode is narrowed to 0700: run logs and the
    socket can reveal what a user analyses.
    """
    path = Path(path)
    make_dirs(path.parent)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, PRIVATE_DIR_MODE)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(f"{path} exists but is not a directory")
    if st.st_uid != os.geteuid():
        raise PermissionError(
            f"{path} belongs to uid {st.st_uid}, not to you (uid {os.geteuid()}); "
            "refusing to use it"
        )
    if stat.S_IMODE(st.st_mode) != PRIVATE_DIR_MODE:
        path.chmod(PRIVATE_DIR_MODE)
    return path


def private_file_opener(path: str, flags: int) -> int:
    """An ``opener=`` for :func:`open`: the file is created 0600 and narrowed to 0600.

    ``os.open(..., 0o600)`` alone is not enough: the mode only applies to a file created by
    this call, and the umask can still take bits from it. Use it as
    ``open(path, "ab", opener=private_file_opener)``.
    """
    fd = os.open(path, flags | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        make_private(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_private(path: str | os.PathLike[str], flags: int) -> int:
    """``os.open`` of a file of thotd's own: created 0600, an existing one narrowed to 0600."""
    return private_file_opener(os.fspath(path), flags)


def make_private(target: int | str | os.PathLike[str]) -> None:
    """Narrow a file of ours (an fd or a path) to 0600; missing paths and files of other
    users are left alone (a file created by a library, such as SQLite's ``-wal``)."""
    try:
        st = os.fstat(target) if isinstance(target, int) else os.lstat(target)
    except FileNotFoundError:
        return
    if st.st_uid != os.geteuid() or stat.S_ISLNK(st.st_mode):
        return
    if stat.S_IMODE(st.st_mode) != PRIVATE_FILE_MODE:
        if isinstance(target, int):
            os.fchmod(target, PRIVATE_FILE_MODE)
        else:
            os.chmod(target, PRIVATE_FILE_MODE)


def config_file(flag: str | os.PathLike[str] | None = None) -> Path:
    """The configuration file: ``flag`` > ``$THOTD_CONFIG`` > ``user_config_dir/config.toml``.

    Nothing is created: a missing file means "all defaults".
    """
    chosen = flag if flag is not None else _env(CONFIG_ENV)
    if chosen is not None:
        return _absolute(chosen)
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def config_file_is_explicit(flag: str | os.PathLike[str] | None = None) -> bool:
    """Whether the config path was asked for (flag or env) rather than defaulted.

    A file someone named must exist; the default one may be absent.
    """
    return flag is not None or _env(CONFIG_ENV) is not None


def state_dir() -> Path:
    """Durable daemon state (created, 0700): ``state.sqlite3`` and the ``runs/`` logs."""
    return private_dir(Path(platformdirs.user_state_dir(APP_NAME)))


def database_path() -> Path:
    """The SQLite database of projects, fingerprints and run records."""
    return state_dir() / DB_NAME


def runs_dir() -> Path:
    """Per-run stdout/stderr logs (created, 0700)."""
    return private_dir(state_dir() / RUNS_DIR_NAME)


def log_dir() -> Path:
    """The daemon's own log directory (created, 0700)."""
    return private_dir(Path(platformdirs.user_log_dir(APP_NAME)))


def log_file() -> Path:
    """The daemon's JSON-lines log, the file ``thotctl logs -f`` follows."""
    return log_dir() / LOG_NAME


def runtime_dir() -> Path:
    """Socket and lock live here (created, mode 0700).

    Recent platformdirs warn when ``XDG_RUNTIME_DIR`` is unset and fall back to
    ``/run/user/<uid>`` or ``$TMPDIR/runtime-<uid>``; the fallback is deterministic, so the
    daemon and the client still agree, and a warning on every ``thotctl`` call would only
    be noise. When they disagree (different environments) the client's "not running"
    message names the socket path it tried.
    """
    with warnings.catch_warnings():
        category = getattr(platformdirs, "RuntimeDirWarning", None)
        if category is not None:
            warnings.simplefilter("ignore", category)
        base = platformdirs.user_runtime_dir(APP_NAME)
    return private_dir(Path(base))


def check_socket_path(path: Path) -> Path:
    """Raise ``ValueError`` if ``path`` does not fit in ``sun_path``; return it otherwise.

    ``bind()`` would fail with a bare "AF_UNIX path too long"; this names the path, its
    length and the fix.
    """
    size = len(os.fsencode(path))
    if size > SOCKET_PATH_MAX:
        raise ValueError(
            f"control socket path {str(path)!r} is {size} bytes long; Unix socket paths "
            f"must be at most {SOCKET_PATH_MAX} bytes here (sun_path is {SUN_PATH_SIZE} "
            f"bytes including the terminating NUL). Set {SOCKET_ENV} or --socket to a "
            "shorter path, or use a shorter XDG_RUNTIME_DIR."
        )
    return path


def socket_path(flag: str | os.PathLike[str] | None = None) -> Path:
    """The control socket: ``flag`` > ``$THOTD_SOCKET`` > ``runtime_dir()/thotd.sock``.

    Raises ``ValueError`` when the result is too long for a Unix socket address.
    """
    chosen = flag if flag is not None else _env(SOCKET_ENV)
    path = _absolute(chosen) if chosen is not None else runtime_dir() / SOCKET_NAME
    return check_socket_path(path)


def lock_path() -> Path:
    """The single-instance lock file (in the runtime dir: local, per user, cleared at logout)."""
    return runtime_dir() / LOCK_NAME
