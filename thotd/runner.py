"""The one-shot runner behind ``thot run``: evaluate a project bottom-up, or only what is stale.

Scripts run as their own processes (see :mod:`thotd.proc`) in worker threads; the index, the
engine and the SQLite store stay on the calling thread, so nothing needs a lock. With
``jobs > 1`` independent subtrees run side by side: a run waits only for the runs in its
container's subtree and for the earlier runs of its own container, which in the postorder
plan are exactly the runs between its subtree's first run and itself.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from thotd.engine import Engine, Planned
from thotd.proc import ProcResult, RunSpec, run_sync, script_env
from thotd.queryserver import QueryServer


@dataclass
class Outcome:
    planned: Planned
    status: str  # ok | failed | timeout | error | killed | blocked | cycle
    reasons: list[str]
    exit_code: int | None = None
    duration_s: float = 0.0
    log: str | None = None
    message: str = ""

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


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    considered: int = 0

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
        while True:
            if cur not in starts:
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
) -> Report:
    """Run every autorun script (or, with ``changed``, only the stale ones), bottom-up."""
    plan = engine.plan()
    report = Report(considered=len(plan))
    starts = _subtree_starts(plan)
    done = [False] * len(plan)
    ran: set[tuple[str, str]] = set()
    progress = progress or Progress(len(plan), enabled=False)
    progress.total = len(plan)
    running: dict[Future[ProcResult], tuple[Planned, list[str], str, str]] = {}
    nxt = 0  # plan entries before this index have been started or skipped

    def ready(p: Planned) -> bool:
        first = starts.get(p.container, p.order)
        return all(done[first:p.order])

    def finish(p: Planned) -> None:
        done[p.order] = True
        progress.done += 1

    lock = threading.Lock()  # the index: changed here between runs, read by the query server
    try:
        server: QueryServer | None = QueryServer(engine.index, lock)
    except OSError:
        server = None  # scripts then walk the disk themselves: slower, same answers

    def start(p: Planned) -> None:
        """Skip the run, or hand it to a worker thread."""
        if p.blocked:
            report.outcomes.append(Outcome(p, "blocked", [p.blocked]))
            finish(p)
            return
        reasons = engine.reasons(p.key) if changed else ["full run"]
        if not reasons:
            finish(p)
            return
        log, record = engine.begin(p.key, reasons, trigger)
        extra = engine.env_for(p.key, record)
        if server is not None:
            extra["THOTD_QUERY_SOCKET"] = server.path
        spec = RunSpec(
            script=Path(p.script), cwd=Path(p.container),
            env=script_env(os.environ, extra),
            log_path=log, timeout_s=timeout_s, log_cap_bytes=log_cap_bytes,
        )
        progress.show(f"running {engine.rel(p.script)} in {engine.rel(p.container)}")
        running[pool.submit(run_sync, spec)] = (p, reasons, str(log), record)

    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="thot-run") as pool:
            while True:
                while nxt < len(plan) and done[nxt]:
                    nxt += 1
                if nxt == len(plan) and not running:
                    break
                busy = {v[0].order for v in running.values()}
                for i in range(nxt, len(plan)):
                    if len(running) >= max(1, jobs):
                        break
                    if not done[i] and i not in busy and ready(plan[i]):
                        start(plan[i])
                if not running:
                    continue  # runs were skipped; look again from the first unfinished one
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    p, reasons, log, record = running.pop(fut)
                    res = fut.result()
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

