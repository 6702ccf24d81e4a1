"""Loading a project while the control socket already answers (issue 12, goal 2).

At 30,000 runs reading every object file takes ~20 s, and a daemon that answers nothing
for that long looks dead to ``systemctl start``, to ``thotctl`` and to its watchdog. So the
daemon binds its socket and says READY first, and each project loads in a worker thread:
the index from the snapshot the last run left (:mod:`thotd.engine.snapshot`: one ``stat``
per folder and object file, only what moved is read again), the engine around it, and the
runs that the snapshot cannot vouch for. Meanwhile ``status`` shows a :class:`Loading` with
its progress, batches of file events are kept in it and applied once the project is
loaded, and the control methods that need the project wait for it (``wait`` too: a
loading daemon is not quiet).

The loop keeps only what must be on it: reading the run rows (the SQLite connection
belongs to the loop's thread) and checking the runs that may be stale, in slices so that a
control call never waits for more than one slice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from thotd.engine import snapshot
from thotd.engine.staleness import Engine, Planned, RunKey
from thotd.executor.process import end_leftovers
from thotd.project.index import NotAProject, norm
from thotd.service.registered import Project

if TYPE_CHECKING:
    from thotd.engine.state import RunRow, Store
    from thotd.service.daemon import Daemon
    from thotd.service.watch import Batch

__all__ = ["CATCH_UP_SLICE", "Loaded", "Loading", "open_project", "read_project"]

log = structlog.get_logger("thotd")

#: Runs checked per turn of the loop during a catch-up: ~10-30 ms of work each.
CATCH_UP_SLICE = 200

#: Test hook: seconds the loading thread waits before it reads a project. The tests of the
#: loading phase (status says so, events and calls are kept for after, a kill in the middle)
#: need it to last on any machine: a tree big enough to be slow everywhere would cost the
#: suite minutes and still be a race on a fast machine. Read once per load, never set by
#: the daemon itself.
SLOW_LOAD_VAR = "THOTD_TEST_SLOW_LOAD_S"


@dataclass
class Loading:
    """A project being loaded, or a batch being applied to its index in a worker thread
    (``index_busy``): how far it is, and the batches that arrived meanwhile."""

    progress: snapshot.Progress = field(default_factory=snapshot.Progress)
    started: float = field(default_factory=time.monotonic)
    pending: list[Batch] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    checked: int = 0  # runs checked so far by the catch-up
    to_check: int | None = None  # runs the catch-up must check (None before it starts)
    claimed: bool = False  # a load is under way (a second caller waits for it)
    # A worker thread is changing the project's index (a batch being applied): nothing on
    # the loop may read it meanwhile. The checks asked for meanwhile are done after.
    index_busy: bool = False
    recheck: list[tuple[list[Planned], str]] = field(default_factory=list)

    def status(self) -> dict[str, Any]:
        """For ``thotctl status``: the phase, objects done of total, runs checked of total."""
        p = self.progress
        return {"phase": p.phase, "objects": p.objects, "total": p.total,
                "runs_checked": self.checked, "runs_to_check": self.to_check,
                "pending_batches": len(self.pending),
                "elapsed_s": round(time.monotonic() - self.started, 3)}

    def line(self) -> str:
        """The same in words, one line."""
        p = self.progress
        of = f" of {p.total}" if p.total is not None else ""
        text = f"loading: {p.phase}, {p.objects}{of} objects"
        if self.to_check is not None:
            text += f", {self.checked} of {self.to_check} runs checked"
        return text


@dataclass
class Loaded:
    """What the worker thread hands back: the engine, and the runs to check (those the
    snapshot does not know to be up to date, in plan order)."""

    engine: Engine
    to_check: list[Planned]
    from_snapshot: bool


def read_project(root: str, store: Store, rows: dict[RunKey, RunRow], state_dir: Path,
                 progress: snapshot.Progress) -> Loaded:
    """Worker thread: the index (from the snapshot where it can be), the engine, the plan.
    Raises :class:`~thotd.project.index.NotAProject` or ``OSError`` as a load does."""
    delay = float(os.environ.get(SLOW_LOAD_VAR) or 0)
    if delay > 0:
        progress.phase = f"held by {SLOW_LOAD_VAR} (a test)"
        time.sleep(delay)
    index, changes, runs = snapshot.load(root, state_dir, progress)
    # The daemon's own index keeps a broken object's last good properties (what the
    # snapshot's restore turned off: that one must end exactly where a fresh load would).
    index.keep_last_good = True
    engine = Engine(index, store, rows=rows)
    progress.phase = "planning"
    plan = engine.plan(manual=True)
    clean: dict[str, set[RunKey]] = {}
    if changes is not None and runs:
        progress.phase = "finding the runs a change can reach"
        clean = snapshot.clean_runs(engine, changes, runs)
    # Not handed to the engine: a run it vouches for is simply not checked, and the
    # engine keeps judging every later change for real.
    todo = [p for p in plan if p.key not in clean.get(p.container, ())]
    progress.phase = "checking runs"
    return Loaded(engine, todo, changes is not None)


# ------------------------------------------------------------------ the load, on the loop

async def open_project(daemon: Daemon, root: str, *, paused: bool = False) -> Project:
    """Load a project (or wait for the load under way): watch it, then read it (in a
    worker thread: :func:`read_project`), then check the runs the snapshot
    cannot vouch for; the batches that arrived meanwhile are applied after."""
    root = norm(root)
    proj = daemon.projects.get(root)
    if proj is not None and proj.engine is not None:
        return proj  # already loaded: a second engine would miss the first one's records
    if proj is not None and proj.loading is not None and proj.loading.claimed:
        await proj.loading.done.wait()  # being loaded right now: one load, not two
        return proj
    proj = proj or Project(root=root, paused=paused)
    daemon.projects[root] = proj
    loading = proj.loading = proj.loading or Loading()
    loading.claimed = True
    try:
        await _load(daemon, proj, loading)
    finally:
        proj.loading = None
        loading.done.set()
    if daemon.projects.get(root) is proj and proj.engine is not None:
        for batch in loading.pending:
            daemon.on_batch(root, batch)
    return proj


async def _load(daemon: Daemon, proj: Project, loading: Loading) -> None:
    root = proj.root
    loading.progress.phase = "watching its folders"
    try:
        # Watched before it is read: what changes while it is read is an event.
        await daemon.watcher.add_off_loop(root)
    except OSError as exc:
        proj.error = f"cannot watch: {exc}"
    rows = daemon.store.runs(root)
    try:
        loaded = await asyncio.to_thread(read_project, root, daemon.store, rows,
                                         daemon.store_path.parent, loading.progress)
    except (NotAProject, OSError) as exc:
        proj.error, proj.engine = str(exc), None
        daemon.watcher.remove(root)
        log.error("project cannot load", project=root, error=str(exc))
        return
    if daemon.projects.get(root) is not proj:
        return  # removed while it loaded
    if not (proj.error or "").startswith("cannot watch"):
        proj.error = None  # (a watch that failed stays said: the load worked, it did not)
    proj.engine = loaded.engine
    proj.engine.retention = daemon.config.run_logs.retention()
    proj.engine.hasher.read = False  # no content read on the loop: see OffLoopHashes
    cut = [row.log + ".record" for row in proj.engine.rows.values()
           if row.status == "running" and row.log]
    ended = await asyncio.to_thread(end_leftovers, cut) if cut else 0
    if ended:
        log.warning("ended the processes of runs cut off by the last stop", project=root)
    proj.replan()
    daemon.watch_scripts(proj)
    if not any(p["root"] == root for p in daemon.store.projects()):
        daemon.store.add_project(root)
    if daemon.timetable.running:
        daemon.schedule_jobs()
    index = proj.engine.index
    daemon.emit("project", project=root, state="loaded", objects=len(index.nodes),
              snapshot=loaded.from_snapshot, to_check=len(loaded.to_check))
    with contextlib.suppress(RuntimeError, ValueError):  # said again at its first run
        daemon.executor_for(proj)  # a remote executor connects and checks it sees the project
    await _catch_up(daemon, proj, loading, loaded.to_check)


async def _catch_up(daemon: Daemon, proj: Project, loading: Loading, todo: list[Planned]) -> None:
    """Check the runs that may have gone stale while the daemon was down, a slice per
    turn of the loop (status answers in between)."""
    loading.to_check = len(todo)
    for i in range(0, len(todo), CATCH_UP_SLICE):
        if daemon.projects.get(proj.root) is not proj or proj.engine is None:
            return
        daemon.check_runs(proj, todo[i:i + CATCH_UP_SLICE], trigger="catch-up after start")
        loading.checked = min(len(todo), i + CATCH_UP_SLICE)
        await asyncio.sleep(0)
