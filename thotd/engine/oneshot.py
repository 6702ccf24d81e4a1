"""The one-shot runner behind ``thot run``: evaluate a project bottom-up, or only what is stale.

Scripts run as their own processes (see :mod:`thotd.executor.process`), each waited for by a
thread of its own that reports to one queue; the index, the engine and the SQLite store stay
on the calling thread, so nothing needs a lock. (A thread per run rather than
``concurrent.futures``: runs are few and long, and its import alone costs ~7 ms of every
``thot run``.) With ``jobs > 1`` independent subtrees run side by side; which run may start
is decided by :mod:`thotd.engine.dispatch`, for the daemon too.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

try:  # what queue.SimpleQueue is; queue.py itself (and its heapq) costs ~0.6 ms to import
    from _queue import SimpleQueue
except ImportError:  # pragma: no cover -- CPython always has it
    from queue import SimpleQueue
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from thotd.engine.dispatch import Dispatcher, ReadyQueue, Untrusted, launch, refusal
from thotd.engine.staleness import Engine, Planned
from thotd.slotted import Slotted

if TYPE_CHECKING:
    from thotd.engine.queryserver import QueryServer
    from thotd.engine.trust import TrustPolicy
    from thotd.executor.choose import Executor, Job
    from thotd.executor.forkserver.client import ForkServer
    from thotd.executor.process import ProcResult, RunSpec


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
            try:  # one column short: writing the last one wraps on some terminals
                cols = os.get_terminal_size(self.stream.fileno()).columns - 1
            except (OSError, ValueError):
                cols = 0
            line = f"[{self.done}/{self.total}] {text}"[:cols if cols > 0 else 100]
            self.stream.write("\r\033[K" + line)
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


class _OneShot:
    """One :func:`run_project` call: the plan's pending runs, the ones running, and the
    threads reporting to one queue. Which run starts next is the dispatcher's to say."""

    def __init__(self, engine: Engine, plan: list[Planned], report: Report, progress: Progress, *,
                 changed: bool, jobs: int, timeout_s: float | None, log_cap_bytes: int,
                 trigger: str, forkserver: Callable[[], ForkServer | None] | None,
                 trust: TrustPolicy, executor: Executor | None = None) -> None:
        self.engine = engine
        self.executor = executor
        self.report = report
        self.progress = progress
        self.changed = changed
        self.jobs = max(1, jobs)
        self.timeout_s = timeout_s
        self.log_cap_bytes = log_cap_bytes
        self.trigger = trigger
        self.forkserver = forkserver
        self.trust = trust
        self.pending = ReadyQueue(Dispatcher(plan), (p.key for p in plan))
        self.ran: set[tuple[str, str]] = set()
        self.lock = threading.Lock()  # the index: changed here between runs, read by the query server
        self.server: QueryServer | None = None
        self.server_tried = False
        self.results: SimpleQueue[tuple[int, ProcResult | BaseException]] = SimpleQueue()
        self.running: dict[int, tuple[Planned, list[str], str, str]] = {}
        self.cancel = threading.Event()

    def run(self) -> None:
        try:
            while self.pending:
                after = -1  # a run skipped on the way lets the runs after it through
                while (len(self.running) < self.jobs
                       and (p := self.pending.next_ready(after)) is not None):
                    after = p.order
                    self.pending.start(p.key)
                    self.start(p)
                if self.running:
                    self.collect()
        except BaseException:
            # Ctrl-C (or a bug): stop the scripts still running -- they are in sessions of their
            # own, no terminal signal reaches them -- and record them as killed.
            self.cancel.set()
            self.drain()
            raise
        finally:
            self.progress.close()
            if self.server is not None:
                self.server.close()

    def drain(self) -> None:
        while self.running:
            try:
                self.collect()
            except BaseException:  # noqa: BLE001, S112 - already on the way out
                continue

    def finish(self, p: Planned) -> None:
        self.pending.discard(p.key)
        self.progress.done += 1

    def query_socket(self) -> str | None:
        """The query server's socket, started at the first run. Without it scripts walk the
        disk themselves: slower, the same answers."""
        if self.server is None and not self.server_tried:
            from thotd.engine.queryserver import QueryServer

            self.server_tried = True
            with contextlib.suppress(OSError):
                self.server = QueryServer(self.engine.index, self.lock)
        return self.server.path if self.server is not None else None

    def start(self, p: Planned) -> None:
        """Skip the run, or start it with a thread to wait for it."""
        if p.blocked:
            self.report.outcomes.append(Outcome(p, "blocked", [p.blocked]))
            self.finish(p)
            return
        reasons = self.engine.reasons(p.key) if self.changed else ["full run"]
        if not reasons:
            self.finish(p)
            return
        from thotd.executor.process import run_sync

        def remote_job(spec: RunSpec) -> Job:
            from thotd.executor.choose import Job, association, job_resources

            node = self.engine.index.nodes.get(p.container)
            assoc = association(node.scripts, p.script) if node is not None else None
            return Job(spec, self.engine.index.root, job_resources(assoc), f"{p.container}::{p.script}")

        try:
            run = launch(self.engine, p, reasons, self.trigger, trust=self.trust,
                         started_in=os.getcwd(), query_socket=self.query_socket(),
                         timeout_s=self.timeout_s, log_cap_bytes=self.log_cap_bytes)
        except Untrusted as exc:  # files another account could have written: blocked
            self.report.outcomes.append(Outcome(p, "blocked", [str(exc.refusal)]))
            self.finish(p)
            return
        server = self.forkserver() if self.forkserver is not None else None
        self.progress.show(f"running {os.path.basename(p.script)} in {self.engine.rel(p.container)}")

        remote = self._remote(p)

        def wait_for_it() -> None:
            try:
                if remote is not None:
                    self.results.put((p.order, remote.run_sync(remote_job(run.spec), self.cancel)))
                    return
                self.results.put((p.order, run_sync(run.spec, self.cancel, server)))
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                self.results.put((p.order, exc))

        self.running[p.order] = (p, reasons, run.log, run.record)
        threading.Thread(target=wait_for_it, name=f"thot-run-{p.order}", daemon=True).start()

    def _remote(self, p: Planned) -> Executor | None:
        """The remote executor of ``p``, or None to run it here (none was asked for, or its
        ``_scripts.json`` entry says ``"executor": "local"``)."""
        if self.executor is None:
            return None
        from thotd.executor.choose import association

        node = self.engine.index.nodes.get(p.container)
        assoc = association(node.scripts, p.script) if node is not None else None
        return None if assoc is not None and assoc.get("executor") == "local" else self.executor

    def collect(self) -> None:
        order, res = self.results.get()
        p, reasons, log, record = self.running.pop(order)
        if isinstance(res, BaseException):
            raise res
        with self.lock:
            self.engine.complete(
                p.key, status=res.status, exit_code=res.exit_code, started=res.started,
                finished=res.finished, log=log, record_path=record, reasons=reasons,
                trigger=self.trigger,
            )
        self.ran.add(p.key)
        self.report.outcomes.append(
            Outcome(p, res.status, reasons, res.exit_code, res.duration_s, log, res.message)
        )
        self.finish(p)


