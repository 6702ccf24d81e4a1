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
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thotd.engine import snapshot
from thotd.engine.staleness import Engine, Planned, RunKey

if TYPE_CHECKING:
    from thotd.engine.state import RunRow, Store
    from thotd.service.watch import Batch

__all__ = ["CATCH_UP_SLICE", "Loaded", "Loading", "read_project"]

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
