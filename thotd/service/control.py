"""The daemon's control socket: newline-delimited JSON-RPC 2.0 over a Unix socket (asyncio).

Why this shape: one JSON object per line is trivial to speak from ``socat`` or any language,
and the event loop that owns the daemon's state serves it without threads. The socket is
the only way into the daemon, so it is guarded three times: it lives in the private (0700)
runtime dir, it is created under umask 077 and set to 0600, and each peer's uid is checked
with ``SO_PEERCRED`` (only the daemon's own uid is served; root is not special).

Robustness rules, each covered by a test: a malformed or oversized line gets an error reply
and never affects other clients; a slow or silent client only holds its own connection;
a failing handler becomes a -32603 reply and a log entry, never a crash. Requests on one
connection run concurrently (replies carry their id), up to a per-connection limit that
applies back-pressure to a client that floods.

No client can starve the others (tests/faults/test_starvation.py):

- A connection with no request in flight that has sent no complete request line for
  ``idle_timeout`` seconds is closed, unless its peer is a script this daemon runs (a
  script keeps one connection for all its queries and may compute for hours between
  them; its process carries ``THOTD_QUERY_SOCKET`` naming this socket; a forked script's
  /proc environ is its fork server's, which the daemon starts with that variable too).
- At ``max_connections`` a newcomer is not refused while some connection is idle: the
  longest-idle one is closed for it (other clients' first, scripts' last: a script's
  library reconnects). Only when every connection is busy is the newcomer told
  ``SERVER_BUSY``, which a script's library retries (``Client.call_retrying``).
- Memory is bounded per connection by the line limit (the reader's buffer) and for the
  server by ``large_request_budget``: request lines over ``SMALL_REQUEST`` bytes are held
  (parsed, a dozen times their size) only while that many bytes of them are in flight;
  beyond, they get ``SERVER_BUSY``. Small requests (every ``thotctl`` command) always pass.

Handlers are ``async def handler(params: dict, conn: Connection) -> result``. They raise
``RpcError`` for an error reply. A streaming handler (``subscribe``) calls
``conn.send_notification`` until ``conn.closed`` is set (the client closed its side, went
away, or the server is stopping); ``ClientGone`` raised from ``send_notification`` may
simply propagate.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import os
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from structlog.contextvars import bound_contextvars

from thotd.paths import check_socket_path
from thotd.service.lock import AlreadyRunning, acquire_lock
from thotd.service.rpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_LINE,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    PERMISSION_DENIED,
    PROTOCOL_VERSION,
    SERVER_BUSY,
    RpcError,
)

__all__ = [
    "AlreadyRunning",
    "ClientGone",
    "Connection",
    "ControlServer",
    "Handler",
    "RpcError",
    "acquire_lock",
    "peer_credentials",
]

log = structlog.get_logger("thotd.service.control")

Handler = Callable[[dict[str, Any], "Connection"], Awaitable[Any]]

_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
#: Request lines up to this size never count against the large-request budget.
SMALL_REQUEST = 4096
#: The environment variable that names this socket to the scripts the daemon runs.
SCRIPT_SOCKET_VAR = b"THOTD_QUERY_SOCKET"


def _is_script_of(pid: int | None, socket_path: Path | None) -> bool:
    """Whether process ``pid`` was started by the daemon serving ``socket_path`` (its
    environment names the socket in ``THOTD_QUERY_SOCKET``, as every run's does)."""
    if pid is None or socket_path is None:
        return False
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            environ = fh.read(1 << 20)
    except OSError:
        return False
    wanted = SCRIPT_SOCKET_VAR + b"=" + os.fsencode(socket_path)
    return wanted in environ.split(b"\0")


class ClientGone(ConnectionError):
    """The client closed the connection or stopped reading; stop sending to it."""


def peer_credentials(sock: socket.socket) -> tuple[int, int, int] | None:
    """``(pid, uid, gid)`` of the process at the other end, or None where unsupported.

    ``SO_PEERCRED`` is Linux; elsewhere the socket's 0600 mode in a 0700 directory is the
    guard.
    """
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, option, _CRED.size)
    pid, uid, gid = _CRED.unpack(raw)
    return pid, uid, gid


