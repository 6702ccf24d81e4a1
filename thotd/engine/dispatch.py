"""What runs next: the one readiness rule, and the spec a run starts from.

Two runners start runs: the one-shot ``thot run`` (:mod:`thotd.engine.oneshot`, a thread per
run) and the daemon (an asyncio task per run). They differ in *how* a run executes and in
what they queue; *which* queued run may start is decided here, for both:

    A run waits while any run below its container, or earlier in its own container (by
    priority), is queued or running.

Order needs no recorded edges (see :mod:`thotd.engine.staleness`): a script sees only its
own subtree, so its producers are the runs below it and the earlier runs of its container.
In the plan's order (containers children-first, then priority) those are exactly the runs
from its subtree's first run up to itself, so the rule is one window of the plan, and the
question "is anything pending in it?" is one bisection of the pending orders.

Whether a run may start at all is decided here too, for both: :func:`launch` refuses a run
whose files another account could have written (:mod:`thotd.engine.trust`), just before it
would start, and each runner shows the refusal as *blocked*.
"""

from __future__ import annotations

import bisect
import os
import weakref
from collections.abc import Container, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from thotd.project.vocabulary import SCRIPTS_FILE
from thotd.slotted import Slotted

if TYPE_CHECKING:
    from collections.abc import Mapping

    from thotd.engine.staleness import Engine, Planned, RunKey
    from thotd.engine.trust import Refusal, TrustPolicy
    from thotd.executor.process import RunSpec


def subtree_starts(plan: Sequence[Planned]) -> dict[str, int]:
    """For each container with runs, the order of the first run in its subtree (a postorder
    plan lists a subtree's runs together, its container's own last)."""
    starts: dict[str, int] = {}
    for p in plan:
        cur = p.container
        while cur not in starts:  # a container already seen has its ancestors seen too
            starts[cur] = p.order
            parent = os.path.dirname(cur)
            if parent == cur:
                break
            cur = parent
    return starts


class Pending:
    """The queued and running runs of one plan, as plan orders.

    Kept sorted (descending: the one-shot runner finishes runs mostly in plan order, and
    the earliest is then the cheapest to drop), so "any pending order in a window" is one
    bisection. ``strays`` are the containers of pending runs the plan no longer holds (an
    association removed while its run was queued): they hold the runs above them."""

    __slots__ = ("_neg", "strays")

    def __init__(self, orders: Iterable[int] = (), strays: Iterable[str] = ()) -> None:
        self._neg = sorted(-o for o in set(orders))
        self.strays = list(strays)

    def __len__(self) -> int:
        return len(self._neg)

    def __contains__(self, order: object) -> bool:
        if not isinstance(order, int):
            return False
        i = bisect.bisect_left(self._neg, -order)
        return i < len(self._neg) and self._neg[i] == -order

    def add(self, order: int) -> None:
        i = bisect.bisect_left(self._neg, -order)
        if i == len(self._neg) or self._neg[i] != -order:
            self._neg.insert(i, -order)

    def discard(self, order: int) -> None:
        i = bisect.bisect_left(self._neg, -order)
        if i < len(self._neg) and self._neg[i] == -order:
            del self._neg[i]

    def orders(self) -> list[int]:
        """The pending orders, earliest first (a copy)."""
        return [-n for n in reversed(self._neg)]

    def any_in(self, lo: int, hi: int) -> bool:
        """Whether an order ``lo <= order < hi`` is pending."""
        i = bisect.bisect_right(self._neg, -hi)
        return i < len(self._neg) and self._neg[i] <= -lo


class Dispatcher:
    """One plan's run order and the readiness rule over it."""

    def __init__(self, plan: Sequence[Planned]) -> None:
        self.plan = list(plan)
        self.by_key: dict[RunKey, Planned] = {p.key: p for p in self.plan}
        self._at: dict[int, Planned] = {p.order: p for p in self.plan}
        self._starts = subtree_starts(self.plan)
        self.runs_at: dict[str, list[int]] = {}  # container -> its runs' orders, ascending
        for p in self.plan:
            self.runs_at.setdefault(p.container, []).append(p.order)

    def at(self, order: int) -> Planned:
        return self._at[order]

    def pending(self, keys: Iterable[RunKey]) -> Pending:
        """The runs ``keys`` (queued or running) as :class:`Pending`."""
        orders: list[int] = []
        strays: list[str] = []
        for key in keys:
            p = self.by_key.get(key)
            if p is None:
                strays.append(key[0])
            else:
                orders.append(p.order)
        return Pending(orders, strays)

    def ready(self, p: Planned, pending: Pending) -> bool:
        """The readiness rule: nothing pending below ``p``'s container, nor earlier in it."""
        p = self.by_key.get(p.key, p)
        if pending.any_in(self._starts.get(p.container, p.order), p.order):
            return False
        if not pending.strays:
            return True
        prefix = p.container + os.sep
        return not any(c.startswith(prefix) for c in pending.strays)

    def ready_runs(self, pending: Pending, busy: Container[int] = ()) -> Iterator[Planned]:
        """The pending runs that may start, in plan order, skipping the orders in ``busy``
        (already running). Each is judged when it is reached, so a run the caller finishes
        on the way (skipped, up to date) lets the runs after it through in the same pass."""
        for order in pending.orders():
            if order in pending and order not in busy:
                p = self._at[order]
                if self.ready(p, pending):
                    yield p


