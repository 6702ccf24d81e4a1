"""A registered project's live state in the daemon, and a run in flight.

Kept apart from :mod:`thotd.service.daemon` so the modules that read it (control methods,
hashing, loading) need not import the daemon itself.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from thotd.engine.staleness import Planned, RunKey
from thotd.service.tracked import Tracked

if TYPE_CHECKING:
    from thotd.engine.dispatch import ReadyQueue
    from thotd.engine.staleness import Engine
    from thotd.engine.trust import Refusal
    from thotd.project.index import Index
    from thotd.service.loading import Loading

__all__ = ["Project", "Running"]


@dataclass
class Running:
    key: RunKey
    task: asyncio.Task[Any]
    cancel: asyncio.Event
    started: float
    reasons: list[str]
    log: str


@dataclass
class Project:
    """One registered project: its index and engine (None while it cannot load)."""

    root: str
    engine: Engine | None = None
    error: str | None = None
    paused: bool = False
    # Containers paused by path (``thotctl pause CONTAINER``): their runs, and the runs of
    # the containers under them, stay queued. Kept in the store beside ``paused``.
    paused_containers: set[str] = field(default_factory=set)
    # key -> (reasons, trigger); both remember what moved, for the dispatch pass
    queue: Tracked[RunKey, tuple[list[str], str]] = field(default_factory=Tracked)
    running: Tracked[RunKey, Running] = field(default_factory=Tracked)
    synced: ReadyQueue | None = None  # the ready queue the dispatch pass last told everything
    plan: dict[RunKey, Planned] = field(default_factory=dict)
    planned: list[Planned] | None = None  # the engine's plan list ``plan`` was made from
    scripts: frozenset[str] = frozenset()  # the scripts of ``plan``
    reruns: dict[RunKey, int] = field(default_factory=dict)  # consecutive self-caused reruns
    attempts: dict[RunKey, int] = field(default_factory=dict)  # failures, for retry backoff
    script_dirs: set[str] = field(default_factory=set)  # watched script folders outside the root
    schedule_errors: dict[RunKey, str] = field(default_factory=dict)  # bad crontab lines
    cycles: dict[RunKey, Any] = field(default_factory=dict)  # runs that rewrite their inputs
    untrusted: dict[RunKey, Refusal] = field(default_factory=dict)  # refused at their last start
    loading: Loading | None = None  # set while it loads (see thotd.service.loading)
    snapshot_mark: tuple[int, int] | None = None  # (generation, completed) of the last snapshot
    last_status: dict[str, Any] | None = None  # shown while a batch is applied (methods.py)

    def held_by(self, container: str) -> str | None:
        """The paused container that holds the runs of ``container`` (itself or one above
        it), or None."""
        if not self.paused_containers:
            return None
        for paused in self.paused_containers:
            if container == paused or container.startswith(paused + os.sep):
                return paused
        return None

    @property
    def index(self) -> Index | None:
        return self.engine.index if self.engine else None

    def replan(self) -> bool:
        """Refresh the plan; True when it changed (the engine caches it by index shape)."""
        assert self.engine is not None
        plan = self.engine.plan(manual=True)
        if plan is self.planned:
            return False  # the engine's cached plan: nothing moved (no O(plan) comparison)
        self.planned = plan
        if self.plan and list(self.plan.values()) == plan:
            return False
        self.plan = {p.key: p for p in plan}
        self.scripts = frozenset(p.key[1] for p in plan)
        return True
