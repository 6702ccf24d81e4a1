"""The one-shot runner behind ``thot run``: evaluate a project bottom-up, or only what is stale.

Scripts run as their own processes (see :mod:`thotd.executor.process`), each waited for by a thread of
its own that reports to one queue; the index, the engine and the SQLite store stay on the
calling thread, so nothing needs a lock. (A thread per run rather than
``concurrent.futures``: runs are few and long, and its import alone costs ~7 ms of every
``thot run``.) With
``jobs > 1`` independent subtrees run side by side: a run waits only for the runs in its
container's subtree and for the earlier runs of its own container, which in the postorder
plan are exactly the runs between its subtree's first run and itself.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

try:  # what queue.SimpleQueue is; queue.py itself (and its heapq) costs ~0.6 ms to import
    from _queue import SimpleQueue
except ImportError:  # pragma: no cover -- CPython always has it
    from queue import SimpleQueue  # type: ignore[assignment]
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from thotd.engine.staleness import Engine, Planned
from thotd.slotted import Slotted

if TYPE_CHECKING:
    from thotd.engine.queryserver import QueryServer
    from thotd.executor.forkserver.client import ForkServer
    from thotd.executor.process import ProcResult


class Outcome(Slotted):
    """One run's line in the report (a plain class: ``dataclasses`` costs ~5 ms to import)."""

    __slots__ = ("planned", "status", "reasons", "exit_code", "duration_s", "log", "message")

    def __init__(
        self,
        planned: Planned,
        status: str,  # ok | failed | timeout | error | killed | blocked | cycle
        reasons: list[str],
        exit_code: int | None = None,
        duration_s: float = 0.0,
        log: str | None = None,
        message: str = "",
    ) -> None:
        self.planned = planned
        self.status = status
        self.reasons = reasons
        self.exit_code = exit_code
        self.duration_s = duration_s
        self.log = log
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {
            "container": self.planned.container,
            "script": self.planned.script,
            "status": self.status,
            "exit_code": self.exit_code,
            "duration_s": round(self.duration_s, 3),
            "log": self.log,
            "reasons": self.reasons,
            "message": self.message,
        }


class Report(Slotted):
    """What ``run_project`` did: one :class:`Outcome` per run started or skipped."""

    __slots__ = ("outcomes", "considered")

    def __init__(self, outcomes: list[Outcome] | None = None, considered: int = 0) -> None:
        self.outcomes: list[Outcome] = [] if outcomes is None else outcomes
        self.considered = considered

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status not in ("ok",)]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.status] = out.get(o.status, 0) + 1
        return out


