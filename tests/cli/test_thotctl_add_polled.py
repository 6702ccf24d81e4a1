"""``thotctl add`` itself says when the project it added is polled instead of watched, and
names the limit that was hit (issue 12, goal 7): the person adding it can fix the limit
now, rather than find out from a slow reaction.

The fallback is taken for real, through the documented ``THOTD_MAX_WATCHES`` cap (the
kernel's own limit cannot be lowered for one test). The daemon serves in this process on
a real socket; ``thotctl`` is the real command, in its own process.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from thotd import exits
from thotd.service import watch_limits as limits
from thotd.service.daemon import Daemon


async def _ctl(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "thotd.cli.thotctl", "--socket", str(daemon.socket_path), *args]
    return await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True,
                                   errors="replace", timeout=120)


def test_add_says_the_project_is_polled_and_names_the_cap(
    in_daemon: Callable[..., Any], gs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(limits.CAP_VAR, "3")

    async def body(daemon: Daemon) -> subprocess.CompletedProcess[str]:
        return await _ctl(daemon, "add", str(gs))

    done = in_daemon(body)
    assert done.returncode == exits.OK
    assert f"watching {gs}" in done.stdout  # the data stays on stdout
    assert f"{gs} is polled, not watched" in done.stderr
    assert f"{limits.CAP_VAR}=3" in done.stderr and "fix:" in done.stderr


def test_add_says_nothing_more_when_the_project_is_watched(
    in_daemon: Callable[..., Any], gs: Path
) -> None:
    async def body(daemon: Daemon) -> tuple[subprocess.CompletedProcess[str], Any]:
        done = await _ctl(daemon, "add", str(gs))
        again = await _ctl(daemon, "add", str(gs), "--json")
        return done, json.loads(again.stdout)

    done, data = in_daemon(body)
    assert done.returncode == exits.OK and done.stderr == ""
    assert data["watch"]["mode"] == "inotify"