class ReadyQueue:
    """The pending runs of one plan and, kept up to date as runs come and go, the queued
    ones that may start now: what :meth:`Dispatcher.ready_runs` answers, without a scan of
    the queue per finished run.

    A run leaving can only free runs whose window holds it: the next pending run of its own
    container and the first pending run of each container above it (any later one still
    waits for that first one); a run arriving can only hold those same runs. So
    :meth:`discard` and :meth:`queue` judge at most the tree's depth plus one runs, each
    with :meth:`Dispatcher.ready` (the rule stays there). A pending run is *queued* (starts
    once ready) or *started* (pending, never ready again). Pending runs the plan does not
    hold (strays: an association removed while its run was queued) are rare: a change among
    them judges every queued run again."""

    __slots__ = ("_d", "pending", "_queued", "_ready", "_strays", "_qkeys", "_skeys")

    def __init__(self, dispatcher: Dispatcher, queued: Iterable[RunKey] = ()) -> None:
        self._d = dispatcher
        self.pending = Pending()
        self._queued: set[int] = set()  # pending and not started
        self._ready: list[int] = []  # the queued orders that may start, ascending
        self._strays: set[RunKey] = set()
        self._qkeys: set[RunKey] = set(queued)  # the same runs as keys, for sync()
        self._skeys: set[RunKey] = set()
        for key in self._qkeys:
            p = dispatcher.by_key.get(key)
            if p is None:
                self._strays.add(key)
            else:
                self.pending.add(p.order)
                self._queued.add(p.order)
        self._judge_all()

    def __len__(self) -> int:
        return len(self.pending) + len(self._strays)

    def __contains__(self, key: RunKey) -> bool:
        p = self._d.by_key.get(key)
        return key in self._strays if p is None else p.order in self.pending

    @property
    def strays(self) -> set[RunKey]:
        """The pending runs the plan does not hold (a copy)."""
        return set(self._strays)

    def next_ready(self, after: int = -1) -> Planned | None:
        """The first run that may start now, after plan order ``after``."""
        i = bisect.bisect_right(self._ready, after)
        return self._d.at(self._ready[i]) if i < len(self._ready) else None

    def sync(self, queued: Iterable[RunKey], started: Iterable[RunKey]) -> set[RunKey]:
        """Make the pending runs exactly ``queued`` and ``started`` (a run in both has
        started), applying only the difference: a caller whose queue changes in many places
        hands it over whole. Returns the runs newly queued."""
        now_started = set(started)
        now_queued = set(queued) - now_started
        for key in (self._qkeys | self._skeys) - now_queued - now_started:
            self.discard(key)
        for key in now_started - self._skeys:
            self.start(key)
        fresh = now_queued - self._qkeys
        for key in fresh:
            self.queue(key)
        return fresh

    def update(self, keys: Iterable[RunKey], queued: Container[RunKey],
               started: Container[RunKey]) -> set[RunKey]:
        """:meth:`sync` for the runs ``keys`` only (those that moved in ``queued`` or
        ``started`` since the last call): a pass costs what moved, not the queue. Returns
        the runs newly queued."""
        fresh: set[RunKey] = set()
        for key in keys:
            if key in started:
                if key not in self._skeys:
                    self.start(key)
            elif key in queued:
                if key not in self._qkeys:
                    self.queue(key)
                    fresh.add(key)
            elif key in self._qkeys or key in self._skeys:
                self.discard(key)
        return fresh

    def queue(self, key: RunKey) -> None:
        """``key`` waits to start (again, once it has finished)."""
        self._qkeys.add(key)
        self._skeys.discard(key)
        p = self._d.by_key.get(key)
        if p is None:
            if key not in self._strays:
                self._strays.add(key)
                self._judge_all()
            return
        if p.order not in self.pending:
            self.pending.add(p.order)
            self._judge_around(p)
        self._queued.add(p.order)
        self._judge(p.order)

    def start(self, key: RunKey) -> None:
        """``key`` started: still pending (it holds the runs after it), no longer ready."""
        self.queue(key)  # pending (a stray holds the runs above it, queued or running)
        self._qkeys.discard(key)
        self._skeys.add(key)
        p = self._d.by_key.get(key)
        if p is not None:
            self._queued.discard(p.order)
            self._unready(p.order)

    def discard(self, key: RunKey) -> None:
        """``key`` finished, or left the queue: the runs it held may start."""
        self._qkeys.discard(key)
        self._skeys.discard(key)
        p = self._d.by_key.get(key)
        if p is None:
            if key in self._strays:
                self._strays.discard(key)
                self._judge_all()
            return
        if p.order in self.pending:
            self.pending.discard(p.order)
            self._queued.discard(p.order)
            self._unready(p.order)
            self._judge_around(p)

    def _judge_around(self, p: Planned) -> None:
        """Judge again the runs whose window holds ``p``'s order (see the class)."""
        runs = self._d.runs_at.get(p.container, [])
        self._judge_first(runs[bisect.bisect_right(runs, p.order):])
        cur = p.container
        while (parent := os.path.dirname(cur)) != cur:
            cur = parent
            self._judge_first(self._d.runs_at.get(cur, []))

    def _judge_first(self, orders: Iterable[int]) -> None:
        for order in orders:
            if order in self.pending:
                self._judge(order)
                return

    def _judge_all(self) -> None:
        self.pending.strays = [k[0] for k in self._strays]
        self._ready = []
        for order in sorted(self._queued):
            self._judge(order)

    def _judge(self, order: int) -> None:
        if order in self._queued and self._d.ready(self._d.at(order), self.pending):
            i = bisect.bisect_left(self._ready, order)
            if i == len(self._ready) or self._ready[i] != order:
                self._ready.insert(i, order)
        else:
            self._unready(order)

    def _unready(self, order: int) -> None:
        i = bisect.bisect_left(self._ready, order)
        if i < len(self._ready) and self._ready[i] == order:
            del self._ready[i]


