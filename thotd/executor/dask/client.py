"""The daemon's side of the ``dask`` executor (see :mod:`thotd.executor.dask`).

**One thread, one loop.** A :class:`DaskExecutor` runs an asynchronous ``distributed.Client``
on an event loop of its own, in a thread. The daemon's loop only awaits
``asyncio.wrap_future`` of work scheduled there, and ``thot run``'s per-run threads block on
the same concurrent futures: one code path for both runners, and nothing of
``distributed`` (connecting with timeouts, serialising, comm handlers, log events and
the files they append to) ever runs on the daemon's loop, which must keep answering
``thotctl`` while a scheduler is unreachable.

**Connection.** :meth:`_keep_connected` connects (to ``scheduler``, or to a
``dask-jobqueue`` cluster it starts, made adaptive), re-connects with exponential backoff
(0.5 s doubling to 30 s) whenever the client is not running, and keeps :attr:`reason` saying
why runs wait. Runs submitted while disconnected wait for the connection; a run whose
future was lost with the scheduler is submitted again once connected (a few times, then
recorded failed).

**Shared filesystem.** Before a project's first run, and whenever the set of workers
changes, :func:`~thotd.executor.dask.task.probe_project` runs on every worker; workers that
cannot see the project (or see another file at its path) are listed in ``status()`` and
left out of that project's runs (``workers=`` restriction).

**Faults.** A worker dying mid-run is the scheduler's to handle: it reruns the task
elsewhere, up to ``distributed.scheduler.allowed-failures`` times, then raises
``KilledWorker``, recorded here as ``failed`` with "worker lost". The daemon records a run
once, from the one result it gets, so a rerun task is never recorded twice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import itertools
import os
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from thotd.executor.dask.task import LOG_TOPIC, probe_project, run_on_worker, shipped_env
from thotd.executor.runspec import ProcResult
from thotd.paths import private_file_opener

if TYPE_CHECKING:
    from thotd.executor.choose import Job

__all__ = ["CLUSTERS", "DaskExecutor"]

#: ``cluster =`` names and their ``dask_jobqueue`` classes (``local``: a LocalCluster).
CLUSTERS = {
    "slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster",
    "htcondor": "HTCondorCluster", "oar": "OARCluster", "moab": "MoabCluster",
    "local": "LocalCluster",
}

_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 30.0
#: Times a run is submitted again after its future was lost with the scheduler.
_RESUBMITS = 3
#: How often the connection and the worker set are looked at.
_TICK_S = 1.0
#: Deadline of one look at the workers, and of one probe of a project on all of them.
_PROBE_S = 30.0


class _Sink:
    """Where one run's streamed log bytes go: the daemon's local log file."""

    __slots__ = ("path", "written")

    def __init__(self, path: str) -> None:
        self.path = path
        self.written = 0

    def append(self, offset: int, data: bytes) -> None:
        if offset != self.written:  # a gap or a repeat: the final log fills in
            return
        with open(self.path, "ab", opener=private_file_opener) as fh:
            fh.write(data)
        self.written += len(data)

    def finish(self, log: bytes) -> None:
        """The whole log: append what was not streamed, or rewrite if it was cut back."""
        mode = "ab" if self.written <= len(log) else "wb"
        rest = log[self.written:] if mode == "ab" else log
        with open(self.path, mode, opener=private_file_opener) as fh:
            fh.write(rest)


def _result(status: str, message: str, started: float, exit_code: int | None = None) -> ProcResult:
    now = time.time()
    return ProcResult(exit_code, status, started, now, max(0.0, now - started), None, message)


class DaskExecutor:
    """Runs jobs as Dask tasks; see the module docstring."""

    kind = "dask"

    def __init__(self, scheduler: str | None = None, cluster: str | None = None,
                 cluster_options: dict[str, Any] | None = None, adapt_min: int = 0,
                 adapt_max: int = 4, connect_timeout_s: float = 10.0) -> None:
        if not scheduler and not cluster:
            raise ValueError("the dask executor needs a scheduler address or a cluster")
        self.scheduler = scheduler
        self.cluster_kind = cluster
        self.cluster_options = dict(cluster_options or {})
        self.adapt = (adapt_min, adapt_max)
        self.connect_timeout_s = connect_timeout_s
        self.reason: str | None = "connecting"
        self.address: str | None = scheduler
        self.workers: list[str] = []
        self.excluded: dict[str, dict[str, str]] = {}  # project -> worker -> why
        self.allowed: dict[str, list[str]] = {}  # project -> workers that see it
        self.waiting = 0
        self._projects: set[str] = set()
        self._probed: tuple[frozenset[str], frozenset[str]] | None = None
        self._client: Any = None
        self._cluster: Any = None
        self._sinks: dict[str, _Sink] = {}
        self._cancels: dict[str, asyncio.Event] = {}
        self._ids = itertools.count(1)
        self._closing = False
        self._loop = asyncio.new_event_loop()
        self._connected = asyncio.Event()
        self._thread = threading.Thread(target=self._serve, name="thotd-dask", daemon=True)
        self._thread.start()
        self._keeper = asyncio.run_coroutine_threadsafe(self._keep_connected(), self._loop)

    # ------------------------------------------------------------------ the loop

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coro: Any) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _connect(self) -> None:
        import distributed

        client_cls: Any = distributed.Client  # untyped
        if self.cluster_kind:
            self._cluster = await self._start_cluster()
            self.address = self._cluster.scheduler_address
            target: Any = self._cluster
        else:
            target = self.scheduler
        self._client = await client_cls(target, asynchronous=True, timeout=self.connect_timeout_s,
                                    set_as_default=False)
        self._client.subscribe_topic(LOG_TOPIC, self._on_log)

    async def _start_cluster(self) -> Any:
        if self._cluster is not None:
            return self._cluster
        name = CLUSTERS.get(str(self.cluster_kind))
        if name is None:
            raise ValueError(f"unknown cluster {self.cluster_kind!r}; one of {sorted(CLUSTERS)}")
        cls: Any
        if name == "LocalCluster":
            import distributed

            cls = distributed.LocalCluster
        else:
            cls = getattr(_import_jobqueue(), name)
        cluster = await cls(asynchronous=True, **self.cluster_options)
        lo, hi = self.adapt
        cluster.adapt(minimum=lo, maximum=hi)
        return cluster

    async def _keep_connected(self) -> None:
        backoff = _BACKOFF_FIRST_S
        while not self._closing:
            client = self._client
            if client is None or client.status not in ("running", "connecting"):
                self._connected.clear()
                if client is not None:
                    self.reason = f"scheduler {self.address} unreachable (connection lost); reconnecting"
                try:
                    if client is not None:
                        self._client = None
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(client.close(), 5)
                    await self._connect()
                except Exception as exc:  # noqa: BLE001 -- said in status; tried again
                    self.reason = (f"scheduler {self.address or self.scheduler} unreachable "
                                   f"({type(exc).__name__}: {exc}); retrying in {backoff:g} s")
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX_S)
                    continue
                backoff = _BACKOFF_FIRST_S
                self._probed = None
            try:
                await self._refresh_workers()
            except Exception as exc:  # noqa: BLE001 -- the connection is looked at again
                self._connected.clear()
                self.reason = (f"scheduler {self.address} unreachable "
                               f"({type(exc).__name__}: {exc}); reconnecting")
            await asyncio.sleep(_TICK_S)

    async def _refresh_workers(self) -> None:
        client = self._client
        info = await asyncio.wait_for(client.scheduler.identity(), _PROBE_S)
        self.workers = sorted(info.get("workers", {}))
        state = (frozenset(self.workers), frozenset(self._projects))
        if state != self._probed:
            await self._probe(sorted(self._projects))
            self._probed = state
        self.reason = None if self.workers else "no Dask workers connected yet"
        self._connected.set()

    async def _probe(self, projects: list[str]) -> None:
        for root in projects:
            digest = await asyncio.to_thread(_digest, root)
            if digest is None:
                continue  # the daemon cannot read it either: its own status says so
            # A worker dying meanwhile must not hold the probe (and every run) forever: its
            # error is its answer, and the whole probe has a deadline (tried again next tick).
            answers = await asyncio.wait_for(
                self._client.run(probe_project, root, digest, on_error="return"), _PROBE_S)
            bad: dict[str, str] = {
                w: why if isinstance(why, str) else f"probe failed: {type(why).__name__}: {why}"
                for w, why in answers.items() if why is not None}
            self.excluded[root] = bad
            self.allowed[root] = sorted(w for w in answers if w not in bad)

    def _on_log(self, event: Any) -> None:
        _when, msg = event
        sink = self._sinks.get(str(msg.get("run"))) if isinstance(msg, dict) else None
        if sink is not None:
            with contextlib.suppress(OSError):
                sink.append(int(msg["offset"]), bytes(msg["data"]))

    # ------------------------------------------------------------------ one run

    def attach(self, project: str) -> None:
        self._loop.call_soon_threadsafe(self._projects.add, project)

    async def _run(self, job: Job, run_id: str) -> ProcResult:
        started = time.time()
        cancel = self._cancels.setdefault(run_id, asyncio.Event())
        self._projects.add(job.project)
        spec = job.spec
        self._sinks[run_id] = _Sink(str(spec.log_path))
        payload = {
            "run": run_id, "script": str(spec.script), "cwd": str(spec.cwd),
            "container": spec.env.get("THOT_CONTAINER_ID", str(spec.cwd)),
            "env": shipped_env(spec.env), "timeout_s": spec.timeout_s,
            "log_cap_bytes": spec.log_cap_bytes, "grace_s": spec.grace_s,
        }
        try:
            for _attempt in range(_RESUBMITS + 1):
                out = await self._attempt(job, payload, cancel, started)
                if out is not None:
                    return out
            return _result("failed", "lost with the Dask scheduler, too many times", started)
        finally:
            self._sinks.pop(run_id, None)
            self._cancels.pop(run_id, None)

    async def _wait_for_workers(self, job: Job, cancel: asyncio.Event) -> list[str] | None:
        """The workers that may run ``job`` once connected; None when cancelled meanwhile."""
        self.waiting += 1
        try:
            while not cancel.is_set():
                if self._connected.is_set() and self._client is not None:
                    state = (frozenset(self.workers), frozenset(self._projects))
                    if self._probed == state:
                        allowed = self.allowed.get(job.project)
                        if allowed is None or allowed:
                            return allowed or []
                        self.reason = f"no Dask worker can see {job.project}: its runs wait"
                await _first(asyncio.sleep(_TICK_S / 4), cancel.wait())
            return None
        finally:
            self.waiting -= 1

    async def _attempt(self, job: Job, payload: dict[str, Any], cancel: asyncio.Event,
                       started: float) -> ProcResult | None:
        """Submit once and wait; None when the future was lost with the scheduler."""
        from distributed import KilledWorker

        workers = await self._wait_for_workers(job, cancel)
        if workers is None:
            return _result("killed", "cancelled before it reached a worker", started)
        client = self._client
        future = client.submit(
            run_on_worker, payload, key=f"thotd-{payload['run']}-{uuid.uuid4().hex[:8]}",
            pure=False, resources=job.resources or None, workers=workers or None,
            allow_other_workers=False,
        )
        await _first(_settled(future), cancel.wait())
        if cancel.is_set() and not future.done():
            with contextlib.suppress(Exception):
                await client.cancel([future], reason="thotd stopped the run")
            return _result("killed", "cancelled", started)
        try:
            out = await future
        except KilledWorker as exc:
            message = f"worker lost: {exc}"
            await asyncio.to_thread(self._note, job, payload["run"], message)
            return _result("failed", message, started)
        except (asyncio.CancelledError, concurrent.futures.CancelledError):
            if self._closing:
                raise
            return None  # lost with the scheduler: submitted again once connected
        except Exception as exc:  # noqa: BLE001 -- the task itself failed (not the script)
            if client.status not in ("running",):
                return None
            return _result("error", f"dask task failed: {type(exc).__name__}: {exc}", started)
        await asyncio.to_thread(self._deliver, job, payload["run"], out)
        return ProcResult(out["exit_code"], out["status"], out["started"], out["finished"],
                          out["duration_s"], out["signal"], out["message"], out["log_truncated"])

    def _note(self, job: Job, run_id: str, message: str) -> None:
        """End the log of a run that gave no result with why (a worker thread)."""
        sink = self._sinks.get(run_id) or _Sink(str(job.spec.log_path))
        with contextlib.suppress(OSError):
            sink.append(sink.written, f"# thotd: {message}\n".encode(errors="replace"))

    def _deliver(self, job: Job, run_id: str, out: dict[str, Any]) -> None:
        """Write the log and the record where the engine reads them (a worker thread)."""
        sink = self._sinks.get(run_id) or _Sink(str(job.spec.log_path))
        where = f"# thotd: ran on Dask worker {out.get('worker')} ({out.get('host')})"
        if out.get("slurm_job_id"):
            where += f" in Slurm job {out['slurm_job_id']}"
        sink.finish((out["log"] or b"") + where.encode(errors="replace") + b"\n")
        record = job.spec.env.get("THOT_RECORD")
        if record and out["record"] is not None:
            with open(record, "wb", opener=private_file_opener) as fh:
                fh.write(out["record"])

    # ------------------------------------------------------------------ the interface

    async def run_async(self, job: Job, cancel: asyncio.Event | None = None) -> ProcResult:
        run_id = f"{os.getpid()}-{next(self._ids)}"
        done = asyncio.wrap_future(self._call(self._run(job, run_id)))
        try:
            if cancel is not None:
                await _first(asyncio.shield(done), cancel.wait())
                if not done.done():
                    self._cancel(run_id)
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            self._cancel(run_id)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(done, 30)
            raise

    def run_sync(self, job: Job, cancel: threading.Event | None = None) -> ProcResult:
        run_id = f"{os.getpid()}-{next(self._ids)}"
        fut = self._call(self._run(job, run_id))
        try:
            while True:
                try:
                    result: ProcResult = fut.result(timeout=0.2)
                    return result
                except concurrent.futures.TimeoutError:
                    if cancel is not None and cancel.is_set():
                        self._cancel(run_id)
        except BaseException:
            self._cancel(run_id)
            with contextlib.suppress(BaseException):
                fut.result(timeout=30)
            raise

    def _cancel(self, run_id: str) -> None:
        def cancel() -> None:
            self._cancels.setdefault(run_id, asyncio.Event()).set()

        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(cancel)

    def status(self) -> dict[str, Any]:
        excluded = [{"project": p, "worker": w, "reason": why}
                    for p, bad in sorted(self.excluded.items()) for w, why in sorted(bad.items())]
        return {
            "kind": self.kind, "scheduler": self.address, "cluster": self.cluster_kind,
            "connected": self._connected.is_set(), "reason": self.reason,
            "workers": list(self.workers), "waiting": self.waiting, "excluded": excluded,
        }

    async def _shutdown(self) -> None:
        self._closing = True
        self._keeper.cancel()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._client.close(), 10)
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._cluster.close(), 30)

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown()).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)


def _import_jobqueue() -> Any:
    """``dask_jobqueue``, imported from this (non-main) thread.

    Its ``runner`` module calls ``signal.signal(SIGINT, ...)`` at import: from a thread that
    raises ``ValueError``, and from the main thread it would replace the daemon's own SIGINT
    handling with ``sys.exit``. So the call is made a no-op for the import's duration."""
    import signal
    import sys

    if "dask_jobqueue" in sys.modules:
        return sys.modules["dask_jobqueue"]
    real = signal.signal
    signal.signal = lambda *_args, **_kw: None
    try:
        import dask_jobqueue
    finally:
        signal.signal = real
    return dask_jobqueue


async def _settled(future: Any) -> None:
    """Wait for a Dask future to finish, however it finishes (its result is read after)."""
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await future


async def _first(*aws: Any) -> None:
    """Wait until the first of ``aws`` completes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()


def _digest(root: str) -> str | None:
    try:
        with open(os.path.join(root, "_container.json"), "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return None
