"""Answer scripts' queries from the one-shot runner's index, as the daemon does.

Without it every script of ``thot run`` walks its subtree from disk again; a project summary
at the root re-reads the whole project once per run. Here a thread serves the same
newline-delimited JSON-RPC ``query`` method as the daemon on a private Unix socket, under
the lock that the runner also takes while it changes the index between runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from typing import Any

from thotd.project.index import Index

MAX_LINE = 1 << 20


class QueryServer:
    """A Unix socket in a private temporary folder; one thread per connected script."""

    def __init__(self, index: Index, lock: threading.Lock) -> None:
        self.index = index
        self.lock = lock
        self._dir = _mkdtemp()  # mode 0700
        self.path = os.path.join(self._dir, "q.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.bind(self.path)  # OSError when $TMPDIR makes the path too long
        except OSError:
            self._sock.close()
            self._remove_dir()
            raise
        os.chmod(self.path, 0o600)
        self._sock.listen(64)
        self._thread = threading.Thread(target=self._accept, name="thot-query", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            for line in reader:
                if len(line) > MAX_LINE:
                    return
                conn.sendall(json.dumps(self._handle(line), default=str).encode() + b"\n")

    def _handle(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
            params = req["params"]
            if req.get("method") != "query":
                return _error(req.get("id"), -32601, f"method not found: {req.get('method')!r}")
        except (ValueError, KeyError, TypeError):
            return _error(None, -32600, "invalid request")
        try:
            with self.lock:
                result = self.index.answer(params.get("kind"), params.get("search"), params.get("start", ""))
        except ValueError as exc:
            return _error(req.get("id"), -32602, str(exc))
        return {"jsonrpc": "2.0", "id": req.get("id"), "result": result}

    def close(self) -> None:
        self._sock.close()
        self._remove_dir()

    def _remove_dir(self) -> None:
        """Remove the folder: it holds the socket alone (0700: nobody else writes there)."""
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        try:
            os.rmdir(self._dir)
        except FileNotFoundError:
            pass
        except OSError:  # not empty after all
            import shutil

            shutil.rmtree(self._dir, ignore_errors=True)


def _mkdtemp() -> str:
    """``tempfile.mkdtemp(prefix="thot-run-")`` without importing ``tempfile`` and ``shutil``
    (~3 ms before every ``thot run``'s first script) where ``$TMPDIR`` (or ``/tmp``) is
    usable; tempfile's own search of candidate folders otherwise."""
    env = os.environ
    base = env.get("TMPDIR") or env.get("TEMP") or env.get("TMP") or "/tmp"
    path = os.path.join(os.path.abspath(base), "thot-run-" + os.urandom(6).hex())
    try:
        os.mkdir(path, 0o700)
    except OSError:
        import tempfile

        return tempfile.mkdtemp(prefix="thot-run-")
    return path


def _error(req_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "error": {"code": code, "message": message}}