def run_project(
    engine: Engine,
    *,
    changed: bool = False,
    jobs: int = 1,
    timeout_s: float | None = None,
    log_cap_bytes: int = 10 * 1024 * 1024,
    progress: Progress | None = None,
    trigger: str = "thot run",
    forkserver: Callable[[], ForkServer | None] | None = None,
    trust: TrustPolicy | None = None,  # whose files may run; by default only yours and root's
    executor: Executor | None = None,  # a remote executor (thot run --executor dask)
) -> Report:
    """Run every autorun script (or, with ``changed``, only the stale ones), bottom-up.

    ``forkserver`` is asked for the fork server as each run starts (so a caller may start
    one only once something runs); Python scripts are forked from it once it is ready (see
    :mod:`thotd.executor.forkserver`); until then, and whenever it refuses, they are exec'd."""
    if trust is None:
        from thotd.engine.trust import TrustPolicy

        trust = TrustPolicy()
    plan = engine.plan()
    report = Report(considered=len(plan))
    progress = progress or Progress(len(plan), enabled=False)
    progress.total = len(plan)
    runs = _OneShot(engine, plan, report, progress, changed=changed, jobs=jobs,
                    timeout_s=timeout_s, log_cap_bytes=log_cap_bytes, trigger=trigger,
                    forkserver=forkserver, trust=trust, executor=executor)
    runs.run()
    if changed:
        # A run stale again right after it ran feeds itself through another run: report the
        # cycle once instead of looping.
        for p, reasons in engine.stale(p for p in engine.plan() if p.key in runs.ran):
            if not p.blocked:
                report.outcomes.append(
                    Outcome(p, "cycle", reasons, message="stale again after it ran: a dependency cycle")
                )
    return report


