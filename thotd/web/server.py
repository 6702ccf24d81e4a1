"""The dashboard's HTTP server: aiohttp on the daemon's own loop, pages from Jinja2.

Why aiohttp: its ``AppRunner``/``TCPSite`` serve inside an event loop someone else runs
(the daemon's), with no thread and no second loop, and it brings its own HTTP parser and
test client; Jinja2 autoescapes every value. Both are imported here only, and this module
only when ``[web] enabled`` (docs/decisions.md).

Pages read the daemon through :class:`~thotd.web.source.Source` (the control methods), so
they show what ``thotctl`` shows. Live updates: ``/events`` is a server-sent-event stream
of the daemon's events; ``static/app.js`` refreshes the parts of the page marked
``data-live`` when one arrives (nothing polls while nothing happens).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from thotd.web import files, graph, model
from thotd.web.guard import allowed_hosts, make_guard
from thotd.web.source import Source

HERE = Path(__file__).resolve().parent
SOURCE: web.AppKey[Source] = web.AppKey("source", Source)
STOPPING: web.AppKey[asyncio.Event] = web.AppKey("stopping", asyncio.Event)
#: Children drawn per container in the tree before "N more" (a flat 10k folder stays fast).
TREE_CHILDREN = 500
LOG_TAIL_BYTES = 64 * 1024
#: An SSE comment this often keeps proxies and the browser's timeout from closing the
#: stream; the only timer the dashboard runs, and only while a page is open.
KEEPALIVE_S = 25.0


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["q"] = lambda s: quote(str(s), safe="")
    env.filters["ago"] = _ago
    env.filters["took"] = lambda r: (f"{r['finished'] - r['started']:.1f} s"
                                     if r.get("finished") and r.get("started") else "")
    env.filters["base"] = os.path.basename
    return env


def _ago(t: float | None) -> str:
    if not t:
        return "never"
    s = max(0, time.time() - t)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{int(s // size)} {unit} ago"
    return f"{int(s)} s ago"


class Pages:
    """The route handlers; each asks the source, shapes with :mod:`model`, renders."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.env = _env()

    def html(self, template: str, **values: Any) -> web.Response:
        body = self.env.get_template(template).render(**values)
        return web.Response(text=body, content_type="text/html", charset="utf-8")

    async def project_of(self, path: str) -> tuple[dict[str, Any], str]:
        """The status entry of the watched project holding ``path``; 404 if none."""
        status = await self.source.call("status", {})
        best = None
        for p in status["projects"]:
            root = p["root"]
            if (path == root or path.startswith(root + os.sep)) and (
                    best is None or len(root) > len(best["root"])):
                best = p
        if best is None:
            raise web.HTTPNotFound(text=f"{path} is in no watched project\n")
        return best, best["root"]

    async def states(self, project: dict[str, Any]) -> model.States:
        plan = await self.source.call("plan", {"path": project["root"]})
        return model.states(project, plan["plan"])

    def node(self, root: str, path: str) -> dict[str, Any]:
        found = self.source.objects(root, [path])
        if not found:
            raise web.HTTPNotFound(text=f"{path} is not a valid object of {root}\n")
        return found[0]

    def children(self, root: str, node: str, limit: int) -> tuple[list[dict[str, Any]], int]:
        """The first ``limit`` child containers of ``node``, and how many there are."""
        ids = self.node(root, node).get("children") or []
        return self.source.objects(root, ids[:limit]), len(ids)

    async def assets(self, root: str, node: str) -> list[dict[str, Any]]:
        out = []
        for obj in self.source.objects(root, self.node(root, node).get("assets") or []):
            path = obj.get("file") or ""
            item = {"obj": obj, "path": path, "kind": files.kind(path), "version": None,
                    "rows": None}
            try:
                real = files.inside(path, [root])
                st = os.stat(real)
                item["version"] = f"{st.st_mtime_ns:x}-{st.st_size:x}"
                if item["kind"] == "table":
                    sep = files.TABLE_TYPES[os.path.splitext(real)[1].lower()]
                    item["rows"] = await asyncio.to_thread(files.first_rows, real, sep)
            except (files.Refused, OSError):
                item["kind"] = "missing"
            out.append(item)
        return out

    # ---------------------------------------------------------------- pages

    async def index(self, request: web.Request) -> web.Response:
        status = await self.source.call("status", {})
        projects = [{"p": p, "counts": model.counts(p), "degraded": model.degraded(p),
                     "last_failure": max(p.get("failures") or [{}],
                                         key=lambda f: f.get("finished") or 0) or None}
                    for p in status["projects"]]
        return self.html("index.html", status=status, projects=projects, live="/fragment/projects")

    async def fragment_projects(self, request: web.Request) -> web.Response:
        status = await self.source.call("status", {})
        projects = [{"p": p, "counts": model.counts(p), "degraded": model.degraded(p),
                     "last_failure": max(p.get("failures") or [{}],
                                         key=lambda f: f.get("finished") or 0) or None}
                    for p in status["projects"]]
        return self.html("_projects.html", projects=projects)

    async def project(self, request: web.Request) -> web.Response:
        node = request.query.get("node") or request.query.get("root", "")
        project, root = await self.project_of(node)
        st = await self.states(project)
        tree = await self.tree_items(root, node, st, project)
        plots = [a for a in await self.assets(root, root) if a["kind"] == "image"]
        return self.html("project.html", project=project, root=root, node=node, tree=tree,
                         st=st, plots=plots, rel=model.rel)

    async def tree_items(self, root: str, node: str, st: model.States,
                         project: dict[str, Any]) -> list[dict[str, Any]]:
        kids, total = self.children(root, node, TREE_CHILDREN)
        paused = model.paused(project)
        return [{"obj": k, "state": st.of(k["_id"], bool(k.get("scripts"))),
                 "paused": k["_id"] in paused,
                 "below": st.subtree(k["_id"]), "tail": st.tails.get(k["_id"]),
                 "more": bool(k.get("children"))} for k in kids] + (
            [{"cut": total - len(kids)}] if total > len(kids) else [])

    async def fragment_tree(self, request: web.Request) -> web.Response:
        node = request.query.get("node", "")
        project, root = await self.project_of(node)
        st = await self.states(project)
        return self.html("_tree.html", root=root,
                         tree=await self.tree_items(root, node, st, project),
                         rel=model.rel)

    async def fragment_states(self, request: web.Request) -> web.Response:
        project, _root = await self.project_of(request.query.get("root", ""))
        return web.json_response((await self.states(project)).as_json())

    async def fragment_summary(self, request: web.Request) -> web.Response:
        project, _root = await self.project_of(request.query.get("root", ""))
        return self.html("_summary.html", project=project)

    async def fragment_plots(self, request: web.Request) -> web.Response:
        node = request.query.get("path", "")
        _project, root = await self.project_of(node)
        return self.html("_assets.html", assets=await self.assets(root, node), images_only=True)

    async def container(self, request: web.Request) -> web.Response:
        path = request.query.get("path", "")
        project, root = await self.project_of(path)
        obj = self.node(root, path)
        if "children" not in obj:
            raise web.HTTPNotFound(text=f"{path} is not a container\n")
        own = await asyncio.to_thread(model.own_metadata, path)
        meta = [(k, v, own is not None and k not in own) for k, v in obj.get("metadata", {}).items()]
        why = await self.source.call("why", {"path": path})
        st = await self.states(project)
        return self.html("container.html", obj=obj, root=root, path=path, meta=meta,
                         assets=await self.assets(root, path), why=why, rel=model.rel,
                         state=st.of(path, bool(obj.get("scripts"))), tail=st.tails.get(path),
                         paused_by=model.held_by(project, path))

    async def fragment_assets(self, request: web.Request) -> web.Response:
        path = request.query.get("path", "")
        _project, root = await self.project_of(path)
        return self.html("_assets.html", assets=await self.assets(root, path), images_only=False)

    async def runs(self, request: web.Request) -> web.Response:
        return self.html("runs.html", **await self.runs_data())

    async def runs_data(self) -> dict[str, Any]:
        found = await self.source.call("runs", {"limit": 100})
        status = await self.source.call("status", {})
        # running runs are in the history already (status "running", with their id)
        queued = [dict(q, project=p["root"]) for p in status["projects"] for q in p["queued"]]
        return {"runs": found["runs"], "queued": queued, "rel": model.rel}

    async def fragment_runs(self, request: web.Request) -> web.Response:
        return self.html("_runs.html", **await self.runs_data())

    async def run(self, request: web.Request) -> web.Response:
        entry = await self._entry(request)
        why = await self.source.call("why", {"path": entry["container"]})
        mine = next((r for r in why.get("runs", []) if r["script"] == entry["script"]), None)
        outputs = []
        for out in (mine or {}).get("outputs", []):
            with contextlib.suppress(Exception):
                outputs.append(await self.source.call("why", {"path": out}))
        return self.html("run.html", entry=entry, mine=mine, outputs=outputs,
                         log=await asyncio.to_thread(_tail, entry["log"]), rel=model.rel)

    async def _entry(self, request: web.Request) -> dict[str, Any]:
        try:
            run_id = int(request.query.get("id", ""))
        except ValueError:
            raise web.HTTPBadRequest(text="id must be a number\n") from None
        try:
            entry: dict[str, Any] = await self.source.call("log", {"id": run_id})
        except Exception as exc:
            raise web.HTTPNotFound(text=f"{exc}\n") from None
        return entry

    async def fragment_log(self, request: web.Request) -> web.Response:
        entry = await self._entry(request)
        return self.html("_log.html", entry=entry, log=await asyncio.to_thread(_tail, entry["log"]))

    async def graph_page(self, request: web.Request) -> web.Response:
        node = request.query.get("node") or request.query.get("root", "")
        _project, root = await self.project_of(node)
        data = await self.source.call("graph", {"path": root, "format": "json"})
        svg = graph.render(data["graph"], root, node)
        return self.html("graph.html", root=root, node=node, svg=svg, rel=model.rel)

    async def file(self, request: web.Request) -> web.StreamResponse:
        try:
            real = files.inside(request.query.get("path", ""), self.source.roots())
        except files.Refused as exc:
            return web.Response(status=403, text=f"403 forbidden: {exc}\n")
        return web.FileResponse(real, headers=files.headers(real))

    async def action(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ("rerun", "pause", "resume"):
            raise web.HTTPNotFound()
        form = await request.post()
        path = str(form.get("path") or "")
        if path:
            await self.project_of(path)  # only inside a watched project
        try:
            await self.source.call(name, {"path": path} if path else {})
        except Exception as exc:  # the daemon refused (e.g. pause of an asset): its message names why
            raise web.HTTPBadRequest(text=f"400 {name}: {exc}\n") from None
        back = str(form.get("back") or "/")
        if not back.startswith("/") or back.startswith("//"):
            back = "/"
        raise web.HTTPSeeOther(location=back)

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: each daemon event as one ``data:`` line of JSON."""
        stopping = request.app[STOPPING]
        try:
            sub = self.source.subscribe()
        except Exception as exc:  # the daemon's subscriber limit: the browser retries
            raise web.HTTPServiceUnavailable(text=f"{exc}\n") from None
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store",
                                           "X-Content-Type-Options": "nosniff",
                                           "Content-Security-Policy": "default-src 'none'"})
        await resp.prepare(request)
        try:
            await resp.write(b": hello\n\n")
            while not stopping.is_set():
                getter = asyncio.ensure_future(sub.next())
                stop = asyncio.ensure_future(stopping.wait())
                done, _ = await asyncio.wait({getter, stop}, timeout=KEEPALIVE_S,
                                             return_when=asyncio.FIRST_COMPLETED)
                for fut in (getter, stop):
                    if fut not in done:
                        fut.cancel()
                if getter in done:
                    await resp.write(b"data: " + json.dumps(getter.result()).encode() + b"\n\n")
                elif not done:
                    await resp.write(b": keepalive\n\n")
        except ConnectionError:
            pass  # the tab was closed
        finally:
            sub.close()
        return resp


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - LOG_TAIL_BYTES))
            return fh.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(log not readable: {exc.strerror})"


def make_app(source: Source, secret: str, hosts: Any) -> web.Application:
    """The application; ``hosts()`` gives the allowed ``Host`` values (see the guard)."""
    app = web.Application(middlewares=[make_guard(secret, hosts)])  # type: ignore[list-item]
    app[SOURCE] = source
    app[STOPPING] = asyncio.Event()
    pages = Pages(source)
    get = [("/", pages.index), ("/project", pages.project), ("/container", pages.container),
           ("/runs", pages.runs), ("/run", pages.run), ("/graph", pages.graph_page),
           ("/file", pages.file), ("/events", pages.events),
           ("/fragment/projects", pages.fragment_projects), ("/fragment/tree", pages.fragment_tree),
           ("/fragment/states", pages.fragment_states),
           ("/fragment/summary", pages.fragment_summary), ("/fragment/plots", pages.fragment_plots),
           ("/fragment/assets", pages.fragment_assets), ("/fragment/runs", pages.fragment_runs),
           ("/fragment/log", pages.fragment_log)]
    for path, handler in get:
        app.router.add_get(path, handler)
    app.router.add_post("/action/{name}", pages.action)
    app.router.add_static("/static/", HERE / "static", append_version=False)

    async def on_shutdown(app: web.Application) -> None:
        app[STOPPING].set()

    app.on_shutdown.append(on_shutdown)
    return app


class WebServer:
    """The running dashboard: :meth:`start` binds, :meth:`close` ends every stream."""

    def __init__(self, source: Source, host: str, port: int) -> None:
        self.source, self.host, self.port = source, host, port
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, secret: str) -> str:
        """Bind and serve; the URL (with the real port). ``OSError`` if the port is taken."""
        app = make_app(self.source, secret, lambda: allowed_hosts(self.host, self.port))
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                    shutdown_timeout=2.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await self.runner.cleanup()
            self.runner = None
            raise
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.port
        name = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{name}:{self.port}/"
        return self.url

    async def close(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()
