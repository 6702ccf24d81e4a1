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
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from thotd.project.index import norm
from thotd.service.daemon import Daemon, Project
from thotd.service.fanout import TooManySubscribers
from thotd.service.rpc import INVALID_PARAMS, SERVER_BUSY, RpcError

if TYPE_CHECKING:
    from thotd.engine.staleness import Engine
    from thotd.service.control import Connection, Handler

Params = dict[str, Any]

TAIL_LINES = 15


def _tail(path: str | None, lines: int = TAIL_LINES) -> list[str]:
    if not path:
        return []
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 8192))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return data.splitlines()[-lines:]


def _param(params: Params, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if name not in params or params[name] is None:
        if default is ...:
            raise RpcError(INVALID_PARAMS, f"missing parameter {name!r}")
        return default
    value = params[name]
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise RpcError(INVALID_PARAMS, f"parameter {name!r} must be {names}")
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
        "watch": daemon.watcher.status().get(proj.root),
        "queued": [], "running": [], "blocked": [], "invalid": [], "failures": [],
        "objects": 0, "runs": len(proj.plan),
    }
    if proj.engine is None:
        return out
    index = proj.engine.index
    out["objects"] = len(index.nodes)
    out["invalid"] = [e.to_json() for e in index.errors()]
    # Warnings found while loading. Index.warnings() re-reads every object file for typo
    # checks (`thot validate`): ~0.5 s per status call at 20,000 objects, so not here.
    out["warnings"] = sum(len(n.warnings) for n in index.nodes.values())
    out["queued"] = [
        {"container": k[0], "script": k[1], "reasons": r, "trigger": t}
        for k, (r, t) in sorted(proj.queue.items(), key=lambda kv: proj.plan[kv[0]].order if kv[0] in proj.plan else 0)
    ]
    out["running"] = [
        {"container": k[0], "script": k[1], "since": r.started, "log": r.log, "reasons": r.reasons}
        for k, r in proj.running.items()
    ]
    out["blocked"] = [
        {"container": k[0], "script": k[1], "reason": p.blocked}
        for k, p in proj.plan.items() if p.blocked
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
                "tail": _tail(row.log),
            })
    out["counts"] = counts
    return out


# ---------------------------------------------------------------------------- the methods
# Each is ``async (daemon, params) -> result``: a plain function of the daemon's state, so a
# test calls it with a Daemon and a dict, no socket needed. ``METHODS`` is the table the
# control socket serves; :func:`handlers` binds it to one daemon.


async def status(daemon: Daemon, params: Params) -> Any:
    return {
        "pid": os.getpid(), "uptime_s": time.time() - daemon.started,
        "socket": str(daemon.socket_path), "state": str(daemon.store_path),
        "workers": daemon.config.pool.workers, "settle_ms": round(daemon.watcher.settle_s * 1000),
        "quiet": daemon.quiet(), "fork": daemon.fork_status(),
        "summary": daemon.status_line(), "watch_healthy": daemon.watcher.healthy(),
        "projects": [project_status(daemon, p) for p in daemon.projects.values()],
    }


async def add(daemon: Daemon, params: Params) -> Any:
    path = norm(_param(params, "path", str))
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


def _set_paused(daemon: Daemon, params: Params, paused: bool) -> Any:
    targets = _targets(daemon, _param(params, "path", str, None))
    for proj in targets:
        daemon.set_paused(proj, paused)
    return {"paused" if paused else "resumed": [p.root for p in targets]}


async def pause(daemon: Daemon, params: Params) -> Any:
    return _set_paused(daemon, params, True)


async def resume(daemon: Daemon, params: Params) -> Any:
    return _set_paused(daemon, params, False)


async def runs(daemon: Daemon, params: Params) -> Any:
    path = _param(params, "project", str, None)
    limit = _param(params, "limit", int, 50)
    root = _project_for(daemon, path).root if path else None
    return {"runs": daemon.store.history(root, limit=limit)}


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
    return why_info(_loaded(_project_for(daemon, path)), path)


async def plan(daemon: Daemon, params: Params) -> Any:
    out = []
    for proj in _targets(daemon, _param(params, "path", str, None)):
        if proj.engine is None:
            continue
        for p in proj.engine.plan():
            reasons = [p.blocked] if p.blocked else proj.engine.reasons(p.key)
            if reasons:
                out.append({"project": proj.root, "container": p.container, "script": p.script,
                            "blocked": bool(p.blocked), "queued": p.key in proj.queue,
                            "running": p.key in proj.running, "reasons": reasons})
    return {"plan": out}


async def graph(daemon: Daemon, params: Params) -> Any:
    from thotd.engine.explain import graph_data, render_graph

    engine = _loaded(_project_for(daemon, _param(params, "path", str)))
    fmt = _param(params, "format", str, "json")
    data = graph_data(engine)
    return {"graph": data, "text": render_graph(engine, data, fmt)}


async def rerun(daemon: Daemon, params: Params) -> Any:
    path = _param(params, "path", str, None)
    queued = []
    for proj in _targets(daemon, path):
        start = norm(path) if path else proj.root
        for key, p in proj.plan.items():
            inside = key[0] == start or key[0].startswith(start + os.sep) or key[1] == start
            if inside and not p.blocked:
                daemon.enqueue(proj, key, ["rerun requested"], "rerun")
                queued.append({"container": key[0], "script": key[1]})
    return {"queued": queued}


async def wait(daemon: Daemon, params: Params) -> Any:
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
                return {"quiet": True}
        else:
            quiet_since = None
        await asyncio.sleep(0.01)
    return {"quiet": False}


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
