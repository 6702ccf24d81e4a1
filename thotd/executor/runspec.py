"""What a run is, before it starts: its spec, its result, its environment and its command.

Shared by every way of running (:mod:`thotd.executor.process`; later other executors) and
by their callers, which build a :class:`RunSpec` and read a :class:`ProcResult`.  Cheap to
import: ``thot run`` loads it at start-up, before it knows whether anything will run
(``shutil`` is imported only for R and shell scripts).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from thotd.slotted import Slotted

__all__ = [
    "STRIPPED_ENV",
    "ProcResult",
    "RunSpec",
    "ScriptError",
    "interpreter_for",
    "script_env",
]

#: Variables systemd hands to the daemon that belong to the daemon alone.  A script that
#: inherited ``NOTIFY_SOCKET`` could send ``READY=1``/``WATCHDOG=1`` on the daemon's behalf
#: (hiding a hung daemon from the watchdog); ``LISTEN_*`` would make socket-activatable
#: programs started by the script try to adopt fds that are not theirs.
STRIPPED_ENV: frozenset[str] = frozenset(
    {
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
    }
)

_INTERPRETERS: dict[str, str] = {".r": "Rscript", ".sh": "bash"}


class ScriptError(Exception):
    """The script cannot be run at all (missing, not executable, interpreter missing).

    Raised by :func:`interpreter_for`; ``run_*`` turn it into an ``"error"`` result.
    """


class RunSpec(Slotted):
    """Everything needed to launch one run.

    ``env`` is the complete environment (build it with :func:`script_env`).  ``script`` and
    ``cwd`` may be relative; they are resolved against the caller's working directory, not
    against each other.  ``timeout_s=None`` means no wall-clock limit.  ``log_cap_bytes``
    caps the whole log file, header included.

    The last three fields are optional resource limits set by the trampoline; ``None``
    inherits the daemon's.  ``die_with_parent`` has the kernel kill the script when the
    process that started it dies (a Dask worker killed with -9 must not leave its runs
    writing into the project while the scheduler reruns them elsewhere).  ``max_file_bytes`` is ``RLIMIT_FSIZE`` and applies to *every*
    file the script writes -- a disk guard, not a log cap (see :mod:`thotd.executor.process`).

    A plain class rather than a dataclass (``dataclasses`` costs ``thot run`` ~5 ms to
    import); compared and shown field by field all the same.
    """

    __slots__ = (
        "script", "cwd", "env", "log_path", "timeout_s", "log_cap_bytes", "grace_s",
        "max_open_files", "cpu_limit_s", "max_file_bytes", "die_with_parent",
    )

    def __init__(
        self,
        script: Path,
        cwd: Path,
        env: dict[str, str],
        log_path: Path,
        timeout_s: float | None,
        log_cap_bytes: int,
        grace_s: float = 5.0,
        max_open_files: int | None = None,
        cpu_limit_s: int | None = None,
        max_file_bytes: int | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self.script = script
        self.cwd = cwd
        self.env = env
        self.log_path = log_path
        self.timeout_s = timeout_s
        self.log_cap_bytes = log_cap_bytes
        self.grace_s = grace_s
        self.max_open_files = max_open_files
        self.cpu_limit_s = cpu_limit_s
        self.max_file_bytes = max_file_bytes
        self.die_with_parent = die_with_parent


class ProcResult(Slotted):
    """Outcome of one run.

    ``status`` is ``"ok"`` (exit 0), ``"failed"`` (non-zero exit or death by a signal the
    run did not send), ``"timeout"``, ``"killed"`` (cancelled) or ``"error"`` (could not be
    started).  ``exit_code`` is ``None`` when the process died by ``signal`` or never ran.
    ``started``/``finished`` are wall-clock (``time.time()``) for display; ``duration_s``
    comes from the monotonic clock so a clock step cannot make it negative.  ``finished`` is
    when the main process exited; cleaning up leftovers comes after and is not counted.
    ``log_truncated`` tells that output beyond ``log_cap_bytes`` was discarded.
    """

    __slots__ = (
        "exit_code", "status", "started", "finished", "duration_s", "signal", "message",
        "log_truncated",
    )

    def __init__(
        self,
        exit_code: int | None,
        status: str,
        started: float,
        finished: float,
        duration_s: float,
        signal: int | None,
        message: str,
        log_truncated: bool = False,
    ) -> None:
        self.exit_code = exit_code
        self.status = status
        self.started = started
        self.finished = finished
        self.duration_s = duration_s
        self.signal = signal
        self.message = message
        self.log_truncated = log_truncated


def interpreter_for(script: Path) -> list[str]:
    """Return the command prefix that runs ``script``; the script path goes after it.

    ``.py`` uses the running interpreter (``sys.executable``): the environment where thotd
    and the ``thot`` script API are installed, not whatever ``python`` is first on PATH.
    ``.R``/``.r`` use ``Rscript`` and ``.sh`` uses ``bash`` (not ``sh``: scripts written
    on a desktop tend to contain bashisms even without a shebang).  Anything else is run
    directly (empty prefix) if executable, so shebangs and compiled programs work.

    Raises :class:`ScriptError` with a message meant for the user when the script is
    missing, not runnable, or needs an interpreter that is not installed.  Interpreters
    are looked up on the daemon's PATH; the actual exec uses the run's PATH, and a
    mismatch there surfaces as an ``"error"`` result from ``run_*``.
    """
    path = Path(script)
    if not path.exists():
        raise ScriptError(f"script {str(path)!r} does not exist")
    if not path.is_file():
        raise ScriptError(f"script {str(path)!r} is not a regular file")
    suffix = path.suffix.lower()
    if suffix == ".py":
        if not sys.executable:
            raise ScriptError(
                f"cannot run {str(path)!r}: the Python interpreter running thotd is unknown "
                "(sys.executable is empty)"
            )
        return [sys.executable]
    program = _INTERPRETERS.get(suffix)
    if program is not None:
        import shutil

        if shutil.which(program) is None:
            raise ScriptError(
                f"cannot run {str(path)!r}: {program!r} is not installed or not on PATH "
                f"(needed for {path.suffix} scripts)"
            )
        return [program]
    if os.access(path, os.X_OK):
        return []
    raise ScriptError(
        f"script {str(path)!r} is not executable; chmod +x it or use a .py/.R/.sh extension"
    )


def script_cwd(script: str | os.PathLike[str], container: str, started_in: str) -> Path:
    """Where a run starts. A Python script starts where the runner was started
    (``started_in``), as the original runner's did; the script API then moves it into its
    container (``LocalProject()`` does). Other scripts (R, shell: the original ran none)
    start in their container, having no API to move them there."""
    if os.fspath(script).lower().endswith(".py"):
        return Path(started_in)
    return Path(container)


def script_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """Return the environment for a script: ``base`` minus daemon-only variables, plus ``extra``.

    ``extra`` (the ``THOT_*`` variables of the script API) is applied last and wins.
    """
    env = {k: v for k, v in base.items() if k not in STRIPPED_ENV}
    env.update(extra)
    return env

