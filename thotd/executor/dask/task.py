"""What runs on a Dask worker: one script run, and the shared-filesystem probe.

The task function runs the script exactly as the local executor would
(:func:`thotd.executor.process.run_sync`: its own process group, log file as stdout and
stderr, timeout with TERM/grace/KILL), with the same environment contract
(``THOT_CONTAINER_ID``, ``THOT_SCRIPT_ID``, ``THOT_PROJECT_ROOT``) built on the *worker's*
environment (a Slurm job's ``SLURM_JOB_ID`` reaches the script). ``THOT_RECORD`` points at
a worker-local temporary file and no query socket is given: the daemon's Unix socket is on
another machine, so the ``thot`` library reads the project from the shared filesystem, as
under ``thot run``. The record, the log and how the run ended come back as the task's
result; the daemon writes them where a local run would have.

While the script runs, a thread watches the task's state on the worker: when the client
cancels the future (timeout, ``thotctl remove``, ``thotd stop``) the worker marks the task
cancelled, and the run is stopped through the usual process-group escalation. The same
thread streams new log bytes as worker events (topic :data:`LOG_TOPIC`) for ``thotctl
logs -f``. The script is started with ``die_with_parent``: a worker killed with -9 takes its
scripts with it instead of leaving them writing while the scheduler reruns the task.

Stdlib and thotd only at import (the worker imports this module to run the task);
``distributed`` is imported inside the functions, where it is certainly present.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

__all__ = ["LOG_TOPIC", "POLL_S", "probe_project", "run_on_worker"]

#: The worker-event topic carrying log chunks: ``{"run": id, "offset": n, "data": bytes}``.
LOG_TOPIC = "thotd-log"

#: How often the worker checks for a cancellation and sends new log bytes.
POLL_S = 0.25

#: Largest log chunk sent in one event (a chatty script's log is sent over several polls).
_CHUNK = 256 * 1024

#: Variables of the run's environment that travel to the worker; the rest is the worker's.
_SHIPPED_PREFIXES = ("THOT_",)
_SHIPPED = frozenset({"PYTHONUNBUFFERED"})
_NOT_SHIPPED = frozenset({"THOT_RECORD", "THOTD_QUERY_SOCKET"})


def shipped_env(env: dict[str, str]) -> dict[str, str]:
    """The part of a run's environment that is the run's, not the daemon machine's."""
    return {k: v for k, v in env.items()
            if (k.startswith(_SHIPPED_PREFIXES) or k in _SHIPPED) and k not in _NOT_SHIPPED}


def _current() -> tuple[Any, str | None]:
    """This task's worker and key (``None`` outside a worker: then nothing is watched)."""
    try:
        from distributed import get_worker
        from distributed.worker import thread_state  # type: ignore[attr-defined]

        return get_worker(), getattr(thread_state, "key", None)
    except (ImportError, ValueError):
        return None, None


class _Watch(threading.Thread):
    """Cancellation and log streaming for one run, every :data:`POLL_S`."""

    def __init__(self, run_id: str, log: Path, cancel: threading.Event) -> None:
        super().__init__(name=f"thotd-watch-{run_id}", daemon=True)
        self.run_id = run_id
        self.log = log
        self.cancel = cancel
        self.done = threading.Event()
        self.offset = 0
        self.worker, self.key = _current()

    def cancelled(self) -> bool:
        if self.worker is None or self.key is None:
            return False
        ts = self.worker.state.tasks.get(self.key)
        return ts is None or ts.state not in ("executing", "long-running")

    def send_log(self) -> None:
        if self.worker is None:
            return
        try:
            with open(self.log, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < self.offset:  # the log cap cut it back: the result has it all
                    return
                fh.seek(self.offset)
                data = fh.read(_CHUNK)
        except OSError:
            return
        if data:
            # From the worker's own loop: its batched stream to the scheduler is not
            # thread-safe, and this is not the task's thread.
            self.worker.loop.add_callback(
                self.worker.log_event, LOG_TOPIC,
                {"run": self.run_id, "offset": self.offset, "data": data})
            self.offset += len(data)

    def run(self) -> None:
        while not self.done.wait(POLL_S):
            if self.cancelled():
                self.cancel.set()
            with contextlib.suppress(Exception):  # streaming is best effort
                self.send_log()


def run_on_worker(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one script here; return how it ended, its record and its log (see the module).

    ``payload``: ``run`` (an id for log events), ``script``, ``cwd``, ``container``,
    ``env`` (:func:`shipped_env`), ``timeout_s``, ``log_cap_bytes``, ``grace_s``.
    """
    from thotd.executor.process import run_sync
    from thotd.executor.runspec import RunSpec, script_env

    tmp = Path(tempfile.mkdtemp(prefix="thotd-run-"))
    try:
        log, record = tmp / "run.log", tmp / "run.record"
        env = script_env(os.environ, {**payload["env"], "THOT_RECORD": str(record)})
        env.pop("THOTD_QUERY_SOCKET", None)
        cwd = Path(payload["cwd"])
        if not cwd.is_dir():  # where `thot run` was started may not exist here
            cwd = Path(payload["container"])
        spec = RunSpec(
            script=Path(payload["script"]), cwd=cwd, env=env, log_path=log,
            timeout_s=payload["timeout_s"], log_cap_bytes=payload["log_cap_bytes"],
            grace_s=payload["grace_s"], die_with_parent=True,
        )
        cancel = threading.Event()
        watch = _Watch(payload["run"], log, cancel)
        watch.start()
        try:
            res = run_sync(spec, cancel)
        finally:
            watch.done.set()
            watch.join()
        try:
            rec: bytes | None = record.read_bytes()
        except OSError:
            rec = None
        try:
            log_bytes = log.read_bytes()
        except OSError:
            log_bytes = b""
        worker, _key = _current()
        return {
            "status": res.status, "exit_code": res.exit_code, "started": res.started,
            "finished": res.finished, "duration_s": res.duration_s, "signal": res.signal,
            "message": res.message, "log_truncated": res.log_truncated,
            "record": rec, "log": log_bytes,
            "worker": getattr(worker, "address", None), "host": os.uname().nodename,
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def probe_project(root: str, digest: str) -> str | None:
    """Whether this machine sees ``root`` as the daemon does: ``None`` when its
    ``_container.json`` reads back with the same content, else why not."""
    path = os.path.join(root, "_container.json")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if hashlib.sha256(data).hexdigest() != digest:
        return f"{path} differs from the daemon's copy (not the same filesystem?)"
    return None