class Progress:
    """One updating line on a terminal; nothing when stderr is not a TTY."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, enabled: bool | None = None) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled

    def show(self, text: str) -> None:
        if self.enabled:
            cols = 100
            line = f"[{self.done}/{self.total}] {text}"[:cols]
            self.stream.write("\r\033[K" + line)
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _subtree_starts(plan: list[Planned]) -> dict[str, int]:
    """For each container with runs, the order of the first run in its subtree."""
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


def run_project(
    engine: Engine,
    *,
    changed: bool = False,
    jobs: int = 1,
    timeout_s: float | None = None,
    log_cap_bytes: int = 10 * 1024 * 1024,
    progress: Progress | None = None,
    trigger: str = "thot run",
    forkserver: ForkServer | None = None,
) -> Report:
    """Run every autorun script (or, with ``changed``, only the stale ones), bottom-up.

    With ``forkserver``, Python scripts are forked from it once it is ready (see
    :mod:`thotd.executor.forkserver`); until then, and whenever it refuses, they are exec'd."""
    plan = engine.plan()
    report = Report(considered=len(plan))
    starts = _subtree_starts(plan)
    done = [False] * len(plan)
    ran: set[tuple[str, str]] = set()
    progress = progress or Progress(len(plan), enabled=False)
    progress.total = len(plan)
    nxt = 0  # plan entries before this index have been started or skipped

    def ready(p: Planned) -> bool:
        first = starts.get(p.container, p.order)
        return all(done[first:p.order])

    def finish(p: Planned) -> None:
        done[p.order] = True
        progress.done += 1

    lock = threading.Lock()  # the index: changed here between runs, read by the query server
    server: QueryServer | None = None
    results: SimpleQueue[tuple[int, ProcResult | BaseException]] = SimpleQueue()
    running: dict[int, tuple[Planned, list[str], str, str]] = {}
    cancel = threading.Event()

    def start(p: Planned) -> None:
        """Skip the run, or start it with a thread to wait for it."""
        nonlocal server
        if p.blocked:
            report.outcomes.append(Outcome(p, "blocked", [p.blocked]))
            finish(p)
            return
        reasons = engine.reasons(p.key) if changed else ["full run"]
        if not reasons:
            finish(p)
            return
        from thotd.executor.process import RunSpec, run_sync, script_cwd, script_env

        if server is None:
            from thotd.engine.queryserver import QueryServer

            # Without it scripts walk the disk themselves: slower, the same answers.
            with contextlib.suppress(OSError):
                server = QueryServer(engine.index, lock)
        log, record = engine.begin(p.key, reasons, trigger)
        extra = engine.env_for(p.key, record)
        if server is not None:
            extra["THOTD_QUERY_SOCKET"] = server.path
        spec = RunSpec(
            script=Path(p.script), cwd=script_cwd(p.script, p.container, os.getcwd()),
            env=script_env(os.environ, extra),
            log_path=log, timeout_s=timeout_s, log_cap_bytes=log_cap_bytes,
        )
        progress.show(f"running {engine.rel(p.script)} in {engine.rel(p.container)}")

        def wait_for_it() -> None:
            try:
                results.put((p.order, run_sync(spec, cancel, forkserver)))
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                results.put((p.order, exc))

        running[p.order] = (p, reasons, str(log), record)
        threading.Thread(target=wait_for_it, name=f"thot-run-{p.order}", daemon=True).start()

    def collect() -> None:
        order, res = results.get()
        p, reasons, log, record = running.pop(order)
        if isinstance(res, BaseException):
            raise res
        with lock:
            engine.complete(
                p.key, status=res.status, exit_code=res.exit_code, started=res.started,
                finished=res.finished, log=log, record_path=record, reasons=reasons,
                trigger=trigger,
            )
        ran.add(p.key)
        report.outcomes.append(
            Outcome(p, res.status, reasons, res.exit_code, res.duration_s, log, res.message)
        )
        finish(p)

    try:
        while True:
            while nxt < len(plan) and done[nxt]:
                nxt += 1
            if nxt == len(plan) and not running:
                break
            for i in range(nxt, len(plan)):
                if len(running) >= max(1, jobs):
                    break
                if not done[i] and i not in running and ready(plan[i]):
                    start(plan[i])
            if running:
                collect()
    except BaseException:
        # Ctrl-C (or a bug): stop the scripts still running -- they are in sessions of their
        # own, no terminal signal reaches them -- and record them as killed.
        cancel.set()
        while running:
            try:
                collect()
            except BaseException:  # noqa: BLE001, S112 - already on the way out
                continue
        raise
    finally:
        progress.close()
        if server is not None:
            server.close()
    if changed:
        # A run stale again right after it ran feeds itself through another run: report the
        # cycle once instead of looping.
        for p, reasons in engine.stale(p for p in engine.plan() if p.key in ran):
            if not p.blocked:
                report.outcomes.append(
                    Outcome(p, "cycle", reasons, message="stale again after it ran: a dependency cycle")
                )
    return report


def format_report(report: Report, engine: Engine, elapsed: float) -> str:
    """The summary table printed at the end of ``thot run``."""
    lines = []
    if report.outcomes:
        w = max(len(engine.rel(o.planned.container)) for o in report.outcomes)
        w = min(max(w, 9), 50)
        lines.append(f"{'status':8} {'container':{w}} {'script':30} {'time':>7}")
        for o in report.outcomes:
            lines.append(
                f"{o.status:8} {engine.rel(o.planned.container):{w}} "
                f"{os.path.basename(o.planned.script):30} {o.duration_s:6.2f}s"
            )
            if o.status not in ("ok",):
                detail = o.message or "; ".join(o.reasons)
                lines.append(f"{'':8} └ {detail}" + (f" (log: {o.log})" if o.log else ""))
    counts = report.counts()
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing to run"
    lines.append(f"{len(report.outcomes)} of {report.considered} runs: {summary} in {elapsed:.2f}s")
    return "\n".join(lines)