def dry_run(engine: Engine, *, changed: bool,
            trust: TrustPolicy | None = None) -> dict[str, Any]:
    """What ``thot run --dry-run`` answers, as data: the runs that would run now (stale, or
    every one without ``changed``; blocked ones with why, untrusted files included: the
    same check as a real run, :func:`~thotd.engine.dispatch.refusal`), and the runs that
    *may follow* once those have run -- a run is only known to be stale once the runs
    before it have changed its inputs, as Snakemake's dry run lists jobs whose inputs are
    not made yet."""
    plan = engine.plan()
    would: list[dict[str, Any]] = []
    first: list[Planned] = []
    for p in plan:
        reasons = [p.blocked] if p.blocked else (engine.reasons(p.key) if changed else ["full run"])
        if not reasons:
            continue
        refused = refusal(engine, p, trust) if trust is not None and not p.blocked else None
        blocked = [str(refused)] if refused is not None else ([p.blocked] if p.blocked else [])
        would.append(_dry_row(p, blocked or reasons, blocked=bool(blocked)))
        if not blocked:
            first.append(p)
    follow = _may_follow(engine, plan, first) if changed else []
    return {"would_run": would, "may_follow": follow, "considered": len(plan)}


def _dry_row(p: Planned, reasons: list[str], *, blocked: bool = False) -> dict[str, Any]:
    return {"container": p.container, "script": p.script, "blocked": blocked, "reasons": reasons}


def _may_follow(engine: Engine, plan: list[Planned], first: list[Planned]) -> list[dict[str, Any]]:
    """The runs after ``first`` (in plan order: producers come first) that read where one of
    them, or of the runs found so far, writes: a run's outputs land in its own subtree, and
    only runs at that container or above see them (what ``Engine.forget_clean`` says)."""
    made = engine.producers()
    triggered = list(first)
    out = []
    chosen = {p.key for p in first}
    for p in plan:
        if p.key in chosen or p.blocked:
            continue
        row = engine.rows.get(p.key)
        record = (row.record if row is not None else None) or {}
        found = [why for s in triggered if s.order < p.order and _sees(p.container, s.container)
                 if (why := _reads_from(engine, record, s, made))]
        # what it is known to read says more than what its searches might find
        reasons = [text for known, text in found if known] or [text for _, text in found]
        if reasons:
            out.append(_dry_row(p, list(dict.fromkeys(reasons))))
            triggered.append(p)
            chosen.add(p.key)
    return out


def _sees(container: str, below: str) -> bool:
    """Whether a run at ``container`` sees what a run at ``below`` writes (its subtree)."""
    return below == container or below.startswith(container.rstrip(os.sep) + os.sep)


