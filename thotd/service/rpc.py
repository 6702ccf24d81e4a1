"""A small synchronous JSON-RPC 2.0 client for the thotd control socket.

``thotctl`` runs once per command, so this module imports only light standard-library
modules (no asyncio): start-up time is most of a ``thotctl status``. It also defines the
protocol constants and ``RpcError``, shared with the asyncio server in ``thotd.service.control``.

Wire format: one JSON object per line (UTF-8, ``\\n``-terminated), requests capped at
``MAX_LINE`` bytes. A streaming method (``subscribe``) sends notifications on the same
connection until its final response arrives; the client leaving ends the stream.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any, NamedTuple

PROTOCOL_VERSION = 1
#: Longest request line the server accepts (without the newline). Real requests are a few
#: hundred bytes; the limit bounds what each connection's reader may buffer.
MAX_LINE = 64 * 1024
#: Longest response line this client accepts; replies (a big ``status``) may exceed requests.
MAX_RESPONSE_LINE = 64 * 1024 * 1024

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: Server-defined codes (the -32000..-32099 range is reserved for them).
PERMISSION_DENIED = -32001
SERVER_BUSY = -32002

#: How long ``call_retrying`` keeps trying a daemon that is too busy to answer.
RETRY_PATIENCE_S = 120.0

START_HINT = "start it with `thotd start` or `systemctl --user start thotd`"


class RpcError(Exception):
    """An error response: ``code``, ``message`` and optional ``data``, as on the wire.

    Handlers in the daemon raise it to send exactly this error; the client raises it when
    the daemon answered with an error.
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` member."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            out["data"] = self.data
        return out

    @classmethod
    def from_dict(cls, error: Any) -> RpcError:
        """Tolerant of malformed error members: the message must reach the user anyway."""
        if not isinstance(error, dict):
            return cls(INTERNAL_ERROR, f"malformed error from thotd: {error!r}")
        code = error.get("code")
        return cls(
            code if isinstance(code, int) else INTERNAL_ERROR,
            str(error.get("message", "unknown error")),
            error.get("data"),
        )


class DaemonNotRunning(ConnectionError):
    """Nothing listens on the socket (missing, or refused: a stale file)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"thotd is not running (no daemon at {path}); {START_HINT}")
        self.path = path


class UntrustedServer(ConnectionError):
    """What answers at the socket path runs as another user: it could be anyone's program
    waiting for our requests (a socket path in a shared folder can be taken first)."""

    def __init__(self, path: str, uid: int, pid: int) -> None:
        me = os.geteuid()
        super().__init__(
            f"refusing to talk to the server at {path}: it runs as {_account(uid)}, not as "
            f"you ({_account(me)}; pid {pid}). Another user may have taken this socket path: "
            "use a socket in a folder only you can write (unset THOTD_SOCKET to use your "
            "runtime folder)"
        )
        self.path, self.uid, self.pid = path, uid, pid


def _account(uid: int) -> str:
    """``alice (uid 1001)``, or just the uid when it has no name here."""
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def peer_uid(sock: socket.socket) -> tuple[int, int] | None:
    """(uid, pid) of the process at the other end of a connected Unix socket, from the
    kernel (``SO_PEERCRED``: what the peer was when it called ``listen``/``connect``, which
    it cannot fake); ``None`` where the platform does not offer it."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, option,
                                                          struct.calcsize("3i")))
    return uid, pid


def check_server_uid(sock: socket.socket, path: str) -> None:
    """Raise ``UntrustedServer`` unless the server runs as this process's user.

    Root talking to root is the same user; a user talking to a root-owned server is not:
    thotd always runs as the user whose projects it watches.
    """
    found = peer_uid(sock)
    if found is None:
        return
    uid, pid = found
    if uid != os.geteuid():
        raise UntrustedServer(path, uid, pid)


class Notification(NamedTuple):
    """A server-to-client message without id, e.g. one event of a ``subscribe`` stream."""

    method: str
    params: Any


class Client:
    """One connection to the daemon, opened on first use.

    ``path=None`` uses ``thotd.paths.socket_path()`` (``$THOTD_SOCKET`` or the runtime
    dir). ``timeout`` bounds each connect/send/receive of ``call``; streams wait forever
    for their next event. Use as a context manager, or call ``close()``.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, timeout: float | None = 10.0):
        if path is None:
            from thotd.paths import socket_path  # platformdirs: only when needed

            path = socket_path()
        self.path = os.fspath(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._next_id = 1

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        """Connect now (``call`` does it lazily); raises ``DaemonNotRunning``."""
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise DaemonNotRunning(self.path) from exc
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR):
                raise DaemonNotRunning(self.path) from exc
            raise
        try:
            check_server_uid(sock, self.path)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._buffer.clear()

    def close(self) -> None:
        """Close the connection; the next call reconnects."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer.clear()

    def call(self, method: str, /, **params: Any) -> Any:
        """Call ``method`` and return its result; raises ``RpcError`` on an error reply."""
        request_id = self._send(method, params, with_id=True)
        try:
            while True:
                message = self._receive()
                if "id" not in message:
                    continue  # a notification from an earlier, abandoned stream
                result = self._match(message, request_id)
                if result is not _NOT_OURS:
                    return result
        except RpcError:
            raise  # a complete reply: the connection is still in step
        except BaseException:
            self.close()  # a half-read reply would poison the next call
            raise

    def call_retrying(self, method: str, /, *, patience: float = RETRY_PATIENCE_S,
                      **params: Any) -> Any:
        """``call``, retried with backoff while the daemon is too busy to take it.

        For idempotent calls (a script's ``query``): a running script must not fail because
        other clients crowd the socket. Retried: ``SERVER_BUSY`` replies, a connection the
        daemon closed or refused (it closes idle ones at its limit), a full listen queue,
        a timeout. Other errors, and the last one after ``patience`` seconds, are raised.
        """
        import random
        import time

        deadline = time.monotonic() + patience
        pause = 0.02
        while True:
            try:
                return self.call(method, **params)
            except RpcError as exc:
                if exc.code != SERVER_BUSY or time.monotonic() >= deadline:
                    raise
            except UntrustedServer:
                raise  # not a load problem: never talk to it
            except (ConnectionError, TimeoutError, BlockingIOError):
                if time.monotonic() >= deadline:
                    raise
            self.close()
            time.sleep(min(pause * random.uniform(0.5, 1.5), max(deadline - time.monotonic(), 0)))
            pause = min(pause * 2, 2.0)

    def notify(self, method: str, /, **params: Any) -> None:
        """Send a JSON-RPC notification: no reply, no error report."""
        self._send(method, params, with_id=False)

    def stream(self, method: str, /, **params: Any) -> Iterator[Notification]:
        """Call a streaming ``method`` and yield its notifications until it ends.

        Stopping the iteration early (``break``, Ctrl-C, ``close()`` on the generator)
        closes the connection, which is how the daemon learns the client left.
        """
        request_id = self._send(method, params, with_id=True)
        assert self._sock is not None
        self._sock.settimeout(None)
        finished = False
        try:
            while True:
                message = self._receive()
                if "id" not in message:
                    if isinstance(message.get("method"), str):
                        yield Notification(message["method"], message.get("params"))
                    continue
                if self._match(message, request_id) is not _NOT_OURS:
                    finished = True
                    return
        finally:
            if finished and self._sock is not None:
                self._sock.settimeout(self.timeout)
            else:
                self.close()

    # -- internals -------------------------------------------------------------------------

    def _send(self, method: str, params: dict[str, Any], *, with_id: bool) -> int | None:
        self.connect()
        assert self._sock is not None
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params:
            request["params"] = params
        request_id = None
        if with_id:
            request_id = self._next_id
            self._next_id += 1
            request["id"] = request_id
        data = json.dumps(request, separators=(",", ":")).encode() + b"\n"
        try:
            self._sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            # The server may have refused us (wrong uid, too many clients) and hung up
            # before reading; its explanation is still waiting in our receive queue.
            self._raise_pending_error()
            self.close()
            raise ConnectionError("thotd closed the connection") from exc
        except TimeoutError:
            self.close()
            raise TimeoutError(f"thotd did not accept the request within {self.timeout}s") from None
        return request_id

    def _raise_pending_error(self) -> None:
        """Raise the error the server sent before closing, if there is one."""
        try:
            message = self._receive()
        except (OSError, ValueError):
            return
        if "error" in message:
            self.close()
            raise RpcError.from_dict(message["error"])

    def _match(self, message: dict[str, Any], request_id: int | None) -> Any:
        """The result if ``message`` answers ``request_id``; raise if it is an error for it."""
        if message.get("id") == request_id:
            if "error" in message:
                raise RpcError.from_dict(message["error"])
            return message.get("result")
        if message.get("id") is None and "error" in message:
            # Errors the server could not tie to a request (refused peer, parse error).
            raise RpcError.from_dict(message["error"])
        return _NOT_OURS

    def _receive(self) -> dict[str, Any]:
        line = self._read_line()
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise ConnectionError(f"thotd sent invalid JSON: {exc}") from None
        if not isinstance(message, dict):
            raise ConnectionError(f"thotd sent a non-object message: {line[:200]!r}")
        return message

    def _read_line(self) -> bytes:
        assert self._sock is not None
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > MAX_RESPONSE_LINE:
                raise ConnectionError(f"thotd sent a line over {MAX_RESPONSE_LINE} bytes")
            start = len(self._buffer)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise TimeoutError(f"no reply from thotd within {self.timeout}s") from None
            except ConnectionResetError as exc:
                raise ConnectionError("thotd closed the connection") from exc
            if not chunk:
                raise ConnectionError("thotd closed the connection")
            self._buffer += chunk


_NOT_OURS: Any = object()
