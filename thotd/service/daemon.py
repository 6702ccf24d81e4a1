"""The daemon: one asyncio loop owns every project's index, engine and run queue.

Data flows top to bottom: the watcher hands settled batches to :meth:`Daemon.on_batch`,
the index applies them, the engine says which runs they made stale, the queue starts runs
when their producers are done, and a finished run's outputs feed the same check, so the
wave rolls up the tree. The control socket, APScheduler's jobs and signal handlers all run
on the same loop, so no lock guards any of this state.

The lifecycle has uvicorn's shape: :meth:`Daemon.run` is :meth:`~Daemon.startup`, the main
loop, and :meth:`~Daemon.shutdown` in a ``finally``; signal handlers only record the signal.
Its control methods are handed in (:func:`thotd.service.methods.handlers`), not imported.

Why this file is long: it is one idea, the state the loop owns (projects, queues,
running runs) and the flow through it, from a settled batch to a finished run. The parts
with a life of their own are beside it: :mod:`~thotd.service.registered` (a project's
state), :mod:`~thotd.service.loading` (a project's load), :mod:`~thotd.service.forking`,
:mod:`~thotd.service.timetable`, :mod:`~thotd.service.hashing`,
:mod:`~thotd.service.signals`, :mod:`~thotd.service.lock` and :mod:`~thotd.service.methods`. Which queued run may start, and how its spec is built, is
the engine's (:mod:`thotd.engine.dispatch`): ``dispatch`` and ``_start`` only ask it.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from thotd import exits, paths
from thotd.engine import snapshot
from thotd.engine.dispatch import ReadyQueue, Untrusted, dispatcher_for, launch, ready_queue_for
from thotd.engine.record import read_record
from thotd.engine.staleness import INTERRUPTED, Planned, RunKey
from thotd.engine.state import Store
from thotd.executor.choose import Executor, Executors, Job, association, failed_start, job_resources
from thotd.executor.local import LocalExecutor
from thotd.executor.process import RunSpec, end_leftovers
from thotd.project.index import Index, NotAProject, norm
from thotd.service import notify
from thotd.service.config import Config
from thotd.service.control import ControlServer, Handler
from thotd.service.fanout import Fanout
from thotd.service.forking import ForkServerKeeper
from thotd.service.hashing import OffLoopHashes
from thotd.service.loading import Loading, open_project
from thotd.service.lock import acquire_lock
from thotd.service.registered import Project, Running
from thotd.service.signals import RELOAD_SIGNALS, captured_signals
from thotd.service.timetable import Timetable, schedule_job_id
from thotd.service.watch import Batch, Watcher
from thotd.words import plural

if TYPE_CHECKING:
    from thotd.engine.trust import Refusal, TrustPolicy
    from thotd.executor.forkserver.client import ForkServer

log = structlog.get_logger("thotd")

#: The control methods a daemon serves, bound to it (:func:`thotd.service.methods.handlers`).
#: Passed in by whoever builds the daemon, so this module does not import the methods.
MethodTable = Callable[["Daemon"], Mapping[str, Handler]]

__all__ = ["Daemon", "MethodTable", "schedule_job_id"]

#: Seconds between two snapshot writes of a running daemon (one is always written at a stop).
SNAPSHOT_EVERY_S = 600.0

#: Triggers that queue a run whatever its staleness; a file event must not undo them.
FORCED_TRIGGERS = ("rerun", "schedule", "retry")


class Daemon:
    """One daemon: :meth:`run` is ``startup()``, serve until stopped, ``shutdown()``.

    Everything ``startup`` acquires is pushed onto one exit stack as it is acquired, so
    ``shutdown`` (always run, in a ``finally``) releases exactly what was started, in
    reverse order, whether start-up completed or failed half-way.
    """

    def __init__(self, config: Config, *, store_path: Path, socket_path: Path,
                 methods: MethodTable, config_path: Path | None = None,
                 lock_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.store_path = store_path
        self.socket_path = socket_path
        self.lock_path = lock_path
        self.methods = methods
        self.projects: dict[str, Project] = {}
        self.extra_roots: dict[str, str] = {}  # watched script folder -> project root
        self.stopping = False
        self.started = time.time()
        self.web = "off"  # the dashboard: off | starting | serving | not serving (dashboard.py)
        self.events: deque[dict[str, Any]] = deque(maxlen=500)
        self.subscribers = Fanout()  # the subscribe streams: bounded in number and backlog
        self.ready = asyncio.Event()  # set once start-up is complete and the socket listens
        self._wake = asyncio.Event()  # a signal arrived, or a stop was asked for
        self._reload_asked = False
        self._kick = asyncio.Event()
        self._applying = 0
        self._batches: set[asyncio.Future[None]] = set()  # batches being applied
        self._snapshot_at = time.monotonic()
        # Content hashing happens in worker threads, never on the loop.
        self.hashes = OffLoopHashes(self.check_runs, self.emit,
                                    lambda proj: self.projects.get(proj.root) is proj,
                                    self.until_loaded)
        self._cleanup = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self.loop: asyncio.AbstractEventLoop
        self.forks = ForkServerKeeper(lambda: self.config.pool.fork, self._in_flight,
                                      {"THOTD_QUERY_SOCKET": str(self.socket_path)})
        self.executors = Executors(lambda: LocalExecutor(self.forkserver_for_run))
        self.store: Store
        self.trust_policy: TrustPolicy = self._trust(config)
        self.watcher: Watcher
        self.timetable: Timetable
        self.server: ControlServer

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        """Serve until a stop is asked for (signal or ``thotctl stop``); always clean up."""
        self.loop = asyncio.get_running_loop()
        with captured_signals(self.loop, self.handle_signal):
            try:
                await self.startup()
                await self.main_loop()
            finally:
                await self.shutdown()
        return exits.OK

    async def startup(self) -> None:
        """Take the lock, open the state, watch and load the projects, then listen."""
        faulthandler.enable()
        self.loop = asyncio.get_running_loop()
        cleanup = self._cleanup
        lock_fd = acquire_lock(self.lock_path or paths.lock_path())
        cleanup.callback(os.close, lock_fd)
        self.forks.for_run()  # boots while the projects load
        cleanup.push_async_callback(self.forks.close)
        cleanup.push_async_callback(self.executors.aclose)
        # verify: a bad page is found now, not by the first query that trips on it
        self.store = Store(self.store_path, verify=True)
        cleanup.callback(self.store.close)
        self.store.interrupt_stale()
        await self._end_cut_off_runs()
        self.watcher = Watcher(self.loop, self.on_batch, settle_s=self.config.daemon.settle_ms / 1000,
                               stable_checks=self.config.daemon.stable_checks)
        cleanup.callback(self.watcher.close)
        self.timetable = Timetable(reconcile=self.reconcile, scheduled=self._scheduled,
                                   retry=self._retry)
        cleanup.callback(self.timetable.close)
        registered = self.store.projects()
        roots = {norm(p["root"]) for p in registered} | {norm(str(p)) for p in self.config.projects}
        for root in sorted(roots):
            paused = any(norm(p["root"]) == root and p["paused"] for p in registered)
            # Listed as loading from the first answer on (status, wait, methods that wait).
            self.projects[root] = Project(root=root, paused=paused, loading=Loading(),
                                          paused_containers=set(self.store.paused_containers(root)))
        self.server = ControlServer()
        for name, handler in self.methods(self).items():
            self.server.register(name, handler)
        await self.server.start(self.socket_path)
        cleanup.push_async_callback(self.server.close)
        from thotd.service import dashboard  # [web]: the page, on this loop (or a warning)

        close_web = await dashboard.start(self)
        if close_web is not None:
            cleanup.push_async_callback(close_web)
        self.schedule_jobs()
        self.timetable.start()
        self._tasks = [asyncio.create_task(self._dispatch_loop()),
                       asyncio.create_task(self._health_loop()),
                       asyncio.create_task(self._load_all(sorted(roots)))]
        self.ready.set()
        notify.ready(self.status_line())
        log.info("thotd ready, loading projects", socket=str(self.socket_path),
                 projects=len(self.projects))

    async def _end_cut_off_runs(self) -> None:
        """End the scripts of runs the last daemon never saw finish (``kill -9``), before
        the socket answers: whoever sees this daemon up must not see the last one's
        scripts still running (their runs are run again by the catch-up)."""
        cut = [log + ".record" for log in self.store.running_logs()]
        ended = await asyncio.to_thread(end_leftovers, cut) if cut else 0
        if ended:
            log.warning("ended the processes of runs cut off by the last stop", groups=ended)

    async def _load_all(self, roots: list[str]) -> None:
        """Load the registered projects one after the other, after READY."""
        for root in roots:
            proj = self.projects.get(root)
            if proj is not None and not self.stopping:
                await self.open_project(root, paused=proj.paused)
        log.info("projects loaded", projects=len(self.projects),
                 seconds=round(time.time() - self.started, 3))

    async def until_loaded(self, proj: Project | None = None) -> None:
        """Until ``proj`` (every project, when None) is loaded: the control calls that need
        a project wait for it rather than find it empty."""
        for p in [proj] if proj is not None else list(self.projects.values()):
            while p.loading is not None:  # (the batches kept meanwhile may start another)
                await p.loading.done.wait()

    def loading(self) -> bool:
        """A project is being loaded (not a batch being applied)."""
        return any(p.loading is not None and not p.loading.index_busy
                   for p in self.projects.values())

    async def main_loop(self) -> None:
        """Wait for signals and stop requests; act on them here, not in the handlers."""
        while not self.stopping:
            await self._wake.wait()
            self._wake.clear()
            if self._reload_asked and not self.stopping:
                self._reload_asked = False
                try:
                    await self.reload()
                except Exception:  # a failed reload must not take the daemon down
                    log.exception("reload failed")

    async def shutdown(self) -> None:
        """No new runs; let running scripts finish within the grace; release everything."""
        self.stopping = True
        notify.stopping()
        log.info("stopping: no new runs; waiting for running scripts",
                 grace_s=self.config.daemon.shutdown_grace_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._drain_running(self.config.daemon.shutdown_grace_s)
            self.save_snapshots(force=True)
        finally:
            await self._cleanup.aclose()
        log.info("stopped")

    def handle_signal(self, signum: int) -> None:
        """Record the signal; :meth:`main_loop` acts on it."""
        if signum in RELOAD_SIGNALS:
            self._reload_asked = True
            self._wake.set()
        else:
            log.info("stop requested", signal=signal.Signals(signum).name)
            self.request_stop()

    def request_stop(self) -> None:
        self.stopping = True
        self._wake.set()

    async def _drain_running(self, grace: float) -> None:
        tasks = [r.task for p in self.projects.values() for r in p.running.values()]
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        if pending:
            for p in self.projects.values():
                for r in p.running.values():
                    r.cancel.set()  # TERM the process group, then KILL after its grace
            await asyncio.wait(pending, timeout=grace + 10)

    # ------------------------------------------------------------------ fork server

    def forkserver_for_run(self) -> ForkServer | None:
        """The fork server runs should use (see :class:`~thotd.service.forking.ForkServerKeeper`)."""
        return self.forks.for_run()

    def fork_status(self) -> dict[str, Any]:
        """For ``thotctl status``: is forking on, and how often it was used."""
        return self.forks.status()

    async def reload(self) -> dict[str, Any]:
        """SIGHUP / ``thotctl reload``: swap in a new config only if it is fully valid."""
        from thotd.service.config import ConfigError, load_config
        from thotd.service.logs import configure_logging

        notify.reloading()
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload refused: keeping the old configuration", error=str(exc))
            notify.ready(self.status_line())
            return {"reloaded": False, "error": str(exc)}
        self.config = new
        self.trust_policy = self._trust(new)
        for proj in self.projects.values():
            if proj.engine is not None:
                proj.engine.retention = new.run_logs.retention()
        self.watcher.retune(new.daemon.settle_ms / 1000, new.daemon.stable_checks)
        self.forks.retire_if_disabled()  # [pool] fork may have been turned off
        configure_logging(new.log.level, paths.log_file() if new.log.file else None)
        for root in map(str, new.projects):
            if norm(root) not in self.projects:
                await self.open_project(root)
        for proj in self.projects.values():  # [trust] may allow them now: try them again
            refused = [proj.plan[k] for k in proj.untrusted if k in proj.plan]
            if refused:
                self.check_runs(proj, refused, trigger="configuration reloaded")
        self.schedule_jobs()
        notify.ready(self.status_line())
        log.info("configuration reloaded")
        return {"reloaded": True}

    def set_paused(self, proj: Project, paused: bool) -> None:
        """``thotctl pause``/``resume``: hold or release a project's queue (kept across restarts)."""
        proj.paused = paused
        self.store.set_paused(proj.root, paused)
        self._kick.set()

    def set_container_paused(self, proj: Project, container: str, paused: bool) -> list[str]:
        """``thotctl pause``/``resume`` of a container: hold or release the runs of it and
        of the containers under it (kept across restarts). Resuming a container also drops
        the paused containers under it. Returns the paths whose entry changed."""
        if paused:
            changed = [] if container in proj.paused_containers else [container]
            proj.paused_containers.add(container)
        else:
            changed = sorted(c for c in proj.paused_containers
                             if c == container or c.startswith(container + os.sep))
            proj.paused_containers.difference_update(changed)
        self.store.set_paused_containers(proj.root, sorted(proj.paused_containers))
        self._kick.set()  # the released runs start now
        return changed

    def _trust(self, config: Config) -> TrustPolicy:
        """Whose files may run, from ``[trust]``; refusals name the config file to edit."""
        return config.trust.policy(config_path=self.config_path or paths.config_file())

    # ------------------------------------------------------------------ projects

    async def open_project(self, root: str, *, paused: bool = False) -> Project:
        return await open_project(self, root, paused=paused)  # see thotd.service.loading

    def watch_scripts(self, proj: Project) -> None:
        """Scripts usually live beside the project (``root:/../analysis``): watch those
        folders too, so editing a script reruns its runs without waiting for a rescan."""
        dirs = {os.path.dirname(script) for script in proj.scripts} - {proj.root}
        dirs = {d for d in dirs if not d.startswith(proj.root + os.sep) and os.path.isdir(d)}
        for d in dirs - proj.script_dirs:
            if d in self.extra_roots or d in self.projects:
                continue
            try:
                self.watcher.add(d)
                self.extra_roots[d] = proj.root
            except OSError as exc:
                log.warning("cannot watch script folder", folder=d, error=str(exc))
        proj.script_dirs |= dirs

    async def remove_project(self, root: str) -> bool:
        root = norm(root)
        if root in self.projects:
            await self.until_loaded(self.projects[root])
        proj = self.projects.pop(root, None)
        if proj is None:
            removed = self.store.remove_project(root)
            return removed
        proj.queue.clear()
        for r in proj.running.values():
            r.cancel.set()
        self.watcher.remove(root)
        for d in proj.script_dirs:
            if self.extra_roots.get(d) == root:
                self.watcher.remove(d)
                del self.extra_roots[d]
        self.store.remove_project(root)
        self.emit("project", project=root, state="removed")
        return True

    # ------------------------------------------------------------------ events

    def on_batch(self, root: str, batch: Batch) -> None:
        """A settled batch of filesystem events for one watched folder (loop thread)."""
        if root in self.extra_roots:
            proj = self.projects.get(self.extra_roots[root])
            if proj is not None and proj.engine is not None:
                touched = set(batch.paths)
                keys = [p for k, p in proj.plan.items() if k[1] in touched or not touched]
                self.check_runs(proj, keys, trigger="script changed")
            return
        proj = self.projects.get(root)
        if proj is None:
            return
        if proj.loading is not None:
            proj.loading.pending.append(batch)  # applied once it is loaded
            return
        if proj.engine is None or not os.path.isdir(root):
            if not os.path.isdir(root):
                proj.error = f"project folder {root} is gone (deleted or moved); it is kept registered"
                log.error("project folder missing", project=root)
                return
            asyncio.ensure_future(self.open_project(root, paused=proj.paused))
            return
        loading = proj.loading = Loading(claimed=True, index_busy=True)
        loading.progress.phase = (f"applying a batch of {plural(len(batch.paths), 'path')}, "
                                  f"{plural(len(batch.rescan), 'folder')} to rescan")
        loading.progress.index = proj.engine.index
        self._applying += 1
        task = asyncio.ensure_future(self._apply_batch(proj, batch, loading))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _apply_batch(self, proj: Project, batch: Batch, loading: Loading) -> None:
        """Apply a batch to the index in a worker thread, so a huge one (a 1,500-level
        tree, thousands of folders copied in) never holds the loop: meanwhile the project
        shows the batch in ``status``, later batches wait in ``loading.pending`` and the
        calls that need its index wait (:meth:`until_loaded`). Then its runs are checked
        on the loop as before."""
        root = proj.root
        try:
            assert proj.engine is not None
            index = proj.engine.index
            changes = await asyncio.to_thread(index.update, batch.paths, batch.rescan)
            loading.index_busy = False
            if self.projects.get(root) is not proj or proj.engine is None:
                return
            if not changes:
                # Data files and scripts outside the index can still be inputs.
                affected = {index.owner_container(p) for p in batch.paths} - {None}
            else:
                affected = {index.owner_container(i) or i for i in changes.ids()}
                affected |= {index.owner_container(os.path.dirname(i)) for i in changes.removed} - {None}
            self.emit("batch", project=root, paths=len(batch.paths), rescan=len(batch.rescan),
                      added=len(changes.added), removed=len(changes.removed),
                      modified=len(changes.modified))
            if proj.replan():
                self.watch_scripts(proj)
                self.schedule_jobs()
            keys = self._candidates(proj, affected, subtree_of=changes.modified | changes.added)
            proj.loading = None
            self.check_runs(proj, keys, trigger="files changed")
        except Exception:  # noqa: BLE001 - one bad batch must not stop the project
            log.exception("applying a batch failed", project=root)
        finally:
            self._applying -= 1
            if proj.loading is loading:
                proj.loading = None
            loading.done.set()
            for planned, trigger in loading.recheck:
                self.check_runs(proj, planned, trigger)
            for later in loading.pending:
                self.on_batch(root, later)

    def _candidates(self, proj: Project, containers: set[str | None],
                    subtree_of: set[str] | frozenset[str] = frozenset()) -> list[Planned]:
        """Runs that can see a change (see :meth:`Engine.candidates`)."""
        assert proj.engine is not None
        # Looked up by container in the dispatcher's table: what the change reaches, not
        # a scan of the plan (10,000 runs at 100x100) for every batch and finished run.
        table = dispatcher_for(proj.engine, manual=True)
        reached = proj.engine.reach(containers, subtree_of)
        orders = sorted(o for c in reached for o in table.runs_at.get(c, ()))
        return [table.at(o) for o in orders]

    def check_runs(self, proj: Project, planned: list[Planned], trigger: str) -> None:
        """Queue the stale ones among ``planned``; a change cannot make anything else stale."""
        if proj.engine is None:
            return
        if proj.loading is not None and proj.loading.index_busy:
            proj.loading.recheck.append((planned, trigger))  # after the batch is in
            return
        for p in planned:
            if p.key not in proj.plan:
                continue
            p = proj.plan[p.key]
            assoc_auto = self._autorun(proj, p.key)
            if not assoc_auto or p.key in proj.running:
                continue
            if p.key in proj.queue and proj.queue[p.key][1] in FORCED_TRIGGERS:
                continue  # asked for (rerun, schedule, retry): runs whether stale or not
            reasons = self.hashes.settled_reasons(proj, p, trigger)
            if reasons is None:
                continue  # checked again once the hashes it needs are in
            if reasons and p.key in proj.cycles:
                # A run that changes its own inputs: hold it while they are as it left them
                # (its own writes arrive here as events); a change by anyone else runs it.
                if proj.cycles[p.key] == proj.engine.input_state(p.key):
                    continue
                del proj.cycles[p.key]
            if reasons:
                proj.queue[p.key] = (reasons, trigger)
            else:
                proj.queue.pop(p.key, None)
        self._kick.set()

    def _autorun(self, proj: Project, key: RunKey) -> bool:
        assert proj.engine is not None
        return proj.engine.autorun(key)

    def enqueue(self, proj: Project, key: RunKey, reasons: list[str], trigger: str) -> None:
        """Queue a run whatever its staleness (``rerun``, schedules, retries)."""
        if key in proj.plan:
            proj.queue[key] = (reasons, trigger)
            self._kick.set()

    # ------------------------------------------------------------------ the pool

    def _association(self, proj: Project, key: RunKey) -> dict[str, Any] | None:
        node = proj.engine.index.nodes.get(key[0]) if proj.engine is not None else None
        return association(node.scripts, key[1]) if node is not None else None

    def _resources(self, proj: Project, key: RunKey) -> dict[str, float]:
        try:
            return job_resources(self._association(proj, key))
        except ValueError:
            return {}  # refused by the object file's validation already

    def executor_for(self, proj: Project, key: RunKey | None = None) -> Executor:
        """The run's executor (``[executor]``, the project's table, the script's entry)."""
        settings = self.config.executor.for_project(proj.root)
        executor = self.executors.pick(settings, self._association(proj, key) if key else None)
        executor.attach(proj.root)
        return executor

    def _in_flight(self) -> int:
        return sum(len(p.running) for p in self.projects.values())

    async def _dispatch_loop(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            try:
                self.dispatch()
            except Exception:  # one bad project must not stop the others
                log.exception("dispatch failed")

    def dispatch(self) -> None:
        """Start queued runs whose producers are all done, up to the pool's size. The ready
        runs come from the engine's :class:`~thotd.engine.dispatch.ReadyQueue`, told what
        moved in the queue since the last pass: a pass costs what changed, not the queue."""
        limit = max(1, self.config.pool.workers)
        for proj in self.projects.values():
            if proj.paused or proj.engine is None or not proj.queue or self.stopping:
                continue
            if proj.loading is not None and proj.loading.index_busy:
                continue  # its index is being changed in a worker thread; kicked after
            ready = ready_queue_for(proj.engine, manual=True)
            moved = proj.queue.moved() | proj.running.moved()
            if ready is proj.synced:
                fresh = ready.update(moved, proj.queue, proj.running)
            else:  # a new plan, a new ready queue: told everything once
                fresh = ready.sync(proj.queue, proj.running)
                proj.synced = ready
            for key in fresh | (ready.strays & proj.queue.keys()):
                if key not in proj.plan or not self._autorun_or_forced(proj, key):
                    proj.queue.pop(key, None)  # the association is gone: obsolete
                    ready.discard(key)
            after = -1
            while (q := ready.next_ready(after)) is not None:
                if self._in_flight() >= limit:
                    return
                after = q.order
                self._try_start(proj, q.key, ready)

    def _try_start(self, proj: Project, key: RunKey, ready: ReadyQueue) -> None:
        """Start a queued run the rule lets start, unless it is obsolete, blocked, or its
        hashes are still being computed."""
        p = proj.plan.get(key)
        if p is None or not self._autorun_or_forced(proj, key):
            proj.queue.pop(key, None)  # the association is gone: obsolete
            ready.discard(key)
            return
        if p.blocked or proj.held_by(p.container) is not None:
            return  # blocked, or its container is paused: stays queued
        reasons, trigger = proj.queue[key]
        if trigger not in FORCED_TRIGGERS:
            fresh = self.hashes.settled_reasons(proj, p, trigger)
            if fresh is None:
                return  # its hashes are being computed: checked again after
            reasons = fresh
        del proj.queue[key]
        if reasons:  # else obsolete: the change was undone before it ran
            self._start(proj, p, reasons, trigger)
        if key in proj.running:
            ready.start(key)
        else:
            ready.discard(key)

    def _autorun_or_forced(self, proj: Project, key: RunKey) -> bool:
        trigger = proj.queue[key][1]
        return trigger in FORCED_TRIGGERS or self._autorun(proj, key)

    def _start(self, proj: Project, p: Planned, reasons: list[str], trigger: str) -> None:
        assert proj.engine is not None
        pool = self.config.pool
        try:
            # started_in: the project root, where the original runner was started
            run = launch(proj.engine, p, reasons, trigger, trust=self.trust_policy,
                         started_in=proj.engine.index.root, query_socket=str(self.socket_path),
                         timeout_s=pool.timeout_s, log_cap_bytes=pool.log_cap_bytes,
                         grace_s=min(5.0, self.config.daemon.shutdown_grace_s))
        except Untrusted as exc:
            self._refused(proj, p, exc.refusal)
            return
        proj.untrusted.pop(p.key, None)
        cancel = asyncio.Event()
        task = asyncio.create_task(self._run(proj, p, run.spec, cancel, reasons, trigger, run.log, run.record))
        proj.running[p.key] = Running(p.key, task, cancel, time.time(), reasons, run.log)
        self.emit("run", project=proj.root, container=p.container, script=p.script,
                  state="started", reasons=reasons)
        notify.status(self.status_line())

    async def _run(self, proj: Project, p: Planned, spec: RunSpec, cancel: asyncio.Event,
                   reasons: list[str], trigger: str, log_path: str, record: str) -> None:
        with structlog.contextvars.bound_contextvars(project=proj.root, run=f"{p.container}::{p.script}"):
            log.info("run started", reasons=reasons)
            try:
                executor = self.executor_for(proj, p.key)
            except (RuntimeError, ValueError) as exc:  # e.g. the [dask] extra is missing
                res = failed_start(str(exc))
            else:
                res = await executor.run_async(Job(spec, proj.root, self._resources(proj, p.key),
                                                   f"{p.container}::{p.script}"), cancel)
            # Still counted as running while its record is read and the files it names are
            # hashed, both in worker threads: the loop reads no file's content.
            rec = await asyncio.to_thread(read_record, record)
            await self.until_loaded(proj)  # its index is not being changed right now
            if proj.engine is not None and self.projects.get(proj.root) is proj:
                prefetch = self.hashes.start(proj, paths=proj.engine.files_to_hash(p.key, rec))
                if prefetch is not None:
                    await asyncio.shield(prefetch)
            await self.until_loaded(proj)
            proj.running.pop(p.key, None)
            self.forks.retire_if_disabled()
            if proj.engine is None or self.projects.get(proj.root) is not proj:
                # Removed while it ran: no run row to update, but its history row ends.
                history_id = proj.engine.history_ids.pop(p.key, None) if proj.engine else None
                if history_id is not None:
                    self.store.finish_history(history_id, res.status, res.exit_code, res.finished)
                return
            outputs = proj.engine.complete(
                p.key, status=res.status, exit_code=res.exit_code, started=res.started,
                finished=res.finished, log=log_path, record_path=record, reasons=reasons,
                trigger=trigger, rec=rec,
            )
            log.info("run finished", status=res.status, exit_code=res.exit_code,
                     duration_s=round(res.duration_s, 3), outputs=len(outputs))
            self.emit("run", project=proj.root, container=p.container, script=p.script,
                      state=res.status, exit_code=res.exit_code, duration_s=res.duration_s)
            if res.status in ("failed", "timeout", "error"):
                self._maybe_retry(proj, p.key)
            else:
                proj.attempts.pop(p.key, None)
            if self.stopping or res.status == "killed":
                return
            proj.replan()
            # Consumers of its outputs, and itself if an input moved while it ran (once).
            index = proj.engine.index
            owners = {index.owner_container(o) for o in outputs} | {p.container}
            again = await self.hashes.reasons_once_hashed(proj, p)
            await self.until_loaded(proj)
            if self.projects.get(proj.root) is not proj:
                return
            if again and res.status == "ok":
                n = proj.reruns.get(p.key, 0)
                if n < 1:
                    proj.reruns[p.key] = n + 1
                    proj.queue[p.key] = (again, "inputs changed while it ran")
                else:
                    log.warning("run is stale again right after running: a cycle; not rerun",
                                reasons=again)
                    proj.reruns.pop(p.key, None)
                    proj.cycles[p.key] = proj.engine.input_state(p.key)
            else:
                proj.reruns.pop(p.key, None)
                proj.cycles.pop(p.key, None)
            keys = [q for q in self._candidates(proj, owners) if q.key != p.key]
            self.check_runs(proj, keys, trigger="files changed")
            notify.status(self.status_line())

    def _refused(self, proj: Project, p: Planned, refusal: Refusal) -> None:
        """A run whose files are not trusted: blocked (in status, with the reason) until a
        later start finds them fixed or allowed; said once per new reason."""
        if str(proj.untrusted.get(p.key)) != str(refusal):
            log.warning("run blocked: untrusted files", project=proj.root, container=p.container,
                        script=p.script, reason=str(refusal))
            self.emit("run", project=proj.root, container=p.container, script=p.script,
                      state="blocked", reason=str(refusal))
        proj.untrusted[p.key] = refusal
        self._kick.set()  # the runs that waited for it may start: another dispatch pass

    def _maybe_retry(self, proj: Project, key: RunKey) -> None:
        retry = self.config.retry
        n = proj.attempts.get(key, 0) + 1
        proj.attempts[key] = n
        if n > retry.attempts:
            return
        delay = retry.delay(n)
        self.timetable.retry_later(proj.root, key, delay)
        log.info("retry scheduled", attempt=n, delay_s=delay)

    async def _retry(self, root: str, key: RunKey) -> None:
        proj = self.projects.get(root)
        if proj is not None and key not in proj.running:
            self.enqueue(proj, key, ["retry after failure"], "retry")

    # ------------------------------------------------------------------ timed work

    def schedule_jobs(self) -> None:
        plans = {root: proj.plan for root, proj in self.projects.items()}
        errors = self.timetable.sync(self.config.daemon.reconcile_minutes, plans)
        for root, proj in self.projects.items():
            proj.schedule_errors = errors.get(root, {})

    async def _scheduled(self, root: str, key: RunKey) -> None:
        proj = self.projects.get(root)
        if proj is not None and not proj.paused:
            self.enqueue(proj, key, ["scheduled"], "schedule")

    async def reconcile(self, root: str | None = None) -> dict[str, int]:
        """Re-read projects from disk and check every run: catches what the watcher missed."""
        out: dict[str, int] = {}
        for proj in list(self.projects.values()):
            if root is not None and proj.root != norm(root):
                continue
            if proj.loading is not None:
                continue  # its load checks it anyway
            if proj.engine is None:
                await self.open_project(proj.root, paused=proj.paused)
                continue
            try:
                fresh = await asyncio.to_thread(Index.load, proj.root)
            except (NotAProject, OSError) as exc:
                proj.error = str(exc)
                continue
            proj.error = None
            proj.engine.index = fresh
            proj.replan()
            before = len(proj.queue)
            self.check_runs(proj, list(proj.plan.values()), trigger="files changed")
            out[proj.root] = len(proj.queue) - before
        self.schedule_jobs()
        return out

    async def _health_loop(self) -> None:
        """Ping systemd's watchdog only while the loop turns and the observer lives."""
        interval = notify.watchdog_interval() or 5.0
        while True:
            await asyncio.sleep(interval)
            if self.watcher.healthy():
                notify.watchdog_ping()
            else:
                log.error("watch observer died; not pinging the watchdog")
            for proj in self.projects.values():
                # A root moved away sends no event (inotify's IN_MOVE_SELF is not passed on).
                if proj.engine is not None and not proj.error and not os.path.isdir(proj.root):
                    proj.error = (f"project folder {proj.root} is gone (deleted or moved); "
                                  "it is kept registered")
                    log.error("project folder missing", project=proj.root)
            if self.quiet():
                self.save_snapshots()
            notify.status(self.status_line())

    # ------------------------------------------------------------------ snapshots

    def save_snapshots(self, *, force: bool = False) -> None:
        """Write each loaded project's index snapshot (:mod:`thotd.engine.snapshot`), from
        which the next start checks only what moved. Only when the daemon has seen every
        event (a file changed but not yet delivered would be taken as known) and no hash is
        pending (a run waiting for one is neither queued nor clean). ``force`` (at a stop)
        skips the time between writes; a write costs ~0.2 s of the loop at 20,000 objects,
        so it is done at most every :data:`SNAPSHOT_EVERY_S` seconds otherwise."""
        watcher = getattr(self, "watcher", None)  # None: start-up failed before it
        if watcher is None or not watcher.quiet() or self._applying or self.hashes.busy():
            return
        now = time.monotonic()
        if not force and now - self._snapshot_at < SNAPSHOT_EVERY_S:
            return
        self._snapshot_at = now
        for proj in self.projects.values():
            engine = proj.engine
            if engine is None or proj.loading is not None:
                continue
            mark = (engine.index.generation, engine.completed)
            if mark == proj.snapshot_mark or engine.index.errors():
                continue  # unchanged; or a broken object's last good version is kept
            stale = {*proj.queue, *proj.running, *proj.untrusted, *proj.cycles}
            stale |= {k for k, p in proj.plan.items() if p.blocked or not engine.autorun(k)}
            # cut off by this very stop, or never run: stale whatever the queue says
            stale |= {k for k in proj.plan if (row := engine.rows.get(k)) is None
                      or row.status in INTERRUPTED or not row.has_record}
            snapshot.save(engine.index, self.store_path.parent, engine=engine, known_stale=stale)
            proj.snapshot_mark = mark

    # ------------------------------------------------------------------ status

    def quiet(self) -> bool:
        if not self.watcher.quiet() or self._applying or self.hashes.busy() or self.loading():
            return False
        for proj in self.projects.values():
            if proj.running:
                return False
            if proj.queue and not proj.paused:
                runnable = [k for k in proj.queue if k in proj.plan and not proj.plan[k].blocked]
                if runnable and self._startable(proj, runnable):
                    return False
        return True

    @staticmethod
    def _startable(proj: Project, keys: list[RunKey]) -> bool:
        """Some of ``keys`` (queued, not blocked) may start some day without a resume: not
        held by a paused container, nor a run above a held one (which waits for it)."""
        if not proj.paused_containers:
            return True
        held = {k[0] for k in keys if proj.held_by(k[0]) is not None}
        return any(k[0] not in held and not any(h.startswith(k[0] + os.sep) for h in held)
                   for k in keys)

    def status_line(self) -> str:
        running = self._in_flight()
        queued = sum(len(p.queue) for p in self.projects.values())
        broken = sum(1 for p in self.projects.values() if p.error)
        text = f"{plural(len(self.projects), 'project')}, {running} running, {queued} queued"
        loading = sum(1 for p in self.projects.values() if p.loading is not None)
        text += f", {loading} loading" if loading else ""
        return text + (f", {broken} degraded" if broken else "")

    def emit(self, kind: str, **data: Any) -> None:
        event = {"event": kind, "time": time.time(), **data}
        self.events.append(event)
        self.subscribers.publish(event)
