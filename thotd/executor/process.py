"""Launch one script run: the process plumbing shared by the runner and the daemon.

The runner calls :func:`run_sync` from worker threads; the daemon awaits :func:`run_async`
on its event loop.  Both follow the same rules (CONVENTIONS.md, "Running scripts"):

* **A session of its own per run** (``start_new_session=True``), so the run's processes
  form one process group that can be signalled as a whole, and a terminal's Ctrl-C or the
  daemon's own signals never reach scripts by accident.  No ``preexec_fn``: the caller has
  threads, and running Python code between ``fork`` and ``exec`` can deadlock there.
* **Output straight into the per-run log file**, opened by the parent and handed down as
  stdout/stderr.  No pipes: a pipe must be drained, and a grandchild that inherited it
  would keep the drain (and the run) waiting long after the script has exited.
* **Limits through an exec trampoline** (:mod:`thotd.executor.trampoline`): ``RLIMIT_CORE=0`` and
  the optional limits are set in the child before the script starts, then it ``exec``\\s
  the script (same pid, so the process group and the exit status are the script's).
  Measured cost: 9-14 ms per run, all of it ``python -I -S`` start-up (2-vCPU VM:
  ``/bin/true`` 0.6 ms direct, 8.9 ms through it; a trivial ``.sh`` run 1.8 ms bare vs
  17.8 ms through ``run_sync``).  That is noise beside a Python script's own 40-50 ms
  start-up and the seconds an analysis takes.  ``resource.prlimit(pid, ...)`` from the
  parent right after spawn would save it, but races with the script (which may already
  run, crash and dump core before the parent gets there) and cannot reset the signal
  dispositions the daemon's children inherit; see :mod:`thotd.executor.trampoline`.
* **Python scripts may be forked instead** (:mod:`thotd.executor.forkserver`): ``run_sync`` or
  ``run_async`` given a ready ``ForkServer`` has it fork a preloaded interpreter (site done, ``thot`` imported)
  that becomes ``python script.py`` -- a few ms per run instead of 70-90.  Everything
  below holds the same (own session, log as stdout/stderr, limits, TERM/grace/KILL of the
  group, leftovers ended); only the trampoline's status pipe has no use (there is no
  exec).  Whenever the server cannot give an equivalent run it refuses and the run takes
  the exec path.
* **The log is capped by the parent, not by ``RLIMIT_FSIZE``.**  ``RLIMIT_FSIZE`` limits
  *every* file the process writes, not just stdout: an analysis writing a 200 MB result
  would fail with EFBIG because of a 10 MB log cap.  Instead the parent checks the log's
  size every ``_POLL_S`` while the run lasts and cuts it back to the cap; the log is opened
  ``O_APPEND``, so later writes land at the (cut) end and the first ``log_cap_bytes`` bytes
  are never touched.  The script keeps running unaware (a chatty but correct analysis
  still succeeds); the disk use is bounded by the cap plus what the script writes in one
  poll interval; after the run the log is cut to exactly the cap and a note is appended.
  ``RunSpec.max_file_bytes`` offers the hard ``RLIMIT_FSIZE`` guard as an opt-in, with
  ``SIGXFSZ`` ignored so an oversized write fails with EFBIG (an error the script can
  report) rather than a silent death by signal.
* **Timeout / cancel**: ``SIGTERM`` (and ``SIGCONT``, for stopped members) to the process
  group, ``grace_s`` to exit, then ``SIGKILL`` to the group.
* **The run ends when the main process exits.**  Anything it left behind in its group
  (``sleep 100 &``) is terminated the same way: leftovers would keep writing into the
  watched tree after the run has been recorded as finished, triggering consumers on
  half-written files, and would outlive the run with nobody accounting for them.  A child that called ``setsid``
  itself has left the group and escapes this (only a cgroup could catch it).
* **Never an exception out of ``run_*``** for anything that went wrong with the script:
  spawn failures are a :class:`ProcResult` with status ``"error"`` and the reason.  Only
  cancellation of the caller itself (``KeyboardInterrupt``, ``asyncio.CancelledError``)
  propagates, after the process group has been stopped.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thotd.slotted import Slotted

# ``subprocess`` (~2 ms to import) and ``shutil`` (~2 ms) are imported where needed: ``thot``
# imports this module at start-up, before it knows whether anything will run (``--dry-run``,
# nothing stale), and ``shutil`` only serves R and shell scripts.
if TYPE_CHECKING:
    import asyncio
    import subprocess

    from thotd.executor.forkserver import ForkedProcess, ForkServer

__all__ = [
    "STRIPPED_ENV",
    "ProcResult",
    "RunSpec",
    "ScriptError",
    "end_leftovers",
    "interpreter_for",
    "run_async",
    "run_sync",
    "script_env",
    "start_forkserver",
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

_TRAMPOLINE = Path(__file__).with_name("trampoline.py")

#: How often a running script's log size is checked (and the wait re-armed).  Bounds the
#: log overshoot to what a script can write in this time; a few stat calls per second per
#: run cost nothing.
_POLL_S = 0.05

#: After ``SIGKILL`` to leftovers, how long to wait for them to vanish before giving up
#: (a process in uninterruptible sleep, e.g. on a hung NFS mount, dies only later).
_KILL_WAIT_S = 1.0

#: How long a run waits for a fork server that is still starting (it normally takes ~50 ms).
_FORK_READY_WAIT_S = 3.0

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
    inherits the daemon's.  ``max_file_bytes`` is ``RLIMIT_FSIZE`` and applies to *every*
    file the script writes -- a disk guard, not a log cap (see the module docstring).

    A plain class rather than a dataclass (``dataclasses`` costs ``thot run`` ~5 ms to
    import); compared and shown field by field all the same.
    """

    __slots__ = (
        "script", "cwd", "env", "log_path", "timeout_s", "log_cap_bytes", "grace_s",
        "max_open_files", "cpu_limit_s", "max_file_bytes",
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


def start_forkserver() -> ForkServer:
    """A fork server for this process's script runs (``thot run``'s, the daemon's).

    Its start environment is the one every run's is built on: ``script_env`` of this
    process's plus ``PYTHONUNBUFFERED=1``, which ``Engine.env_for`` gives every run; the
    rest (``THOT_*``) the server may differ in. Anything else would make it refuse runs."""
    from thotd.executor.forkserver import ForkServer

    return ForkServer.start(script_env(os.environ, {"PYTHONUNBUFFERED": "1"}))


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


# --------------------------------------------------------------------------------------
# shared plumbing
# --------------------------------------------------------------------------------------


def _signal_name(signum: int) -> str:
    """``SIGSEGV`` for 11, or ``signal 42`` for numbers without a name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to the group, ignoring a group that is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
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
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile
        # "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) < 3 or int(fields[2]) != pgid:
            continue
        found_member = True
        if fields[0] not in (b"Z", b"X"):
            return True
    return not found_member


def end_leftovers(record_paths: list[str], grace_s: float = 1.0) -> int:
    """End what is left of runs whose daemon died without seeing them finish (``kill -9``).

    Their processes live on in their own sessions and would keep writing into the project
    while the same runs start again. A run's processes are found by ``THOT_RECORD`` in their
    environment (a path unique to the run); their process groups get SIGTERM, ``grace_s``,
    then SIGKILL. Linux (``/proc``) only; elsewhere nothing is found. Returns the number of
    groups ended.
    """
    wanted = {f"THOT_RECORD={p}".encode(errors="surrogateescape") for p in record_paths}
    if not wanted:
        return 0
    groups: set[int] = set()
    # A forked run's main process shows the fork server's start environment in /proc: it
    # is found through the pgid file its run wrote instead (see _write_pgid_file).
    for record in record_paths:
        pgid = _pgid_from_file(record + PGID_SUFFIX)
        if pgid is not None:
            groups.add(pgid)
    try:
        pids = [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
            if wanted.intersection(env):
                groups.add(os.getpgid(pid))
        except (OSError, ProcessLookupError):
            continue
    groups.discard(os.getpgrp())
    for pgid in groups:
        _signal_group(pgid, signal.SIGTERM)
        _signal_group(pgid, signal.SIGCONT)
    deadline = time.monotonic() + grace_s
    while any(_group_alive(g) for g in groups) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pgid in groups:
        _signal_group(pgid, signal.SIGKILL)
    for record in record_paths:
        with contextlib.suppress(OSError):
            os.unlink(record + PGID_SUFFIX)
    return len(groups)


#: Beside a daemon run's record file (``THOT_RECORD``), while a forked run lasts: its
#: process group id and its main process's start time, so that :func:`end_leftovers` can
#: find it after a daemon crash (its /proc environ is the fork server's, not the run's).
PGID_SUFFIX = ".pgid"


def _start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/PID/stat`` (start time in clock ticks since boot), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()  # fields[0] is field 3 (state)
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return fields[19].decode()


def _write_pgid_file(record: str | None, pgid: int) -> str | None:
    """Write ``<record>.pgid`` for a forked run; return its path (None if not written)."""
    if not record:
        return None
    started = _start_time(pgid)
    if started is None:
        return None  # already gone (or no /proc): nothing a crash could leave behind
    path = record + PGID_SUFFIX
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="ascii") as fh:
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
    if pgid <= 1 or _start_time(pgid) != started:
        return None
    try:
        if os.getpgid(pgid) != pgid:
            return None
    except OSError:
        return None
    return pgid


def _log_header(spec: RunSpec, when: float) -> bytes:
    """The first line of every log: what ran, where, and when (local time with offset)."""
    import datetime  # loaded anyway by sqlite3 wherever runs are recorded

    iso = datetime.datetime.fromtimestamp(when).astimezone().isoformat(timespec="seconds")
    script, cwd = Path(spec.script).absolute(), Path(spec.cwd).absolute()
    return f"# thotd run: {script} in {cwd} at {iso}\n".encode(errors="replace")


def _trampoline_argv(spec: RunSpec, command: list[str], status_fd: int) -> list[str]:
    """Build ``python -I -S trampoline.py OPTIONS -- command`` for this spec."""
    opts = [f"status={status_fd}", "core=0"]
    if spec.max_open_files is not None:
        opts.append(f"nofile={int(spec.max_open_files)}")
    if spec.cpu_limit_s is not None:
        opts.append(f"cpu={int(spec.cpu_limit_s)}")
    if spec.max_file_bytes is not None:
        opts.append(f"fsize={int(spec.max_file_bytes)}")
    # Undo CPython's locale coercion in the trampoline (see the trampoline's docstring).
    if "LC_CTYPE" in spec.env:
        opts.append(f"setenv=LC_CTYPE={spec.env['LC_CTYPE']}")
    else:
        opts.append("unset=LC_CTYPE")
    return [sys.executable, "-I", "-S", str(_TRAMPOLINE), *opts, "--", *command]


class _Run:
    """One run's state, and the decisions shared by the sync and async wait loops.

    The loops only differ in *how* they wait; :meth:`step` says what to do next and for
    how long to wait, so TERM/grace/KILL and the log cap behave identically in both.
    """

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.log_fd = -1
        self.status_r = -1
        self.status_w = -1
        self.pgid = 0
        self.started = 0.0
        self.t0 = 0.0
        self.finished = 0.0
        self.t_end = 0.0
        self.deadline: float | None = None
        self.reason: str | None = None  # "timeout" | "killed" once we started stopping it
        self.main_done = False
        self.term_at: float | None = None  # when SIGTERM went to the group
        self.kill_at: float | None = None  # when SIGKILL is due
        self.kill_sent_at: float | None = None
        self.cleanup_term_sent = False
        self.truncated = False

    # -- before the spawn ---------------------------------------------------------------

    def prepare(self) -> tuple[list[str], dict[str, str]] | ProcResult:
        """Open the log, write its header, resolve the command; or return an error result."""
        spec = self.spec
        self.started = time.time()
        self.t0 = time.monotonic()
        try:
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_fd = os.open(
                spec.log_path,
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC,
                0o666,
            )
            os.write(self.log_fd, _log_header(spec, self.started))
        except OSError as exc:
            self.close()
            return self.error(f"cannot open log {str(spec.log_path)!r}: {exc.strerror or exc}")
        try:
            prefix = interpreter_for(spec.script)
        except ScriptError as exc:
            return self.error(str(exc))
        if not Path(spec.cwd).is_dir():
            return self.error(f"working directory {str(spec.cwd)!r} does not exist")
        if not _TRAMPOLINE.is_file():
            return self.error(f"thotd is installed incompletely: {str(_TRAMPOLINE)!r} is missing")
        command = [*prefix, str(Path(spec.script).absolute())]
        self.status_r, self.status_w = os.pipe()
        env = script_env(spec.env, {})  # defence in depth: the caller should have done it
        return _trampoline_argv(spec, command, self.status_w), env

    def spawned(self, pid: int) -> None:
        """Record the new process; its pid is also its process group id (new session)."""
        self.pgid = pid
        os.close(self.status_w)
        self.status_w = -1
        if self.spec.timeout_s is not None:
            self.deadline = self.t0 + self.spec.timeout_s

    # -- while it runs -------------------------------------------------------------------

    def enforce_cap(self) -> None:
        """Cut the log back to the cap if the script wrote past it (see module docstring)."""
        try:
            if os.fstat(self.log_fd).st_size > self.spec.log_cap_bytes:
                os.ftruncate(self.log_fd, self.spec.log_cap_bytes)
                self.truncated = True
        except OSError:
            pass  # the log is best effort; never let it break the run

    def step(self, main_done: bool, cancelled: bool) -> float | None:
        """Advance the run's state; return how long to wait next, or ``None`` when done.

        Phases: running -> (timeout/cancel: TERM, grace, KILL) -> main exited -> leftovers
        in the group get TERM, grace, KILL -> done.  After SIGKILL the main process is
        waited for without limit (its exit status is the run's result; only a process in
        uninterruptible sleep takes long to die), leftovers for ``_KILL_WAIT_S`` at most.
        """
        now = time.monotonic()
        self.enforce_cap()
        if main_done and not self.main_done:
            self.main_done = True
            self.finished = time.time()
            self.t_end = now
        if not self.main_done:
            if self.reason is None:
                if cancelled:
                    self._begin_stop("killed", now)
                elif self.deadline is not None and now >= self.deadline:
                    self._begin_stop("timeout", now)
                else:
                    wait = _POLL_S
                    if self.deadline is not None:
                        wait = min(wait, self.deadline - now)
                    return max(wait, 0.0)
            assert self.kill_at is not None
            if self.kill_sent_at is None and now >= self.kill_at:
                _signal_group(self.pgid, signal.SIGKILL)
                self.kill_sent_at = now
            if self.kill_sent_at is not None:
                return _POLL_S  # SIGKILLed: only waiting for the kernel now
            return max(min(_POLL_S, self.kill_at - now), 0.0)
        # The main process has exited: deal with whatever it left in its group.
        if not _group_alive(self.pgid):
            return None
        if not self.cleanup_term_sent:
            self.cleanup_term_sent = True
            if self.term_at is None:  # nobody got a TERM yet: start their grace now
                _signal_group(self.pgid, signal.SIGTERM)
                _signal_group(self.pgid, signal.SIGCONT)
                self.kill_at = now + self.spec.grace_s
        assert self.kill_at is not None
        if self.kill_sent_at is None and now >= self.kill_at:
            _signal_group(self.pgid, signal.SIGKILL)
            self.kill_sent_at = now
        if self.kill_sent_at is not None:
            if now - self.kill_sent_at >= _KILL_WAIT_S:
                return None  # unkillable for now (D state); do not hold the run hostage
            return _POLL_S
        return max(min(_POLL_S, self.kill_at - now), 0.0)

    def _begin_stop(self, reason: str, now: float) -> None:
        """SIGTERM (+SIGCONT) the group and arm the SIGKILL after the grace period."""
        self.reason = reason
        self.term_at = now
        self.kill_at = now + self.spec.grace_s
        _signal_group(self.pgid, signal.SIGTERM)
        _signal_group(self.pgid, signal.SIGCONT)

    # -- after it ended ------------------------------------------------------------------

    def _exec_failure(self) -> str | None:
        """The trampoline's report that the script could not be exec'd, if any.

        Read only after the main process exited: by then every write end is closed (the
        trampoline's on exec or exit), so this never blocks.
        """
        if self.status_r < 0:
            return None
        try:
            os.set_blocking(self.status_r, False)
            data = os.read(self.status_r, 4096)
        except OSError:
            return None
        return data.decode(errors="replace") or None

    def finish(self, returncode: int, lost: str | None = None) -> ProcResult:
        """Turn the exit status into a result; append the truncation note; close fds.

        ``lost`` explains an exit status that could not be known (a forked run whose fork
        server died before reporting it): the run is ``"failed"`` with that message.
        """
        if not self.main_done:  # defensive: callers step() until done
            self.finished, self.t_end = time.time(), time.monotonic()
        exec_error = self._exec_failure()
        signum = -returncode if returncode < 0 else None
        exit_code = returncode if returncode >= 0 else None
        if exec_error is not None:
            status, message, exit_code = "error", exec_error, None
        elif self.reason == "timeout":
            status, message = "timeout", f"timed out after {self.spec.timeout_s:g} s"
        elif self.reason == "killed":
            status, message = "killed", "cancelled"
        elif lost is not None:
            status, message = "failed", lost
        elif signum is not None:
            status, message = "failed", f"killed by {_signal_name(signum)}"
        elif returncode == 0:
            status, message = "ok", "exit code 0"
        else:
            status, message = "failed", f"exit code {returncode}"
        if self.reason is not None and signum is not None:
            message += f" ({_signal_name(signum)})"
        self.enforce_cap()
        if self.truncated:
            cap = self.spec.log_cap_bytes
            message += f"; log truncated at {cap} bytes"
            with contextlib.suppress(OSError):
                os.ftruncate(self.log_fd, cap)
                os.write(
                    self.log_fd,
                    f"\n# thotd: log truncated at {cap} bytes (log cap); "
                    "further output was discarded\n".encode(),
                )
        self.close()
        return ProcResult(
            exit_code=exit_code,
            status=status,
            started=self.started,
            finished=self.finished,
            duration_s=max(self.t_end - self.t0, 0.0),
            signal=signum,
            message=message,
            log_truncated=self.truncated,
        )

    def error(self, reason: str) -> ProcResult:
        """A run that could not start: note it in the log (if open) and close everything."""
        if self.log_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(self.log_fd, f"# thotd: error: {reason}\n".encode(errors="replace"))
        self.close()
        now = time.time()
        return ProcResult(
            exit_code=None,
            status="error",
            started=self.started or now,
            finished=now,
            duration_s=0.0,
            signal=None,
            message=reason,
        )

    def close(self) -> None:
        """Close every fd this run opened; safe to call twice."""
        for attr in ("log_fd", "status_r", "status_w"):
            fd = getattr(self, attr)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, attr, -1)


# --------------------------------------------------------------------------------------
# sync
# --------------------------------------------------------------------------------------


def _pidfd_open(pid: int) -> int | None:
    """A pidfd for our (not yet reaped) child, or ``None`` where unsupported.

    It becomes readable the moment the process exits, so the sync loop wakes at once
    instead of at ``Popen.wait``'s next backoff tick (which cost ~20 ms per run).  The pid
    cannot be reused before we reap it, so there is no race.  Linux >= 5.3.
    """
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None


def _popen_kwargs(run: _Run, spec: RunSpec, env: dict[str, str]) -> dict[str, Any]:
    """The same launch for both waits: log file as stdout and stderr, a session of its own
    (so the whole group can be signalled), the trampoline's status pipe passed through."""
    import subprocess

    return {
        "stdin": subprocess.DEVNULL,
        "stdout": run.log_fd,
        "stderr": subprocess.STDOUT,
        "cwd": spec.cwd,
        "env": env,
        "start_new_session": True,
        "pass_fds": (run.status_w,),
    }


def _fork_spawn(server: ForkServer, run: _Run, env: dict[str, str]) -> ForkedProcess | None:
    """Have the fork server start a ``.py`` run, or None when it must take the exec path."""
    spec = run.spec
    if Path(spec.script).suffix.lower() != ".py":
        return None
    # Still booting: its start-up is what an exec'd run would pay anyway, so waiting for it
    # is never slower; a server that cannot get ready in seconds is broken: exec then.
    if not server.wait_ready(_FORK_READY_WAIT_S):
        return None
    limits = {"nofile": spec.max_open_files, "cpu": spec.cpu_limit_s, "fsize": spec.max_file_bytes}
    try:
        return server.spawn(
            [str(Path(spec.script).absolute())],  # the same argv[1] the exec path gives python
            str(Path(spec.cwd).absolute()),
            env,
            run.log_fd,
            {k: int(v) for k, v in limits.items() if v is not None},
        )
    except Exception:  # noqa: BLE001 -- the exec path is always there to fall back on
        return None


def run_sync(
    spec: RunSpec,
    cancel: threading.Event | None = None,
    forkserver: ForkServer | None = None,
) -> ProcResult:
    """Run ``spec`` to completion in the calling thread and return its result.

    ``cancel`` lets another thread stop the run (status ``"killed"``); the runner needs it
    because a terminal's Ctrl-C does not reach scripts in their own session.  If the
    calling thread itself is interrupted (``KeyboardInterrupt``), the group gets
    SIGTERM, ``grace_s``, SIGKILL, and the exception propagates.  With ``forkserver``, a
    ``.py`` script is forked from it when it accepts (see the module docstring).
    """
    run = _Run(spec)
    prepared = run.prepare()
    if isinstance(prepared, ProcResult):
        return prepared
    argv, env = prepared
    proc: subprocess.Popen[bytes] | ForkedProcess | None = None
    if forkserver is not None:
        proc = _fork_spawn(forkserver, run, env)
    forked = proc is not None
    import subprocess  # Popen here, TimeoutExpired below (a forked run's wait raises it too)

    if proc is None:
        try:
            proc = subprocess.Popen(argv, **_popen_kwargs(run, spec, env))
        except OSError as exc:
            return run.error(f"cannot start {argv[0]!r}: {exc.strerror or exc}")
        except (ValueError, subprocess.SubprocessError) as exc:
            return run.error(f"cannot start the script: {exc}")
    run.spawned(proc.pid)
    # A forked run is not our child: its exit comes from the server, and proc.wait wakes
    # on that report (a pidfd would wake first and spin until it arrives).
    pidfd = None if forked else _pidfd_open(proc.pid)
    try:
        while True:
            done = proc.poll() is not None
            wait = run.step(done, cancel is not None and cancel.is_set())
            if wait is None:
                break
            if done:
                time.sleep(wait)
            elif pidfd is not None:
                select.select([pidfd], [], [], wait)
            else:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=wait)
    except BaseException:
        try:
            _signal_group(run.pgid, signal.SIGTERM)
            _signal_group(run.pgid, signal.SIGCONT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=spec.grace_s)
        finally:
            _signal_group(run.pgid, signal.SIGKILL)
            run.close()
        raise
    finally:
        if pidfd is not None:
            os.close(pidfd)
    assert proc.returncode is not None
    return run.finish(proc.returncode, getattr(proc, "lost", None))


# --------------------------------------------------------------------------------------
# async
# --------------------------------------------------------------------------------------


def _forked_waiter(loop: asyncio.AbstractEventLoop, proc: ForkedProcess) -> asyncio.Future[int]:
    """A future of the forked run's exit, woken by the fork server's report.

    The run is the server's child, not ours: no child watcher sees it.  One thread per
    run blocks in ``proc.wait()`` (woken by the client's reader thread the moment the
    status arrives, or watching the pid if the server died) and hands the result to the
    loop -- what 3.11's ``ThreadedChildWatcher`` does for an exec'd child.  Not the loop's
    default executor: a run may last hours and must not hold one of its few workers.
    """
    fut: asyncio.Future[int] = loop.create_future()

    def settle(code: int) -> None:
        if not fut.done():
            fut.set_result(code)

    def wait() -> None:
        code = proc.wait()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, code)

    threading.Thread(target=wait, name=f"thotd-run-{proc.pid}", daemon=True).start()
    return fut


