"""The daemon's side of the dashboard: starts :mod:`thotd.web` on the daemon's loop and
hands it a :class:`~thotd.web.source.Source` made of the daemon's own control methods.

Kept out of ``daemon.py`` (which only calls :func:`start` and the returned closer) so the
web stack is imported only when ``[web] enabled``. A port that is taken is a warning
naming the port and the config key, never a failed start: the daemon's work matters
more than its page.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from thotd.service.daemon import Daemon
    from thotd.service.fanout import Subscription

log = structlog.get_logger("thotd")


class _Events:
    def __init__(self, daemon: Daemon, sub: Subscription) -> None:
        self._daemon, self._sub = daemon, sub

    async def next(self) -> dict[str, Any]:
        return await self._sub.next()

    def close(self) -> None:
        self._daemon.subscribers.unsubscribe(self._sub)


class DaemonSource:
    """The daemon as :class:`thotd.web.source.Source`: the control socket's own handlers."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self._handlers = daemon.methods(daemon)

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        from thotd.service.rpc import RpcError

        handler = self._handlers.get(method)
        if handler is None or method in ("subscribe", "stop", "add", "remove", "reload", "query_stop"):
            raise RpcError(-32601, f"the dashboard does not call {method!r}")
        return await handler(params, None)  # type: ignore[arg-type]  # no stream method here

    def subscribe(self) -> _Events:
        return _Events(self._daemon, self._daemon.subscribers.subscribe())

    def objects(self, root: str, ids: list[str]) -> list[dict[str, Any]]:
        proj = self._daemon.projects.get(root)
        index = proj.index if proj is not None else None
        if index is None:
            return []
        return [index.view(i) for i in ids if i in index.nodes and index.nodes[i].valid]

    def roots(self) -> list[str]:
        return list(self._daemon.projects)

    @property
    def state_dir(self) -> Path:
        return self._daemon.store_path.parent


def _import_web() -> None:
    import thotd.web.server  # noqa: F401 - aiohttp and Jinja2: ~0.25 s of imports


async def start(daemon: Daemon) -> Callable[[], Awaitable[None]] | None:
    """Serve the dashboard if enabled; the closer to call at shutdown (None if not serving).

    ``daemon.web`` says where it stands ("off", "starting", "serving", "not serving"), so
    ``thotctl web`` can wait for a page that is on its way instead of calling it missing."""
    cfg = daemon.config.web
    if not cfg.enabled:
        daemon.web = "off"
        return None
    daemon.web = "starting"
    # The web stack is imported in a thread: the control socket already listens, and its
    # loop answers (``hello``, ``status``) while aiohttp loads instead of a quarter second later.
    await asyncio.to_thread(_import_web)
    from thotd.web import secret
    from thotd.web.server import WebServer

    source = DaemonSource(daemon)
    server = WebServer(source, cfg.host, cfg.port)
    try:
        url = await server.start(secret.token(source.state_dir) or "")
    except OSError as exc:
        taken = exc.errno == errno.EADDRINUSE
        log.warning("dashboard not started: " + (f"port {cfg.port} is in use" if taken else
                    f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}") +
                    "; set [web] port in the config file (0 picks a free one) or [web] "
                    "enabled = false; the daemon runs on without it",
                    port=cfg.port, key="web.port")
        daemon.web = "not serving"
        return None
    secret.write_address(source.state_dir, url, os.getpid())
    daemon.web = "serving"
    log.info("dashboard ready", url=url, open_with="thotctl web --open")

    async def close() -> None:
        secret.forget_address(source.state_dir)
        await server.close()

    return close
