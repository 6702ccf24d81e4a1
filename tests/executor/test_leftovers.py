"""Tests for thotd.executor.leftovers: what a crashed daemon's runs left is found and ended,
and nothing else is.  Real processes in sessions of their own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from thotd.executor.leftovers import PGID_SUFFIX, end_leftovers

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process groups, /proc")

DEADLINE_S = 10.0  # generous: only reached when something is broken


def _own_group_sleeper() -> subprocess.Popen[bytes]:
    """A process in a group of its own, without THOT_RECORD anywhere in its environment."""
    env = {k: v for k, v in os.environ.items() if k != "THOT_RECORD"}
    return subprocess.Popen(["sleep", "100"], start_new_session=True, env=env)


def _start_time(pid: int) -> str:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return data[data.rfind(b")") + 2 :].split()[19].decode()


def test_end_leftovers_ends_the_group_of_a_pgid_file(tmp_path: Path) -> None:
    record = str(tmp_path / "run.log.record")
    proc = _own_group_sleeper()
    try:
        Path(record + PGID_SUFFIX).write_text(f"{proc.pid} {_start_time(proc.pid)}\n")
        assert end_leftovers([record], grace_s=2.0) == 1
        assert proc.wait(DEADLINE_S) == -signal.SIGTERM
        assert not Path(record + PGID_SUFFIX).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("content", ["{pid} 1\n", "{pid}\n", "garbage\n", "1 {start}\n"])
def test_end_leftovers_never_ends_a_reused_pid(tmp_path: Path, content: str) -> None:
    record = str(tmp_path / "run.log.record")
    proc = _own_group_sleeper()
    try:
        Path(record + PGID_SUFFIX).write_text(
            content.format(pid=proc.pid, start=_start_time(proc.pid))
        )
        assert end_leftovers([record], grace_s=0.1) == 0  # another start time: not ours
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_end_leftovers_finds_a_run_by_thot_record_in_its_environment(tmp_path: Path) -> None:
    record = str(tmp_path / "run.log.record")
    env = {**os.environ, "THOT_RECORD": record}
    proc = subprocess.Popen(["sleep", "100"], start_new_session=True, env=env)
    try:
        assert end_leftovers([record + ".other"], grace_s=0.1) == 0
        assert proc.poll() is None
        assert end_leftovers([record], grace_s=2.0) == 1
        assert proc.wait(DEADLINE_S) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