def _abandon_spawn(fut: asyncio.Future[ForkedProcess | None], run: _Run) -> None:
    """A fork requested by a task cancelled meanwhile: kill what it started, close the run."""
    proc = None
    if not fut.cancelled() and fut.exception() is None:
        proc = fut.result()
    if proc is not None:
        _signal_group(proc.pid, signal.SIGKILL)
    run.close()


async def run_async(
    spec: RunSpec,
    cancel: asyncio.Event | None = None,
    forkserver: ForkServer | None = None,
) -> ProcResult:
    """Run ``spec`` on the running event loop and return its result.

    Uses ``asyncio.create_subprocess_exec`` (asyncio is imported here: ``thot run`` never
    needs it); the loop's child watcher reports the exit (in 3.11 the default ``ThreadedChildWatcher`` parks one blocking ``waitpid`` thread per
    child; a daemon wanting none can install ``PidfdChildWatcher``).  Setting ``cancel``
    stops the run with status ``"killed"``.  If the awaiting task itself is cancelled, the
    group is stopped the same way (a second cancellation during the grace period skips
    straight to SIGKILL) and ``CancelledError`` propagates.

    With ``forkserver``, a ``.py`` script is forked from it when it is ready and accepts
    (as in :func:`run_sync`); a server still starting is not waited for (the loop must not
    block): the run is exec'd.  The request goes through a worker thread, and a forked
    run's exit is awaited through :func:`_forked_waiter`.  While a forked run lasts,
    ``<THOT_RECORD>.pgid`` names its process group for :func:`end_leftovers`.
    """
    import asyncio
    import subprocess

    run = _Run(spec)
    prepared = run.prepare()
    if isinstance(prepared, ProcResult):
        return prepared
    argv, env = prepared
    loop = asyncio.get_running_loop()
    forked: ForkedProcess | None = None
    if (
        forkserver is not None
        and Path(spec.script).suffix.lower() == ".py"
        and forkserver.ready()  # so _fork_spawn's wait_ready returns at once
    ):
        try:
            spawning = loop.run_in_executor(None, _fork_spawn, forkserver, run, env)
        except RuntimeError:  # the executor is shut down: the loop is closing
            spawning = None
        if spawning is not None:
            try:
                # Shielded: the request runs on in its thread whatever happens to us, and
                # uses the log fd; a cancellation hands the outcome to _abandon_spawn.
                forked = await asyncio.shield(spawning)
            except asyncio.CancelledError:
                spawning.add_done_callback(lambda fut: _abandon_spawn(fut, run))
                raise
    proc: asyncio.subprocess.Process | ForkedProcess
    pgid_file: str | None = None
    if forked is not None:
        proc = forked
        run.spawned(proc.pid)
        pgid_file = _write_pgid_file(spec.env.get("THOT_RECORD"), proc.pid)
        waiter: asyncio.Future[Any] = _forked_waiter(loop, forked)
    else:
        try:
            proc = await asyncio.create_subprocess_exec(*argv, **_popen_kwargs(run, spec, env))
        except OSError as exc:
            return run.error(f"cannot start {argv[0]!r}: {exc.strerror or exc}")
        except (ValueError, subprocess.SubprocessError) as exc:
            return run.error(f"cannot start the script: {exc}")
        run.spawned(proc.pid)
        waiter = asyncio.ensure_future(proc.wait())
    cancel_waiter = asyncio.create_task(cancel.wait()) if cancel is not None else None
    try:
        while True:
            wait = run.step(waiter.done(), cancel is not None and cancel.is_set())
            if wait is None:
                break
            if waiter.done():
                await asyncio.sleep(wait)
            else:
                pending: set[asyncio.Future[Any]] = {waiter}
                if cancel_waiter is not None and not cancel_waiter.done():
                    pending.add(cancel_waiter)
                await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        try:
            _signal_group(run.pgid, signal.SIGTERM)
            _signal_group(run.pgid, signal.SIGCONT)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), spec.grace_s)
        finally:
            _signal_group(run.pgid, signal.SIGKILL)
            run.close()
        raise
    finally:
        if cancel_waiter is not None:
            cancel_waiter.cancel()
        if not waiter.done():  # only when we are being cancelled; the watcher still reaps
            waiter.cancel()
        if pgid_file is not None:
            with contextlib.suppress(OSError):
                os.unlink(pgid_file)
    assert proc.returncode is not None
    return run.finish(proc.returncode, getattr(proc, "lost", None))