def _reads_from(engine: Engine, record: dict[str, Any], source: Planned,
                made: dict[str, tuple[str, str]]) -> tuple[bool, str] | None:
    """Why a run with ``record`` may read what ``source`` writes, in words, and whether it is
    known to (it read an output of ``source`` last time); None if it cannot."""
    by = f"{os.path.basename(source.script)} in {engine.rel(source.container)}"
    for oid in record.get("consumed", {}):
        if made.get(oid) == source.key:
            return True, f"it reads {engine.rel(oid)}, made by {by}"
    if record.get("queries"):
        return False, f"its searches may find what {by} makes"
    if any(_sees(source.container, oid) for oid in record.get("consumed", {})):
        return False, f"it reads objects where {by} writes"
    return None


def format_dry_run(plan: dict[str, Any], engine: Engine) -> str:
    """:func:`dry_run`'s answer as text: each run with its reasons, then the counts."""
    lines = []
    for verb, rows in (("would run", plan["would_run"]), ("may follow", plan["may_follow"])):
        for r in rows:
            shown = "blocked" if r["blocked"] else verb
            lines.append(f"{shown}: {engine.rel(r['script'])} in {engine.rel(r['container'])}")
            lines += [f"    because {reason}" for reason in r["reasons"]]
    now = sum(not r["blocked"] for r in plan["would_run"])
    summary = f"{now} of {plan['considered']} runs would run"
    if plan["may_follow"]:
        n = len(plan["may_follow"])
        summary += (f", {n} more may follow if their inputs change "
                    "(their inputs are made by runs above)")
    return "\n".join([*lines, summary])


#: How many problem runs the report shows in full (the rest are counted), and how many of
#: each one's last log lines.
SHOWN_PROBLEMS = 10
TAIL_LINES = 5


def format_report(report: Report, engine: Engine, elapsed: float, *, verbose: bool = False) -> str:
    """What ``thot run`` prints at the end: the runs that did not succeed (why, and the end
    of their logs), then one summary line; a row for every run only with ``verbose`` -- at
    100x100 that is 10,000 lines nobody reads on success."""
    lines: list[str] = []
    shown = report.outcomes if verbose else [o for o in report.outcomes if o.status != "ok"]
    blocked = [o for o in shown if o.status == "blocked"]
    if not verbose:
        shown = [o for o in shown if o.status != "blocked"]
    if shown:
        w = min(max(9, *(len(engine.rel(o.planned.container)) for o in shown)), 50)
        lines.append(f"{'status':8} {'container':{w}} {'script':30} {'time':>7}")
        for n, o in enumerate(shown):
            if n == SHOWN_PROBLEMS and not verbose:
                lines.append(f"... and {len(shown) - n} more (thot run --verbose, or --json)")
                break
            lines += _row(o, engine, w)
    if not verbose:
        lines += _blocked(blocked, engine)
    counts = report.counts()
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing to run"
    lines.append(f"{len(report.outcomes)} of {report.considered} runs: {summary} in {elapsed:.2f}s")
    return "\n".join(lines)


def _row(o: Outcome, engine: Engine, width: int) -> list[str]:
    """One run's row; for a run that did not succeed, why, and the end of its log."""
    from thotd.engine.runlog import tail

    out = [f"{o.status:8} {engine.rel(o.planned.container):{width}} "
           f"{os.path.basename(o.planned.script):30} {o.duration_s:6.2f}s"]
    if o.status != "ok":
        detail = o.message or "; ".join(o.reasons)
        out.append(f"{'':8} └ {detail}" + (f" (log: {o.log})" if o.log else ""))
        if o.status != "blocked":
            out += [f"{'':10} | {line}" for line in tail(o.log, TAIL_LINES)]
    return out


def _blocked(blocked: list[Outcome], engine: Engine) -> list[str]:
    """Blocked runs, one line per cause: an invalid file near the root blocks thousands."""
    causes: dict[str, list[Outcome]] = {}
    for o in blocked:
        causes.setdefault(o.message or "; ".join(o.reasons), []).append(o)
    out = []
    for cause, runs in causes.items():
        first = runs[0].planned
        where = f"{os.path.basename(first.script)} in {engine.rel(first.container)}"
        more = f" and {len(runs) - 1} more" if len(runs) > 1 else ""
        out.append(f"blocked  {where}{more}: {cause}")
    return out
