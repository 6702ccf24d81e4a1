"""Who may use the page, and what every answer carries (one aiohttp middleware).

The rules, in the order they are checked (docs/security.md has the threats):

1. ``Host`` must be this server's own loopback address and port: a DNS-rebinding page
   (``evil.example`` resolved to 127.0.0.1) sends its own name and is refused.
2. The token: ``?token=`` once (from ``thotctl web``) becomes an HttpOnly, SameSite=Strict
   cookie and a redirect to the clean URL (the token leaves the address bar and history);
   afterwards the cookie. Anything else: 403. Compared in constant time.
3. Actions (POST) must carry an ``Origin`` equal to this server's: another site's form,
   even one riding the cookie, is refused.
4. Every answer: ``X-Content-Type-Options: nosniff``, a strict CSP (only our own script,
   style and images; nothing inline; no framing), no referrer to other sites
   (``no-referrer`` would make the browser send ``Origin: null`` on our own forms), no
   caching of pages.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from aiohttp import web

log = structlog.get_logger("thotd")

COOKIE = "thotd_token"
Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]

#: The policy of every page: our own script, style and images, nothing inline, no frames,
#: forms only back to us, fetch/SSE only to us.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
#: Served files (an SVG opened on its own included): no script runs, nothing loads.
FILE_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; sandbox"


def allowed_hosts(host: str, port: int) -> set[str]:
    """The ``Host`` values this server answers to: its loopback names with the port."""
    names = {"127.0.0.1", "localhost", "[::1]"}
    if host not in ("127.0.0.1", "localhost", "::1"):
        names.add(host)
    return {f"{name}:{port}" for name in names}


def make_guard(secret: str, hosts: Callable[[], set[str]]) -> object:
    """The middleware; ``hosts()`` is read per request (the port is known after binding)."""
    from aiohttp import web

    def refuse(reason: str) -> web.Response:
        return web.Response(status=403, text=f"403 forbidden: {reason}\n",
                            headers={"X-Content-Type-Options": "nosniff",
                                     "Content-Security-Policy": "default-src 'none'"})

    def same(value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), secret.encode())

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        if host not in hosts():
            return refuse("wrong Host header (open the URL `thotctl web` prints)")
        given = request.query.get("token")
        if given is not None:
            if not same(given):
                return refuse("wrong token")
            clean = request.rel_url.with_query(
                [(k, v) for k, v in request.query.items() if k != "token"])
            answer = web.Response(status=303, headers={"Location": str(clean)})
            answer.set_cookie(COOKIE, secret, httponly=True, samesite="Strict", path="/")
            answer.headers["Referrer-Policy"] = "no-referrer"
            return answer
        if not same(request.cookies.get(COOKIE)):
            return refuse("no valid token: open the URL `thotctl web` prints")
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("Origin")
            if origin != f"http://{host}":
                return refuse("actions must come from this page (Origin)")
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # a 404 or a redirect carries the headers too
            harden(exc.headers)
            raise
        except Exception:
            log.exception("dashboard request failed", path=request.path)
            response = web.Response(status=500, text="500: internal error (the daemon's log "
                                    "has the traceback)\n")
        harden(response.headers)
        return response

    def harden(headers: Any) -> None:
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Content-Security-Policy", PAGE_CSP)
        headers.setdefault("Referrer-Policy", "same-origin")  # no-referrer makes Origin "null"
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Cache-Control", "no-store")

    return guard
