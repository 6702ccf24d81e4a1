"""The dashboard's token and address files, in the daemon's state folder.

Loopback TCP is open to every local user, so the page needs a secret: 32 random bytes in
``web-token`` (0600, created once, kept across restarts so an open tab survives a restart).
``web.json`` says where the running daemon serves the page (the port may be chosen by the
kernel); ``thotctl web`` reads both. Standard library and leaves only: ``thotctl`` imports it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from thotd.paths import open_private

TOKEN_NAME = "web-token"
ADDRESS_NAME = "web.json"


def token(state_dir: Path, *, create: bool = True) -> str | None:
    """The token (made on first use when ``create``); ``None`` when absent and not made."""
    path = state_dir / TOKEN_NAME
    with contextlib.suppress(FileNotFoundError):
        text = path.read_text("ascii").strip()
        if len(text) >= 32:
            return text
    if not create:
        return None
    value = secrets.token_urlsafe(32)
    _write_private(path, value + "\n")
    return value


def write_address(state_dir: Path, url: str, pid: int) -> None:
    _write_private(state_dir / ADDRESS_NAME, json.dumps({"url": url, "pid": pid}) + "\n")


def read_address(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / ADDRESS_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("url"), str) else None


def forget_address(state_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (state_dir / ADDRESS_NAME).unlink()


def _write_private(path: Path, text: str) -> None:
    """Write through a 0600 temporary file renamed into place: never readable by others,
    never half-written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
