"""What the fork server and its client say to each other, and what both sides must agree on.

One ``SOCK_SEQPACKET`` socketpair; one message is one JSON object in one record, with fds
attached through ``SCM_RIGHTS``.  The client sends a ``hello`` (the exact environment the
server was started with), then ``spawn`` requests (argv, cwd, complete env, limits; the
run's log fd attached).  The server answers ``{"ready": pid}`` once, then per request
``{"id", "pid"}`` (a pidfd attached where the kernel has them) or ``{"id", "refused"}``,
and ``{"pid", "status"}`` when a forked run exits.

Imported by both processes: stdlib only, nothing the server would not load anyway.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MAX_MSG", "close_all", "recv", "send", "startup_vars"]

#: Largest request the server accepts; the environment dominates it.  A bigger one cannot be
#: sent (``EMSGSIZE``) and the run takes the exec path.
MAX_MSG = 1 << 20


def startup_vars(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``env`` that the interpreter reads only while starting up.

    A forked run inherits the server's start-up, so these must be equal in the run's
    environment and the server's: ``PYTHON*`` (hash seed, path, flags, I/O encoding...),
    the locale (``LC_*``, ``LANG``, ``LANGUAGE``: LC_CTYPE is set from them at start and
    stdio encodings follow), and ``HOME`` (``site`` puts the user site-packages on
    ``sys.path`` from it).  ``PYTHONUNBUFFERED`` is the exception: it only decides how the
    standard streams are made, and the child makes them itself from the run's value.
    """
    return {
        k: v
        for k, v in env.items()
        if (k.startswith(("PYTHON", "LC_")) or k in ("LANG", "LANGUAGE", "HOME"))
        and k != "PYTHONUNBUFFERED"
    }


def send(sock: socket.socket, obj: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
    """Send one JSON message (one SEQPACKET record), with ``fds`` attached."""
    data = json.dumps(obj, separators=(",", ":")).encode()
    if fds:
        anc = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, anc)])
    else:
        sock.send(data)


def recv(sock: socket.socket, bufsize: int, maxfds: int) -> tuple[bytes, list[int], bool]:
    """Receive one message: ``(data, fds, truncated)``; ``data == b""`` means EOF.

    Received fds are close-on-exec from the start (``MSG_CMSG_CLOEXEC``): the client's
    process has threads that spawn programs, and an fd inherited by one of them would keep
    a log or a pidfd open in a stranger.
    """
    data, anc, flags, _ = sock.recvmsg(
        bufsize, socket.CMSG_SPACE(maxfds * 4), socket.MSG_CMSG_CLOEXEC
    )
    fds: list[int] = []
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(
                int.from_bytes(payload[i : i + 4], sys.byteorder, signed=True)
                for i in range(0, usable, 4)
            )
    truncated = bool(flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC))
    return data, fds, truncated


def close_all(fds: Sequence[int]) -> None:
    """Close each of ``fds``, ignoring those already closed."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
