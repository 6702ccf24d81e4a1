"""Launch one script run: the process plumbing shared by the runner and the daemon.

The runner calls :func:`run_sync` from worker threads; the daemon awaits :func:`run_async`
on its event loop.  Both follow the same rules:

* **A session of its own per run**, so the run's processes form one process group that
  can be signalled as a whole, and a terminal's Ctrl-C or the daemon's own signals never
  reach scripts by accident (:mod:`thotd.executor.processgroup` starts and stops them).
* **Output straight into the per-run log file**, opened by the parent and handed down as
  stdout/stderr.  No pipes: a pipe must be drained, and a grandchild that inherited it
  would keep the drain (and the run) waiting long after the script has exited.
* **Limits through an exec trampoline** (:mod:`thotd.executor.trampoline`):
  ``RLIMIT_CORE=0`` and the optional limits are set in the child before the script
  starts, then it ``exec``\\s
  the script (same pid, so the process group and the exit status are the script's).
  Measured cost: 9-14 ms per run, all of it ``python -I -S`` start-up (2-vCPU VM:
  ``/bin/true`` 0.6 ms direct, 8.9 ms through it; a trivial ``.sh`` run 1.8 ms bare vs
  17.8 ms through ``run_sync``).  That is noise beside a Python script's own 40-50 ms
  start-up and the seconds an analysis takes.  ``resource.prlimit(pid, ...)`` from the
  parent right after spawn would save it, but races with the script (which may already
  run, crash and dump core before the parent gets there) and cannot reset the signal
  dispositions the daemon's children inherit; see :mod:`thotd.executor.trampoline`.
* **Python scripts may be forked instead** (:mod:`thotd.executor.forkserver`): ``run_sync``
  or ``run_async`` given a ready ``ForkServer`` has it fork a preloaded interpreter (site
  done, ``thot`` imported) that becomes ``python script.py`` -- a few ms per run instead of
  70-90.  Everything below holds the same (own session, log as stdout/stderr, limits,
  TERM/grace/KILL of the group, leftovers ended); only the trampoline's status pipe has
  no use (there is no exec).  Whenever the server cannot give an equivalent run it
  refuses and the run takes the exec path.
* **The log is capped by the parent, not by ``RLIMIT_FSIZE``.**  ``RLIMIT_FSIZE`` limits
  *every* file the process writes, not just stdout: an analysis writing a 200 MB result
  would fail with EFBIG because of a 10 MB log cap.  Instead the parent checks the log's
  size every ``POLL_S`` (:mod:`thotd.executor.runstate`) while the run lasts and cuts it
  back to the cap; the log is opened
  ``O_APPEND``, so later writes land at the (cut) end and the first ``log_cap_bytes`` bytes
  are never touched.  The script keeps running unaware (a chatty but correct analysis
  still succeeds); the disk use is bounded by the cap plus what the script writes in one
  poll interval; after the run the log is cut to exactly the cap and a note is appended.
  ``RunSpec.max_file_bytes`` offers the hard ``RLIMIT_FSIZE`` guard as an opt-in, with
  ``SIGXFSZ`` ignored so an oversized write fails with EFBIG (an error the script can
  report) rather than a silent death by signal.
* **Timeout / cancel**: ``SIGTERM`` (and ``SIGCONT``, for stopped members) to the process
  group, ``grace_s`` to exit, then ``SIGKILL`` to the group: the one stop rule,
  :func:`thotd.executor.processgroup.escalation`.
* **The run ends when the main process exits.**  Anything it left behind in its group
  (``sleep 100 &``) is terminated the same way: leftovers would keep writing into the
  watched tree after the run has been recorded as finished, triggering consumers on
  half-written files, and would outlive the run with nobody accounting for them.  A child
  that called ``setsid`` itself has left the group and escapes this (only a cgroup could
  catch it).
* **Never an exception out of ``run_*``** for anything that went wrong with the script:
  spawn failures are a :class:`ProcResult` with status ``"error"`` and the reason.  Only
  cancellation of the caller itself (``KeyboardInterrupt``, ``asyncio.CancelledError``)
  propagates, after the process group has been stopped.

This module is the room's front door: it also re-exports what callers of ``run_*`` need
from :mod:`thotd.executor.runspec` and :mod:`thotd.executor.leftovers`.  How one run's wait
proceeds is :class:`thotd.executor.runstate.RunState`.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thotd.executor.leftovers import PGID_SUFFIX, end_leftovers
from thotd.executor.processgroup import kill_group, pidfd_open, spawn, spawn_async
from thotd.executor.runspec import (
    STRIPPED_ENV,
    ProcResult,
    RunSpec,
    ScriptError,
    interpreter_for,
    script_cwd,
    script_env,
)
from thotd.executor.runstate import RunState

# ``subprocess`` (~2 ms to import) and ``asyncio`` are imported where needed: ``thot``
# imports this module at start-up, before it knows whether anything will run (``--dry-run``,
# nothing stale), and ``thot run`` never needs asyncio.
if TYPE_CHECKING:
    import asyncio
    import subprocess
    from collections.abc import Mapping

    from thotd.executor.forkserver.client import ForkedProcess, ForkServer

__all__ = [
    "PGID_SUFFIX",
    "STRIPPED_ENV",
    "ProcResult",
    "RunSpec",
    "ScriptError",
    "end_leftovers",
    "interpreter_for",
    "run_async",
    "run_sync",
    "script_cwd",
    "script_env",
    "start_forkserver",
]

#: How long a run waits for a fork server that is still starting (it normally takes ~50 ms).
_FORK_READY_WAIT_S = 3.0

if TYPE_CHECKING:
    #: A started async run: its process, a future of its exit, and its pgid file (if any).
    _Started = tuple[
        asyncio.subprocess.Process | ForkedProcess, asyncio.Future[Any], str | None
    ]


def start_forkserver(extra: Mapping[str, str] | None = None) -> ForkServer:
    """A fork server for this process's script runs (``thot run``'s, the daemon's).

    Its start environment is the one every run's is built on: ``script_env`` of this
    process's plus ``PYTHONUNBUFFERED=1``, which ``Engine.env_for`` gives every run, plus
    ``extra`` (what all of its runs share); the rest (``THOT_*``) the server may differ in.
    Anything else would make it refuse runs."""
    from thotd.executor.forkserver.client import ForkServer

    return ForkServer.start(script_env(os.environ, {"PYTHONUNBUFFERED": "1", **(extra or {})}))


# --------------------------------------------------------------------------------------
# starting, either way
# --------------------------------------------------------------------------------------


def _popen_kwargs(run: RunState, env: dict[str, str]) -> dict[str, Any]:
    """The same launch for both waits: log file as stdout and stderr, the trampoline's
    status pipe passed through (the session of its own comes with ``spawn``)."""
    import subprocess

    return {
        "stdin": subprocess.DEVNULL,
        "stdout": run.log_fd,
        "stderr": subprocess.STDOUT,
        "cwd": run.spec.cwd,
        "env": env,
        "pass_fds": (run.status_w,),
    }


def _spawn_failure(run: RunState, argv: list[str], exc: Exception) -> ProcResult:
    """The ``"error"`` result of an exec that could not start."""
    if isinstance(exc, OSError):
        return run.error(f"cannot start {argv[0]!r}: {exc.strerror or exc}")
    return run.error(f"cannot start the script: {exc}")


def _fork_spawn(server: ForkServer, run: RunState, env: dict[str, str]) -> ForkedProcess | None:
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


# --------------------------------------------------------------------------------------
# sync
# --------------------------------------------------------------------------------------


def run_sync(
    spec: RunSpec,
    cancel: threading.Event | None = None,
    forkserver: ForkServer | None = None,
) -> ProcResult:
    """Run ``spec`` to completion in the calling thread and return its result.

    ``cancel`` lets another thread stop the run (status ``"killed"``); the runner needs it
    because a terminal's Ctrl-C does not reach scripts in their own session.  If the
    calling thread itself is interrupted (``KeyboardInterrupt``), the group is stopped
    (SIGTERM, ``grace_s``, SIGKILL; a second interrupt skips to SIGKILL) and the exception
    propagates.  With ``forkserver``, a ``.py`` script is forked from it when it accepts
    (see the module docstring).
    """
    import subprocess

    run = RunState(spec)
    prepared = run.prepare()
    if isinstance(prepared, ProcResult):
        return prepared
    argv, env = prepared
    proc: subprocess.Popen[bytes] | ForkedProcess | None = None
    if forkserver is not None:
        proc = _fork_spawn(forkserver, run, env)
    # A forked run is not our child: its exit comes from the server, and proc.wait wakes
    # on that report (a pidfd would wake first and spin until it arrives).
    forked = proc is not None
    if proc is None:
        try:
            proc = spawn(argv, **_popen_kwargs(run, env))
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            return _spawn_failure(run, argv, exc)
    run.spawned(proc.pid)
    pidfd = None if forked else pidfd_open(proc.pid)
    try:
        while True:
            wait = run.step(proc.poll() is not None, cancel is not None and cancel.is_set())
            if wait is None:
                break
            _nap(proc, pidfd, wait)
    except BaseException:
        try:
            with contextlib.closing(run.stop()) as steps:
                for wait in steps:
                    _nap(proc, pidfd, wait)
        finally:
            run.close()
        raise
    finally:
        if pidfd is not None:
            os.close(pidfd)
    assert proc.returncode is not None
    return run.finish(proc.returncode, getattr(proc, "lost", None))


def _nap(proc: subprocess.Popen[bytes] | ForkedProcess, pidfd: int | None, wait: float) -> None:
    """Wait ``wait`` seconds, or less if the main process exits meanwhile."""
    import subprocess

    if proc.poll() is not None:
        time.sleep(wait)
    elif pidfd is not None:
        select.select([pidfd], [], [], wait)
    else:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)


# --------------------------------------------------------------------------------------
# async
# --------------------------------------------------------------------------------------


async def run_async(
    spec: RunSpec,
    cancel: asyncio.Event | None = None,
    forkserver: ForkServer | None = None,
) -> ProcResult:
    """Run ``spec`` on the running event loop and return its result.

    Uses ``asyncio.create_subprocess_exec`` (asyncio is imported here: ``thot run`` never
    needs it); the loop's child watcher reports the exit (in 3.11 the default
    ``ThreadedChildWatcher`` parks one blocking ``waitpid`` thread per child; a daemon
    wanting none can install ``PidfdChildWatcher``).  Setting ``cancel`` stops the run with
    status ``"killed"``.  If the awaiting task itself is cancelled, the group is stopped the
    same way (a second cancellation during the grace period skips straight to SIGKILL) and
    ``CancelledError`` propagates.

    With ``forkserver``, a ``.py`` script is forked from it when it is ready and accepts
    (as in :func:`run_sync`); a server still starting is not waited for (the loop must not
    block): the run is exec'd.  The request goes through a worker thread, and a forked
    run's exit is awaited through :func:`_forked_waiter`.  While a forked run lasts,
    ``<THOT_RECORD>.pgid`` names its process group for :func:`end_leftovers`.
    """
    run = RunState(spec)
    prepared = run.prepare()
    if isinstance(prepared, ProcResult):
        return prepared
    argv, env = prepared
    forked = None if forkserver is None else await _fork_spawn_async(forkserver, run, env)
    started = await _start_async(run, argv, env, forked)
    if isinstance(started, ProcResult):
        return started
    proc, waiter, pgid_file = started
    try:
        await _wait_async(run, waiter, cancel)
    except BaseException:
        try:
            with contextlib.closing(run.stop()) as steps:
                for wait in steps:
                    await _nap_async(waiter, wait)
        finally:
            run.close()
        raise
    finally:
        if not waiter.done():  # only when we are being cancelled; the watcher still reaps
            waiter.cancel()
        if pgid_file is not None:
            with contextlib.suppress(OSError):
                os.unlink(pgid_file)
    assert proc.returncode is not None
    return run.finish(proc.returncode, getattr(proc, "lost", None))


async def _fork_spawn_async(
    server: ForkServer, run: RunState, env: dict[str, str]
) -> ForkedProcess | None:
    """:func:`_fork_spawn` from the loop: only to a server already ready (so it returns at
    once), through a worker thread; a cancellation hands the outcome to
    :func:`_abandon_spawn`."""
    import asyncio

    if Path(run.spec.script).suffix.lower() != ".py" or not server.ready():
        return None
    try:
        spawning = asyncio.get_running_loop().run_in_executor(None, _fork_spawn, server, run, env)
    except RuntimeError:  # the executor is shut down: the loop is closing
        return None
    try:
        # Shielded: the request runs on in its thread whatever happens to us, and uses the
        # log fd.
        return await asyncio.shield(spawning)
    except asyncio.CancelledError:
        spawning.add_done_callback(lambda fut: _abandon_spawn(fut, run))
        raise


def _abandon_spawn(fut: asyncio.Future[ForkedProcess | None], run: RunState) -> None:
    """A fork requested by a task cancelled meanwhile: kill what it started, close the run."""
    proc = None
    if not fut.cancelled() and fut.exception() is None:
        proc = fut.result()
    if proc is not None:
        kill_group(proc.pid)
    run.close()


async def _start_async(
    run: RunState, argv: list[str], env: dict[str, str], forked: ForkedProcess | None
) -> _Started | ProcResult:
    """The run's process, a future of its exit and its pgid file; or the ``"error"`` result."""
    import asyncio
    import subprocess

    if forked is not None:
        run.spawned(forked.pid)
        record = run.spec.env.get("THOT_RECORD")  # the fork server wrote its pgid file
        pgid_file = record + PGID_SUFFIX if record else None
        return forked, _forked_waiter(asyncio.get_running_loop(), forked), pgid_file
    try:
        proc = await spawn_async(argv, **_popen_kwargs(run, env))
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return _spawn_failure(run, argv, exc)
    run.spawned(proc.pid)
    return proc, asyncio.ensure_future(proc.wait()), None


async def _wait_async(
    run: RunState, waiter: asyncio.Future[Any], cancel: asyncio.Event | None
) -> None:
    """Step the run until it is done, waking for its exit, ``cancel`` or the next step."""
    import asyncio

    cancel_waiter = asyncio.create_task(cancel.wait()) if cancel is not None else None
    try:
        while True:
            wait = run.step(waiter.done(), cancel is not None and cancel.is_set())
            if wait is None:
                return
            await _nap_async(waiter, wait, cancel_waiter)
    finally:
        if cancel_waiter is not None:
            cancel_waiter.cancel()


async def _nap_async(
    waiter: asyncio.Future[Any], wait: float, also: asyncio.Future[Any] | None = None
) -> None:
    """Wait ``wait`` seconds, or less if the main process exits (or ``also`` completes)."""
    import asyncio

    if waiter.done():
        await asyncio.sleep(wait)
        return
    pending: set[asyncio.Future[Any]] = {waiter}
    if also is not None and not also.done():
        pending.add(also)
    await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)


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
