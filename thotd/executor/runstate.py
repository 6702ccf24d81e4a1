"""One run's state from its log's first line to its result, and the rules of its wait.

:class:`RunState` is what the sync and async wait loops of :mod:`thotd.executor.process`
share: they differ only in *how* they wait; :meth:`RunState.step` says what to do next and
for how long to wait, so the stop (:func:`~thotd.executor.processgroup.escalation`), the
leftovers and the log cap behave the same in both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Generator
from pathlib import Path

from thotd.executor.processgroup import escalation, group_alive
from thotd.executor.runspec import ProcResult, RunSpec, ScriptError, interpreter_for, script_env
from thotd.paths import make_dirs, open_private

__all__ = ["POLL_S", "RunState"]

TRAMPOLINE = Path(__file__).with_name("trampoline.py")

#: How often a running script's log size is checked (and the wait re-armed).  Bounds the
#: log overshoot to what a script can write in this time; a few stat calls per second per
#: run cost nothing.
POLL_S = 0.05


def signal_name(signum: int) -> str:
    """``SIGSEGV`` for 11, or ``signal 42`` for numbers without a name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"



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
    if spec.die_with_parent:
        opts.append(f"parent={os.getpid()}")
    # Undo CPython's locale coercion in the trampoline (see the trampoline's docstring).
    if "LC_CTYPE" in spec.env:
        opts.append(f"setenv=LC_CTYPE={spec.env['LC_CTYPE']}")
    else:
        opts.append("unset=LC_CTYPE")
    return [sys.executable, "-I", "-S", str(TRAMPOLINE), *opts, "--", *command]


class RunState:
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
        #: The stop of the group once begun (timeout, cancel, or leftovers after the main
        #: process exited): its steps, see :func:`~thotd.executor.processgroup.escalation`.
        self.stopping: Generator[float, None, None] | None = None
        self.truncated = False

    # -- before the spawn ---------------------------------------------------------------

    def prepare(self) -> tuple[list[str], dict[str, str]] | ProcResult:
        """Open the log, write its header, resolve the command; or return an error result."""
        spec = self.spec
        self.started = time.time()
        self.t0 = time.monotonic()
        try:
            make_dirs(spec.log_path.parent)
            self.log_fd = open_private(
                spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
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
        if not TRAMPOLINE.is_file():
            return self.error(f"thotd is installed incompletely: {str(TRAMPOLINE)!r} is missing")
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
        """Cut the log back to the cap if the script wrote past it (the rule: see
        :mod:`thotd.executor.process`)."""
        try:
            if os.fstat(self.log_fd).st_size > self.spec.log_cap_bytes:
                os.ftruncate(self.log_fd, self.spec.log_cap_bytes)
                self.truncated = True
        except OSError:
            pass  # the log is best effort; never let it break the run

    def step(self, main_done: bool, cancelled: bool) -> float | None:
        """Advance the run's state; return how long to wait next, or ``None`` when done.

        Phases: running -> (timeout/cancel: the group is stopped) -> main exited ->
        leftovers in the group are stopped -> done.  A stop begun while the main process
        runs goes on for the leftovers once it has exited.  After the stop's ``SIGKILL``
        the main process is waited for without limit (its exit status is the run's result;
        only a process in uninterruptible sleep takes long to die), leftovers for the
        stop's last wait at most.
        """
        now = time.monotonic()
        self.enforce_cap()
        if main_done and not self.main_done:
            self.main_done = True
            self.finished = time.time()
            self.t_end = now
        if self.stopping is None:
            if not self.main_done:
                self.reason = self._stop_reason(cancelled, now)
                if self.reason is None:
                    return self._running_wait(now)
            elif not group_alive(self.pgid):
                return None  # no leftovers
            self.stopping = escalation([self.pgid], self.spec.grace_s, self._group_alive)
        wait = next(self.stopping, None)
        if wait is None and not self.main_done:
            return POLL_S  # SIGKILLed: only waiting for the kernel now
        return wait

    def stop(self) -> Generator[float, None, None]:
        """The steps of a stop for a caller being interrupted, which drives them itself
        (:meth:`step` is not called any more); close it to ``SIGKILL`` at once.

        A stop already under way (a timeout) is interrupted too: its ``SIGKILL`` goes out
        now, and the new stop only waits for the group to go.
        """
        if self.stopping is not None:
            self.stopping.close()
        self.stopping = escalation([self.pgid], self.spec.grace_s)
        return self.stopping

    def _stop_reason(self, cancelled: bool, now: float) -> str | None:
        if cancelled:
            return "killed"
        if self.deadline is not None and now >= self.deadline:
            return "timeout"
        return None

    def _running_wait(self, now: float) -> float:
        wait = POLL_S
        if self.deadline is not None:
            wait = min(wait, self.deadline - now)
        return max(wait, 0.0)

    def _group_alive(self, pgid: int) -> bool:
        """The main process is in its group: until it exits, so is the group (no /proc scan)."""
        return not self.main_done or group_alive(pgid)

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
            status, message = "failed", f"killed by {signal_name(signum)}"
        elif returncode == 0:
            status, message = "ok", "exit code 0"
        else:
            status, message = "failed", f"exit code {returncode}"
        if self.reason is not None and signum is not None:
            message += f" ({signal_name(signum)})"
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
        """Close every fd this run opened, and end a stop still going (``SIGKILL``); safe
        to call twice."""
        stopping, self.stopping = self.stopping, None
        if stopping is not None:
            stopping.close()
        for attr in ("log_fd", "status_r", "status_w"):
            fd = getattr(self, attr)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, attr, -1)