_dispatchers: weakref.WeakKeyDictionary[Engine, tuple[tuple[int, bool], Dispatcher]] = (
    weakref.WeakKeyDictionary()
)


def dispatcher_for(engine: Engine, *, manual: bool = False) -> Dispatcher:
    """The dispatcher of ``engine.plan(manual=manual)``, kept while the plan holds (the
    engine rebuilds its plan only when the index's shape moves)."""
    key = (engine.index.shape, manual)
    cached = _dispatchers.get(engine)
    if cached is None or cached[0] != key:
        cached = (key, Dispatcher(engine.plan(manual=manual)))
        _dispatchers[engine] = cached
    return cached[1]


_ready_queues: weakref.WeakKeyDictionary[Engine, tuple[Dispatcher, ReadyQueue]] = (
    weakref.WeakKeyDictionary()
)


def ready_queue_for(engine: Engine, *, manual: bool = False) -> ReadyQueue:
    """The daemon's :class:`ReadyQueue` of ``engine``, kept while its dispatcher holds (the
    caller hands it its queue with :meth:`~ReadyQueue.sync` before asking)."""
    dispatcher = dispatcher_for(engine, manual=manual)
    cached = _ready_queues.get(engine)
    if cached is None or cached[0] is not dispatcher:
        cached = (dispatcher, ReadyQueue(dispatcher))
        _ready_queues[engine] = cached
    return cached[1]


class Untrusted(Exception):
    """A run :func:`launch` refused: ``refusal`` names the file, its owner and mode, and the
    config line or ``chmod`` that would let it run."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


def refusal(engine: Engine, p: Planned, trust: TrustPolicy) -> Refusal | None:
    """Why ``p`` must not run (its script, the ``_scripts.json`` naming it, or a folder above
    them is not trusted), or ``None``. (The check is loaded with the first run: ``thot run
    --changed`` with nothing to do does not pay for it.)"""
    from thotd.engine.trust import check_run

    return check_run(p.script, os.path.join(p.container, SCRIPTS_FILE), trust,
                     project=engine.index.root)


class Launch(Slotted):
    """A run about to start: its spec and where its log and record go."""

    __slots__ = ("spec", "log", "record")

    def __init__(self, spec: RunSpec, log: str, record: str) -> None:
        self.spec = spec
        self.log = log
        self.record = record


def launch(
    engine: Engine,
    p: Planned,
    reasons: list[str],
    trigger: str,
    *,
    trust: TrustPolicy,
    started_in: str,
    query_socket: str | None,
    timeout_s: float | None,
    log_cap_bytes: int,
    grace_s: float | None = None,
    base_env: Mapping[str, str] | None = None,
) -> Launch:
    """Mark the run started in the engine and build the spec it runs from: the same for
    every runner (the query socket is the runner's: its own server, or the daemon's;
    ``started_in`` is where the runner was started, where a Python script starts).

    Raises :class:`Untrusted`, before anything is marked, when ``trust`` refuses its files.
    """
    from thotd.executor.process import RunSpec, script_cwd, script_env  # lazy: only a run

    refused = refusal(engine, p, trust)
    if refused is not None:
        raise Untrusted(refused)

    log, record = engine.begin(p.key, reasons, trigger)
    extra = engine.env_for(p.key, record)
    if query_socket is not None:
        extra["THOTD_QUERY_SOCKET"] = query_socket
    spec = RunSpec(
        script=Path(p.script), cwd=script_cwd(p.script, p.container, started_in),
        env=script_env(os.environ if base_env is None else base_env, extra),
        log_path=log, timeout_s=timeout_s, log_cap_bytes=log_cap_bytes,
    )
    if grace_s is not None:
        spec.grace_s = grace_s
    return Launch(spec, str(log), record)