def _json_default(value: Any) -> Any:
    """Encode the few non-JSON types handlers naturally return."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    dump = getattr(value, "model_dump", None)  # pydantic models
    if callable(dump):
        return dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _encode(message: dict[str, Any]) -> bytes:
    # ensure_ascii: file names that are not valid UTF-8 reach us as lone surrogates, which
    # only survive as \\u escapes.
    return json.dumps(message, separators=(",", ":"), default=_json_default).encode() + b"\n"


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("thotd")
    except PackageNotFoundError:
        return "0+unknown"


def _valid_id(value: Any) -> bool:
    return (
        value is None
        or isinstance(value, str)
        or (isinstance(value, int) and not isinstance(value, bool))
    )


class Connection:
    """One client connection, as seen by handlers."""

    _counter = 0

    def __init__(
        self,
        writer: asyncio.StreamWriter,
        *,
        peer_pid: int | None,
        peer_uid: int | None,
        write_timeout: float,
    ) -> None:
        Connection._counter += 1
        self.id = Connection._counter
        self.peer_pid = peer_pid
        self.peer_uid = peer_uid
        #: Set when the client will send nothing more: it closed (or half-closed) its side,
        #: broke the connection, stopped reading, or the server is stopping.
        self.closed = asyncio.Event()
        self._writer = writer
        #: When it last sent a complete request line or last finished a request.
        self.last_active = time.monotonic()
        self._script: bool | None = None  # peer is a script of ours; looked up once
        self._write_lock = asyncio.Lock()
        self._write_timeout = write_timeout
        self._broken = False
        #: Requests being handled on this connection.
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def idle(self) -> bool:
        """No request of it is in flight."""
        return not self._tasks

    def hang_up(self, code: int, message: str) -> None:
        """Say why (without waiting: the client may not read) and close the connection."""
        self.closed.set()
        self._broken = True
        transport = self._writer.transport
        with contextlib.suppress(Exception):
            transport.write(_encode({"jsonrpc": "2.0", "id": None,
                                     "error": RpcError(code, message).to_dict()}))
        transport.abort()

    async def send_notification(self, method: str, params: Any = None) -> None:
        """Push a notification (no id) to the client; raises ``ClientGone`` once it left."""
        if self.closed.is_set():
            raise ClientGone("client closed the connection")
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await self._write(_encode(message))

    async def _write(self, data: bytes) -> None:
        """Write one line; a client that stops reading for ``write_timeout`` is dropped."""
        async with self._write_lock:
            if self._broken:
                raise ClientGone("connection is broken")
            try:
                self._writer.write(data)
                await asyncio.wait_for(self._writer.drain(), self._write_timeout)
            except (OSError, TimeoutError) as exc:
                self._broken = True
                self.closed.set()
                self._writer.transport.abort()
                raise ClientGone(f"cannot write to client: {exc!r}") from exc

    async def _reply(self, request_id: Any, result: Any) -> None:
        try:
            data = _encode({"jsonrpc": "2.0", "id": request_id, "result": result})
        except (TypeError, ValueError, RecursionError) as exc:
            log.error("rpc result not JSON-encodable", error=str(exc))
            await self._reply_error(
                request_id, INTERNAL_ERROR, "internal error: result is not JSON-encodable"
            )
            return
        with contextlib.suppress(ClientGone):
            await self._write(data)

    async def _reply_error(
        self, request_id: Any, code: int, message: str, data: Any = None
    ) -> None:
        error = RpcError(code, message, data).to_dict()
        try:
            encoded = _encode({"jsonrpc": "2.0", "id": request_id, "error": error})
        except (TypeError, ValueError, RecursionError):
            error.pop("data", None)
            encoded = _encode({"jsonrpc": "2.0", "id": request_id, "error": error})
        with contextlib.suppress(ClientGone):
            await self._write(encoded)


class ControlServer:
    """JSON-RPC server on a Unix socket. ``register`` methods, then ``start``; ``close``."""

    def __init__(
        self,
        *,
        version: str | None = None,
        max_connections: int = 256,
        max_in_flight: int = 32,
        write_timeout: float = 30.0,
        idle_timeout: float = 10.0,
        large_request_budget: int = 8 * MAX_LINE,
    ) -> None:
        self.version = version or _package_version()
        self.max_connections = max_connections
        self.max_in_flight = max_in_flight
        self.write_timeout = write_timeout
        self.idle_timeout = idle_timeout
        self.large_request_budget = large_request_budget
        self._large_in_flight = 0  # bytes of large request lines being handled
        self._sweeper: asyncio.Task[None] | None = None
        self.path: Path | None = None
        self._methods: dict[str, Handler] = {"hello": self._hello}
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None
        self._connections: dict[Connection, asyncio.Task[Any]] = {}
        self._uid = os.geteuid()

    # -- public API ------------------------------------------------------------------------

    def register(self, name: str, handler: Handler) -> None:
        """Expose ``handler`` as method ``name``; names are unique, ``rpc.*`` is reserved."""
        if name.startswith("rpc."):
            raise ValueError(f"method names starting with 'rpc.' are reserved: {name!r}")
        if name in self._methods:
            raise ValueError(f"method {name!r} is already registered")
        self._methods[name] = handler

    @property
    def methods(self) -> list[str]:
        return sorted(self._methods)

    async def start(self, path: Path) -> None:
        """Bind and listen at ``path``. Call only while holding ``acquire_lock``.

        An existing socket file at ``path`` is stale by definition once we hold the lock
        (its owner is gone), so it is removed; anything else at ``path`` is left alone and
        reported.
        """
        path = check_socket_path(Path(path))
        with contextlib.suppress(FileNotFoundError):
            st = path.lstat()
            if not stat.S_ISSOCK(st.st_mode):
                raise FileExistsError(f"{path} exists and is not a socket; not removing it")
            path.unlink()
            log.info("removed stale control socket", path=str(path))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # umask is process-wide: this runs once at start-up, before workers exist.
            old_umask = os.umask(0o077)
            try:
                sock.bind(os.fspath(path))
            finally:
                os.umask(old_umask)
            os.chmod(path, 0o600)
            st = path.lstat()
            self._inode = (st.st_dev, st.st_ino)
            # backlog: asyncio's default (100) is soon full when many clients connect at
            # once, and a client with a timeout then fails with EAGAIN instead of waiting.
            self._server = await asyncio.start_unix_server(
                self._on_connect, sock=sock, limit=MAX_LINE, backlog=socket.SOMAXCONN
            )
        except BaseException:
            sock.close()
            raise
        self.path = path
        self._sweeper = asyncio.create_task(self._sweep_idle())
        log.info("control socket listening", path=str(path))

    async def close(self, grace: float = 1.0) -> None:
        """Stop accepting, let streams end within ``grace`` seconds, then cut, then unlink."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        for conn in self._connections:
            conn.closed.set()
        handlers = [task for conn in self._connections for task in conn._tasks]
        if handlers:
            await asyncio.wait(handlers, timeout=grace)
        connections = list(self._connections.values())
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self._unlink_own_socket()

    # -- internals -------------------------------------------------------------------------

    def _unlink_own_socket(self) -> None:
        """Remove the socket file only if it is still the one we bound."""
        if self.path is None or self._inode is None:
            return
        with contextlib.suppress(FileNotFoundError):
            st = self.path.lstat()
            if (st.st_dev, st.st_ino) == self._inode:
                self.path.unlink()
        self._inode = None

    def _is_script(self, conn: Connection) -> bool:
        if conn._script is None:
            conn._script = _is_script_of(conn.peer_pid, self.path)
        return conn._script

    async def _sweep_idle(self) -> None:
        """Close connections idle for ``idle_timeout`` (scripts' excepted), every so often."""
        while True:
            await asyncio.sleep(max(self.idle_timeout / 4, 0.01))
            cutoff = time.monotonic() - self.idle_timeout
            for conn in list(self._connections):
                if conn.idle and conn.last_active < cutoff and not self._is_script(conn):
                    log.info("control connection closed: idle", idle_s=self.idle_timeout)
                    self._drop(conn, f"closed: no request for {self.idle_timeout:g}s")

    def _drop(self, conn: Connection, message: str) -> None:
        self._connections.pop(conn, None)
        conn.hang_up(SERVER_BUSY, message)

    def _make_room(self) -> bool:
        """At the connection limit, close the longest-idle connection (a script's last);
        False if every connection is busy."""
        idle = [c for c in self._connections if c.idle]
        if not idle:
            return False
        victim = min(idle, key=lambda c: (self._is_script(c), c.last_active))
        log.warning("control connection closed for a newcomer: at the limit",
                    limit=self.max_connections)
        self._drop(victim, f"closed: idle while at the connection limit ({self.max_connections})")
        return True

    async def _hello(self, params: dict[str, Any], conn: Connection) -> dict[str, Any]:
        return {
            "name": "thotd",
            "version": self.version,
            "protocol": PROTOCOL_VERSION,
            "pid": os.getpid(),
            "methods": self.methods,
        }

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        creds = peer_credentials(sock) if sock is not None else None
        pid, uid = (creds[0], creds[1]) if creds else (None, None)
        conn = Connection(writer, peer_pid=pid, peer_uid=uid, write_timeout=self.write_timeout)
        task = asyncio.current_task()
        assert task is not None
        try:
            if uid is not None and uid != self._uid:
                log.warning("control connection refused: wrong uid", peer_uid=uid, peer_pid=pid)
                await conn._reply_error(
                    None,
                    PERMISSION_DENIED,
                    f"permission denied: this thotd serves uid {self._uid} only, not uid {uid}",
                )
                return
            if len(self._connections) >= self.max_connections and not self._make_room():
                log.warning("control connection refused: too many", limit=self.max_connections)
                await conn._reply_error(
                    None, SERVER_BUSY, f"too many connections (limit {self.max_connections})"
                )
                return
            self._connections[conn] = task
            with bound_contextvars(conn=conn.id):
                await self._serve(reader, conn)
        except Exception:
            log.exception("control connection failed")
        finally:
            self._connections.pop(conn, None)
            conn.closed.set()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, conn: Connection) -> None:
        """Read lines and run each request as its own task until the client is done."""
        slots = asyncio.Semaphore(self.max_in_flight)
        tasks = conn._tasks

        def finished(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            slots.release()
            conn.last_active = time.monotonic()

        abort = False
        try:
            while True:
                last = False
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    line, last = exc.partial, True  # EOF; a final unterminated line counts
                except (asyncio.LimitOverrunError, ValueError):
                    abort = True
                    log.warning("control request too long", limit=MAX_LINE)
                    await conn._reply_error(
                        None, INVALID_REQUEST, f"request line longer than {MAX_LINE} bytes"
                    )
                    break
                except OSError:
                    break
                conn.last_active = time.monotonic()
                if line.strip():
                    await slots.acquire()
                    task = asyncio.create_task(self._handle_within_budget(line, conn))
                    tasks.add(task)
                    task.add_done_callback(finished)
                if last:
                    break
            conn.closed.set()
            if abort:
                for task in tasks:
                    task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _handle_within_budget(self, line: bytes, conn: Connection) -> None:
        """Handle ``line``, counting a large one against the server's budget meanwhile."""
        size = len(line) if len(line) > SMALL_REQUEST else 0
        if size and self._large_in_flight + size > self.large_request_budget:
            log.warning("large control request refused: budget spent",
                        budget=self.large_request_budget)
            await conn._reply_error(None, SERVER_BUSY, "too many large requests in flight; "
                                    "retry later")
            return
        self._large_in_flight += size
        try:
            await self._handle_line(line, conn)
        finally:
            self._large_in_flight -= size

    async def _handle_line(self, line: bytes, conn: Connection) -> None:
        """Parse, validate, dispatch one request and reply. Never raises."""
        try:
            request = _parse_request(line)
            handler = self._methods.get(request.method)
            if handler is None:
                raise _Refused(request, METHOD_NOT_FOUND, f"no method {request.method!r}")
        except _Refused as exc:
            if exc.reply:
                await conn._reply_error(exc.request_id, exc.code, exc.message, exc.data)
            return
        with bound_contextvars(rpc_method=request.method):
            try:
                result = await handler(request.params, conn)
            except RpcError as exc:
                if request.has_id:
                    await conn._reply_error(request.id, exc.code, exc.message, exc.data)
                return
            except ClientGone:
                return
            except Exception as exc:
                log.exception("rpc handler failed")
                if request.has_id:
                    await conn._reply_error(
                        request.id,
                        INTERNAL_ERROR,
                        "internal error",
                        {"type": type(exc).__name__, "message": str(exc)},
                    )
                return
        if request.has_id:
            await conn._reply(request.id, result)


@dataclass(frozen=True)
class _Request:
    """A request line that is valid JSON-RPC 2.0; ``has_id`` False for a notification."""

    id: Any
    has_id: bool
    method: str
    params: dict[str, Any]


class _Refused(RpcError):
    """A request answered with an error before any handler runs; ``reply`` is False for a
    notification (no id: JSON-RPC sends it nothing, not even an error)."""

    def __init__(self, request: _Request | None, code: int, message: str,
                 data: Any = None, *, request_id: Any = None) -> None:
        super().__init__(code, message, data)
        self.request_id = request.id if request is not None else request_id
        self.reply = request is None or request.has_id


def _parse_request(line: bytes) -> _Request:
    """The request on ``line``, or :class:`_Refused` saying what is wrong with it."""
    try:
        request = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise _Refused(None, PARSE_ERROR, "parse error", {"detail": str(exc)}) from None
    if isinstance(request, list):
        raise _Refused(None, INVALID_REQUEST, "batch requests are not supported")
    if not isinstance(request, dict):
        raise _Refused(None, INVALID_REQUEST, "a request must be a JSON object")
    request_id = request.get("id")
    if not _valid_id(request_id):
        raise _Refused(None, INVALID_REQUEST, "id must be a string, integer or null")
    if request.get("jsonrpc") != "2.0":
        raise _Refused(None, INVALID_REQUEST, 'jsonrpc must be "2.0"', request_id=request_id)
    method = request.get("method")
    if not isinstance(method, str):
        raise _Refused(None, INVALID_REQUEST, "method must be a string", request_id=request_id)
    params = request.get("params", {})
    parsed = _Request(request_id, "id" in request, method, params if isinstance(params, dict) else {})
    if not isinstance(params, dict):
        raise _Refused(parsed, INVALID_PARAMS, "params must be an object (named parameters)")
    return parsed
