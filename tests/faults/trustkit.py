"""Helpers of the trust-boundary cases: other accounts, a tiny project, and the one daemon
harness (:mod:`daemonkit`) set up as these cases need it: in a folder another uid can be
let into, with no folder made in advance and no ``THOTD_SOCKET``, so the daemon creates
(and must protect) every folder and file of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from corekit import wait_for  # noqa: F401 - re-exported for the trust cases
from daemonkit import TAG_VAR, Daemon, rpc  # noqa: F401 - the one harness

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534
PRIVATE_GROUP_USER = "thotd-trust-test"


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root, to give files to another uid")


def private_group_user() -> pwd.struct_passwd:
    """A real second account with its own private group (``useradd`` makes one if missing)."""
    need_root()
    try:
        return pwd.getpwnam(PRIVATE_GROUP_USER)
    except KeyError:
        pass
    tool = shutil.which("useradd")
    if tool is None:
        pytest.skip("useradd is not installed")
    proc = subprocess.run([tool, "--user-group", "--no-create-home", "--shell",
                           "/usr/sbin/nologin", PRIVATE_GROUP_USER],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.skip(f"cannot create a test user: {proc.stderr.strip()}")
    return pwd.getpwnam(PRIVATE_GROUP_USER)


def python_for(uid: int) -> str:
    """An interpreter that ``uid`` may execute (``/root`` is often 0700)."""
    for candidate in (sys.executable, "/usr/bin/python3", shutil.which("python3")):
        if not candidate:
            continue
        try:
            probe = subprocess.run([candidate, "-c", ""], user=uid, group=uid, extra_groups=[],
                                   capture_output=True, timeout=60)
        except PermissionError:
            continue
        if probe.returncode == 0:
            return candidate
    pytest.skip(f"no Python interpreter executable by uid {uid}")


def shared_tmpdir(prefix: str) -> Path:
    """A folder in ``/tmp`` that every account can reach (pytest's tmp_path is 0700)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def make_project(root: Path, script_body: str = "print('ran')\n") -> Path:
    """A one-container Thot project whose root runs ``analysis.py``; returns the root."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "_container.json").write_text(json.dumps({"name": "p"}))
    (root / "_scripts.json").write_text(json.dumps([{"script": "analysis.py"}]))
    (root / "analysis.py").write_text(script_body)
    return root


@contextlib.contextmanager
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A configured, not yet started daemon; its folders do not exist yet, so the daemon
    creates every one of them itself."""
    base = shared_tmpdir("tht-")  # short: the socket path must fit in sun_path
    os.chmod(base, 0o700)
    env = {
        **os.environ,
        "XDG_RUNTIME_DIR": str(base / "run"),
        "XDG_STATE_HOME": str(base / "state"),
        "XDG_CONFIG_HOME": str(base / "cfg"),
        "THOTD_CONFIG": str(base / "config.toml"),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
    }
    for var in ("THOTD_SOCKET", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                "JOURNAL_STREAM", "THOTD_QUERY_SOCKET"):
        env.pop(var, None)
    tag = f"{os.getpid()}-{base.name}"
    env[TAG_VAR] = tag
    (base / "config.toml").write_text("[daemon]\nsettle_ms = 50\n[pool]\nworkers = 1\n")
    d = Daemon(base, env, base / "config.toml", tag)
    try:
        yield d
    finally:
        d.cleanup()
        shutil.rmtree(base, ignore_errors=True)
