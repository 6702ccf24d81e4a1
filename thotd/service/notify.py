"""The systemd notification protocol (``sd_notify``), without a dependency.

The protocol is one datagram of ``KEY=VALUE`` lines sent to the ``AF_UNIX`` socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` means the Linux abstract namespace). When the variable
is unset the daemon is not under systemd (or not ``Type=notify``) and every call is a no-op.
Sending never raises: a status update must not be able to take the daemon down.
"""

from __future__ import annotations

import os
import socket
import time

NOTIFY_ENV = "NOTIFY_SOCKET"
#: A full receive queue would block ``sendto``; give up rather than stall the event loop.
SEND_TIMEOUT_S = 2.0


def _address() -> str | None:
    value = os.environ.get(NOTIFY_ENV)
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # e.g. "vsock:..." (systemd >= 254): not for a user service


def _clean(value: object) -> str:
    """Values are single-line; a newline would start a bogus assignment."""
    text = "1" if value is True else "0" if value is False else str(value)
    return text.replace("\r", " ").replace("\n", " ")


def encode(**fields: object) -> bytes:
    """The datagram for ``fields``: ``KEY=VALUE`` lines, in the order given."""
    return "".join(f"{key}={_clean(value)}\n" for key, value in fields.items()).encode()


def notify(**fields: object) -> bool:
    """Send ``fields`` to the service manager; True if a datagram was sent.

    ``notify(READY=1, STATUS="watching 3 projects")``. Returns False when not under
    systemd or when sending failed; never raises.
    """
    address = _address()
    if address is None or not fields:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT_S)
            sock.sendto(encode(**fields), address)
        return True
    except Exception:  # by contract: a notification must never fail the caller
        return False


def ready(status: str | None = None) -> bool:
    """Start-up (or reload) finished: ``systemctl start``/``reload`` may return now."""
    if status is None:
        return notify(READY=1)
    return notify(READY=1, STATUS=status)


def status(text: str) -> bool:
    """Free-form state shown by ``systemctl --user status thotd``."""
    return notify(STATUS=text)


def reloading() -> bool:
    """A reload started; ``MONOTONIC_USEC`` lets systemd match it with the next READY=1."""
    return notify(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000)


def stopping() -> bool:
    """Shutdown started, so systemd does not take the delay for a hang."""
    return notify(STOPPING=1)


def watchdog_ping() -> bool:
    """Tell the watchdog we are healthy; call from the loop that checks health."""
    return notify(WATCHDOG=1)


def extend_timeout(seconds: float) -> bool:
    """Ask for more time for the current start/stop/reload (a big catch-up scan, say)."""
    return notify(EXTEND_TIMEOUT_USEC=max(0, int(seconds * 1_000_000)))


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None if not asked.

    The variables are inherited by children, so they only count when ``WATCHDOG_PID`` is
    unset or is our own pid.
    """
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000
