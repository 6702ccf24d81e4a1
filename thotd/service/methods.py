"""The control socket's methods: what ``thotctl`` and daemon-run scripts may ask.

One top-level function per method, in the table :data:`METHODS` (doit's commands-as-a-table
shape): each reads or changes :class:`~thotd.service.daemon.Daemon` state on the loop thread
and returns plain JSON, so each can be tested by calling it. Results only ever gain fields
(clients ignore what they do not know).

This module imports the daemon, never the other way round: whoever builds a
:class:`~thotd.service.daemon.Daemon` hands it :func:`handlers`.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from thotd.engine.runlog import tail
from thotd.project.index import norm
from thotd.service.daemon import Daemon
from thotd.service.fanout import TooManySubscribers
from thotd.service.registered import Project
from thotd.service.rpc import INVALID_PARAMS, SERVER_BUSY, RpcError
from thotd.words import plural

if TYPE_CHECKING:
    from thotd.engine.staleness import Engine
    from thotd.service.control import Connection, Handler

Params = dict[str, Any]

TAIL_LINES = 15


#: The integers a parameter may hold: what SQLite stores. A larger ``log`` id raised
#: ``OverflowError`` deep in a query, answered as a bare "internal error".
INT_RANGE = (-(2**63), 2**63 - 1)


def _param(params: Params, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    """The parameter ``name`` of type ``kind`` (``default`` when absent), or an
    ``INVALID_PARAMS`` error that names it: missing, of another type, an integer out of
    :data:`INT_RANGE`, a float that is not finite. ``true`` is not an integer here."""
    if name not in params or params[name] is None:
        if default is ...:
            raise RpcError(INVALID_PARAMS, f"missing parameter {name!r}")
        return default
    value = params[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise RpcError(INVALID_PARAMS, f"parameter {name!r} must be {names}")
    if isinstance(value, int) and not isinstance(value, bool) and not (
        INT_RANGE[0] <= value <= INT_RANGE[1]
    ):
        raise RpcError(INVALID_PARAMS, f"parameter {name!r} is out of range "
                       f"({INT_RANGE[0]} to {INT_RANGE[1]})")
    if isinstance(value, float) and not math.isfinite(value):
        raise RpcError(INVALID_PARAMS, f"parameter {name!r} must be a finite number")
    return value


def _project_for(daemon: Daemon, path: str) -> Project:
    target = norm(path)
    best = None
    for root, proj in daemon.projects.items():
        if (target == root or target.startswith(root + os.sep)) and (
            best is None or len(root) > len(best.root)
        ):
            best = proj
    if best is None:
        raise RpcError(INVALID_PARAMS, f"{target} is in no registered project; add it with `thotctl add`")
    return best


def _targets(daemon: Daemon, path: str | None) -> list[Project]:
    """The project holding ``path``, or every project when no path is given."""
    return [_project_for(daemon, path)] if path else list(daemon.projects.values())


def project_status(daemon: Daemon, proj: Project, *, detail: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "root": proj.root, "paused": proj.paused, "error": proj.error,
        # Paused by path: each with its queued runs held ("held") and whether its folder
        # is still a container of the project ("missing" once removed or renamed)
        "paused_containers": _paused_containers(proj),
        "watch": daemon.watcher.status().get(proj.root),
        # The same keys whether loaded or not (a --json reader never meets a missing one)
        "queued": [], "running": [], "blocked": [], "invalid": [], "failures": [],
        "warnings": [], "unreadable": [], "schedules": [], "counts": {},
        "objects": 0, "runs": len(proj.plan),
        # While it loads: phase, objects done of total, runs checked (thotd.service.loading)
        "loading": proj.loading.status() if proj.loading is not None else None,
    }
    out["queued"] = [
        {"container": k[0], "script": k[1], "reasons": r, "trigger": t,
         "held": proj.held_by(k[0]) is not None}
        for k, (r, t) in sorted(proj.queue.items(), key=lambda kv: proj.plan[kv[0]].order if kv[0] in proj.plan else 0)
    ]
    out["running"] = [
        {"container": k[0], "script": k[1], "since": r.started, "log": r.log, "reasons": r.reasons}
        for k, r in proj.running.items()
    ]
    if proj.engine is None or proj.loading is not None:
        # Not loaded yet, or its index is being changed in a worker thread: not read now.
        # A batch being applied shows what the index said before it.
        busy = proj.loading is not None and proj.loading.index_busy
        if busy and proj.last_status is not None:
            return {**proj.last_status, **{k: out[k] for k in _LIVE}}
        if proj.loading is not None:
            out["objects"] = proj.loading.progress.objects
        return out
    index = proj.engine.index
    out["objects"] = len(index.nodes)
    out["invalid"] = [e.to_json() for e in index.errors()]
    # What the load tolerated (folders skipped, fields of the wrong type kept as written):
    # files the original Thot accepts warn, they do not block. Index.warnings() also
    # re-reads every object file for typo checks (`thot validate`): ~0.5 s per status call
    # at 20,000 objects, so not here.
    out["warnings"] = index.load_warnings()
    # Files a run's record names that are never read (a pipe, a device): fingerprinted by
    # their stat alone (thotd.fingerprint).
    out["unreadable"] = [{"file": f, "why": why}
                         for f, why in sorted(proj.engine.hasher.refused.items())]
    out["blocked"] = [
        {"container": k[0], "script": k[1], "reason": p.blocked}
        for k, p in proj.plan.items() if p.blocked
    ] + [
        # refused by the trust check at their last start: "file" is the one to fix or allow
        {"container": k[0], "script": k[1], "reason": str(r), "file": r.path, "untrusted": True}
        for k, r in proj.untrusted.items() if k in proj.plan and not proj.plan[k].blocked
    ]
    out["schedules"] = []
    for key, p in proj.plan.items():
        if not p.schedule:
            continue
        nxt = daemon.timetable.next_run(proj.root, key)
        out["schedules"].append({"container": key[0], "script": key[1], "schedule": p.schedule,
                                 "next_run": nxt, "error": proj.schedule_errors.get(key)})
    counts: dict[str, int] = {}
    for key, row in proj.engine.rows.items():
        if key not in proj.plan:
            continue
        counts[row.status] = counts.get(row.status, 0) + 1
        if detail and row.status in ("failed", "timeout", "error"):
            out["failures"].append({
                "container": key[0], "script": key[1], "status": row.status,
                "exit_code": row.exit_code, "finished": row.finished, "log": row.log,
                "tail": tail(row.log, TAIL_LINES),
            })
    out["counts"] = counts
    proj.last_status = out
    return out


def _paused_containers(proj: Project) -> list[dict[str, Any]]:
    if not proj.paused_containers:
        return []
    nodes = proj.engine.index.nodes if proj.engine is not None and proj.loading is None else None
    out = []
    for path in sorted(proj.paused_containers):
        held = sum(1 for k in proj.queue if k[0] == path or k[0].startswith(path + os.sep))
        if nodes is not None:
            node = nodes.get(path)
            missing = node is None or node.kind != "container"
        else:
            missing = not os.path.isfile(os.path.join(path, "_container.json"))
        out.append({"container": path, "held": held, "missing": missing})
    return out


#: What a project's status says without its index (see project_status).
_LIVE = ("root", "paused", "paused_containers", "error", "watch", "queued", "running", "runs", "loading")


# ---------------------------------------------------------------------------- the methods
# Each is ``async (daemon, params) -> result``: a plain function of the daemon's state, so a
# test calls it with a Daemon and a dict, no socket needed. ``METHODS`` is the table the
# control socket serves; :func:`handlers` binds it to one daemon.


async def status(daemon: Daemon, params: Params) -> Any:
    projects = [project_status(daemon, p) for p in daemon.projects.values()]
    problems = [problem for proj, st in zip(daemon.projects.values(), projects, strict=True)
                for problem in _problems(proj, st)]
    return {
        "pid": os.getpid(), "uptime_s": time.time() - daemon.started,
        "socket": str(daemon.socket_path), "state": str(daemon.store_path),
        "workers": daemon.config.pool.workers, "settle_ms": round(daemon.watcher.settle_s * 1000),
        "quiet": daemon.quiet(), "fork": daemon.fork_status(), "loading": daemon.loading(),
        "executors": daemon.executors.status(), "web": daemon.web,
        "summary": daemon.status_line(), "watch_healthy": daemon.watcher.healthy(),
        "recovered": daemon.store.recovered,  # the state database was damaged, moved aside
        "healthy": not problems, "problems": problems,
        "projects": projects,
    }


def _problems(proj: Project, st: dict[str, Any]) -> list[dict[str, Any]]:
    """What a person must act on, in one list: ``thotctl status`` exits non-zero on any, so
    cron and scripts can alert without parsing the rest. Each says what it is in ``message``."""
    root = proj.root
    out: list[dict[str, Any]] = []
    if proj.error:
        out.append({"kind": "error", "project": root, "message": f"{root}: {proj.error}"})
    for e in st["invalid"]:
        out.append({"kind": "invalid", "project": root, "file": e["file"],
                    "message": f"invalid {e['file']}: {e['reason']}"})
    waiting = [b["container"] for b in st["blocked"] if not b.get("untrusted")]
    for item in blocked_runs(proj, waiting):
        out.append({"kind": "blocked", "project": root, **item})
    for b in st["blocked"]:
        if b.get("untrusted"):  # refused by the trust check: the reason says what to do
            out.append({"kind": "blocked", "project": root, "file": b["file"], "runs": 1,
                        "message": f"blocked: {b['reason']}"})
    for f in st["failures"]:
        out.append({"kind": f["status"], "project": root, "container": f["container"],
                    "script": f["script"], "log": f["log"],
                    "message": f"{f['status']}: {f['script']} in {f['container']}"})
    return out


def blocked_runs(proj: Project, containers: list[str]) -> list[dict[str, Any]]:
    """The runs of ``containers`` that wait for a fix, counted by the invalid file they wait
    for: ``{"file", "runs", "message"}``, the file the user must fix named first."""
    if not containers:
        return []
    by = proj.engine.index.blocked_by() if proj.engine is not None else {}
    counts: dict[str, int] = {}
    for container in containers:
        err = by.get(container)  # None: blocked for its own name (not UTF-8), not for a file
        file = err.path if err is not None else container
        counts[file] = counts.get(file, 0) + 1
    return [{"file": file, "runs": n, "message": f"{plural(n, 'run')} blocked by {file}"}
            for file, n in sorted(counts.items())]


async def add(daemon: Daemon, params: Params) -> Any:
    path = norm(_param(params, "path", str))
    if not os.path.exists(path):
        raise RpcError(INVALID_PARAMS, f"{path} does not exist")
    if not os.path.isfile(os.path.join(path, "_container.json")):
        raise RpcError(INVALID_PARAMS, f"{path} is not a Thot project: it has no _container.json")
    proj = await daemon.open_project(path)
    if proj.error:
        raise RpcError(INVALID_PARAMS, proj.error)
    return project_status(daemon, proj, detail=False)


async def remove(daemon: Daemon, params: Params) -> Any:
    path = norm(_param(params, "path", str))
    if not await daemon.remove_project(path):
        raise RpcError(INVALID_PARAMS, f"{path} is not registered")
    return {"removed": path}


async def _set_paused(daemon: Daemon, params: Params, paused: bool) -> Any:
    """A project (its root, or every project without a path) or one container of a
    registered project (its folder, with a ``_container.json``)."""
    verb = "paused" if paused else "resumed"
    path = _param(params, "path", str, None)
    if path and norm(path) not in daemon.projects:
        proj, container = await _container_for(daemon, path, paused)
        changed = daemon.set_container_paused(proj, container, paused)
        daemon.emit("pause", project=proj.root, container=container, paused=paused)
        return {verb: [container], "project": proj.root, "container": True,
                "changed": changed, "held_by": proj.held_by(container)}
    targets = _targets(daemon, path)
    for proj in targets:
        daemon.set_paused(proj, paused)
        daemon.emit("pause", project=proj.root, paused=paused)
    return {verb: [p.root for p in targets]}


async def _container_for(daemon: Daemon, path: str, paused: bool) -> tuple[Project, str]:
    """The project and container a pause or resume names; an error naming ``path`` when it
    is in no project, or not one of its containers. A paused entry whose folder is gone
    (removed, renamed) can still be resumed, which drops it."""
    proj = _project_for(daemon, path)
    target = norm(path)
    if not paused and target in proj.paused_containers:
        return proj, target
    await daemon.until_loaded(proj)
    node = proj.engine.index.nodes.get(target) if proj.engine is not None else None
    if node is None and proj.engine is None:  # cannot load: what the folder says
        if os.path.isfile(os.path.join(target, "_container.json")):
            return proj, target
    elif node is not None and node.kind == "container":
        return proj, target
    raise RpcError(INVALID_PARAMS, f"{target} is not a container of project {proj.root}: only "
                   "a project or a container folder (one with a _container.json) can be "
                   + ("paused" if paused else "resumed"))


async def pause(daemon: Daemon, params: Params) -> Any:
    return await _set_paused(daemon, params, True)


async def resume(daemon: Daemon, params: Params) -> Any:
    return await _set_paused(daemon, params, False)


async def runs(daemon: Daemon, params: Params) -> Any:
    """Finished runs, newest first: of the watched projects, or with ``all`` also those of
    ``thot run``, which keeps its history in the same state database. Each run says whether
    the daemon watches its project (``watched``)."""
    path = _param(params, "project", str, None)
    limit = _param(params, "limit", int, 50)
    everything = _param(params, "all", bool, False)
    if path:
        found = daemon.store.history(_history_root(daemon, path, everything), limit=limit)
    elif everything:
        found = daemon.store.history(None, limit=limit)
    else:
        found = [run for root in daemon.projects for run in daemon.store.history(root, limit=limit)]
        found = sorted(found, key=lambda run: run["id"], reverse=True)[:limit]
    return {"runs": [{**run, "watched": run["project"] in daemon.projects} for run in found]}


def _history_root(daemon: Daemon, path: str, everything: bool) -> str:
    """The watched project holding ``path``; with ``all``, else ``path`` itself taken as the
    root of a project only ``thot run`` ran."""
    try:
        return _project_for(daemon, path).root
    except RpcError:
        if everything:
            return norm(path)
        raise


async def log(daemon: Daemon, params: Params) -> Any:
    run_id = _param(params, "id", int)
    entry = daemon.store.history_entry(run_id)
    if entry is None:
        raise RpcError(INVALID_PARAMS, f"no run {run_id}; see `thotctl runs`")
    running = any(
        r.log == entry["log"] for p in daemon.projects.values() for r in p.running.values()
    )
    return {**entry, "running": running}


def _loaded(proj: Project) -> Engine:
    if proj.engine is None:
        raise RpcError(INVALID_PARAMS, proj.error or "project not loaded")
    return proj.engine


async def why(daemon: Daemon, params: Params) -> Any:
    from thotd.engine.explain import why_info

    path = _param(params, "path", str)
    await daemon.until_loaded(_project_for(daemon, path))
    return why_info(_loaded(_project_for(daemon, path)), path)


async def plan(daemon: Daemon, params: Params) -> Any:
    out = []
    for proj in _targets(daemon, _param(params, "path", str, None)):
        await daemon.until_loaded(proj)
        if proj.engine is None:
            continue
        for p in proj.engine.plan():
            untrusted = proj.untrusted.get(p.key)
            blocked = p.blocked or (str(untrusted) if untrusted is not None else None)
            reasons = [blocked] if blocked else proj.engine.reasons(p.key)
            if reasons:
                out.append({"project": proj.root, "container": p.container, "script": p.script,
                            "blocked": bool(blocked), "queued": p.key in proj.queue,
                            "running": p.key in proj.running, "reasons": reasons})
    return {"plan": out}


async def graph(daemon: Daemon, params: Params) -> Any:
    from thotd.engine.explain import graph_data, render_graph

    proj = _project_for(daemon, _param(params, "path", str))
    await daemon.until_loaded(proj)
    engine = _loaded(proj)
    fmt = _param(params, "format", str, "json")
    data = graph_data(engine)
    return {"graph": data, "text": render_graph(engine, data, fmt)}


async def rerun(daemon: Daemon, params: Params) -> Any:
    path = _param(params, "path", str, None)
    queued = []
    for proj in _targets(daemon, path):
        await daemon.until_loaded(proj)  # a rerun asked during loading is done after it
        start = norm(path) if path else proj.root
        for key, p in proj.plan.items():
            inside = key[0] == start or key[0].startswith(start + os.sep) or key[1] == start
            if inside and not p.blocked:
                daemon.enqueue(proj, key, ["rerun requested"], "rerun")
                queued.append({"container": key[0], "script": key[1]})
    return {"queued": queued}


async def wait(daemon: Daemon, params: Params) -> Any:
    """Until nothing is pending, running or settling; ``blocked`` names the runs still queued
    only because an invalid object file waits for a fix (quiet, but not done)."""
    timeout = float(_param(params, "timeout", (int, float), 60))
    deadline = time.monotonic() + timeout
    # Quiet for a whole settle period: events still in the kernel or being paired by
    # watchdog are invisible to the watcher's own count, and get that long to show up.
    hold = max(0.05, daemon.config.daemon.settle_ms / 1000)
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        if daemon.quiet():
            now = time.monotonic()
            quiet_since = quiet_since or now
            if now - quiet_since >= hold:
                return _quiet(daemon)
        else:
            quiet_since = None
        await asyncio.sleep(0.01)
    return {"quiet": False}


def _quiet(daemon: Daemon) -> dict[str, Any]:
    blocked = []
    for proj in daemon.projects.values():
        waiting = [key[0] for key in proj.queue if key in proj.plan and proj.plan[key].blocked]
        blocked += [{"project": proj.root, **item} for item in blocked_runs(proj, waiting)]
    return {"quiet": True, "blocked": blocked} if blocked else {"quiet": True}


async def reload(daemon: Daemon, params: Params) -> Any:
    return await daemon.reload()


async def reconcile(daemon: Daemon, params: Params) -> Any:
    return {"queued": await daemon.reconcile(_param(params, "path", str, None))}


async def stop(daemon: Daemon, params: Params) -> Any:
    # After the reply is on its way: the stop closes this very connection.
    asyncio.get_running_loop().call_soon(daemon.request_stop)
    return {"stopping": True, "pid": os.getpid()}


async def query(daemon: Daemon, params: Params) -> Any:
    """A daemon-run script's find_*: answered from the index, same as a local walk."""
    root = norm(_param(params, "project", str))
    start = norm(_param(params, "start", str))
    kind = _param(params, "kind", str)
    proj = daemon.projects.get(root) or _project_for(daemon, start)
    await daemon.until_loaded(proj)
    if proj.engine is None:
        raise RpcError(INVALID_PARAMS, f"{proj.root} is not loaded: {proj.error}")
    try:
        return proj.engine.index.answer(kind, params.get("search"), start)
    except ValueError as exc:
        raise RpcError(INVALID_PARAMS, str(exc)) from None


async def subscribe(daemon: Daemon, params: Params, conn: Connection) -> Any:
    """Stream daemon events (runs, batches) until the client leaves.

    Takes no parameters, and refuses any: a stream lasts as long as its client, and so
    would whatever it was sent (a bounded number of subscribers, each with a bounded
    backlog: :mod:`thotd.service.fanout`)."""
    if params:
        raise RpcError(INVALID_PARAMS, f"subscribe takes no parameters, got {sorted(params)[:5]}")
    try:
        sub = daemon.subscribers.subscribe()
    except TooManySubscribers as exc:
        raise RpcError(SERVER_BUSY, str(exc)) from None
    try:
        while not conn.closed.is_set():
            getter = asyncio.ensure_future(sub.next())
            closer = asyncio.ensure_future(conn.closed.wait())
            done, _ = await asyncio.wait({getter, closer}, return_when=asyncio.FIRST_COMPLETED)
            for fut in (getter, closer):
                if fut not in done:
                    fut.cancel()
            if getter in done:
                await conn.send_notification("event", getter.result())
    except ConnectionError:
        pass
    finally:
        daemon.subscribers.unsubscribe(sub)
    return {"subscribed": False}


Method = Callable[["Daemon", Params], Awaitable[Any]]
Stream = Callable[["Daemon", Params, "Connection"], Awaitable[Any]]

#: What the control socket serves, by method name. Results only ever gain fields.
METHODS: dict[str, Method] = {
    "status": status, "add": add, "remove": remove, "pause": pause, "resume": resume,
    "runs": runs, "log": log, "why": why, "plan": plan, "graph": graph, "rerun": rerun,
    "wait": wait, "reload": reload, "reconcile": reconcile, "stop": stop, "query": query,
}
#: Methods that talk back on the connection (notifications) until the client leaves.
STREAMS: dict[str, Stream] = {"subscribe": subscribe}


def handlers(daemon: Daemon) -> dict[str, Handler]:
    """The tables bound to ``daemon``, as the control socket's ``(params, conn)`` handlers."""

    def bind(method: Method) -> Handler:
        async def handler(params: Params, conn: Connection) -> Any:
            return await method(daemon, params)

        return handler

    def bind_stream(stream: Stream) -> Handler:
        async def handler(params: Params, conn: Connection) -> Any:
            return await stream(daemon, params, conn)

        return handler

    out = {name: bind(method) for name, method in METHODS.items()}
    out.update({name: bind_stream(stream) for name, stream in STREAMS.items()})
    return out
