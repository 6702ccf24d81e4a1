"""Tests for thotd.executor.processgroup: sessions, the one stop rule, and what /proc says.

Real processes throughout; waits poll a condition against a deadline.  Each child says
"ready" on a pipe once its signal dispositions are set, so no test races its start-up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from corekit import group_dead, wait_for

from thotd.executor.processgroup import (
    escalation,
    fork_and_forget,
    fork_in_new_session,
    group_alive,
    groups_with_env,
    kill_group,
    pid_alive,
    proc_stat,
    spawn,
    start_time,
    stop_groups,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process groups, /proc")

DEADLINE_S = 10.0  # generous: only reached when something is broken

#: A child that ignores SIGTERM (and so do the children it starts: SIG_IGN survives exec).
IGNORES_TERM = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "

#: ... then says ready and sleeps.
READY_AND_SLEEP = "print('ready', flush=True); import time; time.sleep(100)"

#: A child whose own child (the grandchild, pid printed first) sleeps in the same group.
WITH_GRANDCHILD = (
    "import subprocess, sys, time; "
    "p = subprocess.Popen(['sleep', '100']); "
    "print(p.pid, flush=True); " + READY_AND_SLEEP
)


def start(code: str) -> subprocess.Popen[str]:
    """``python -c code`` in a session of its own (see :func:`wait_ready`)."""
    return spawn([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def wait_ready(proc: subprocess.Popen[str]) -> list[str]:
    """The lines the child printed up to "ready"."""
    assert proc.stdout is not None
    lines = []
    while (line := proc.stdout.readline().strip()) != "ready":
        assert line, "the child ended before it was ready"
        lines.append(line)
    return lines


def cleanup(proc: subprocess.Popen[str]) -> None:
    kill_group(proc.pid)
    proc.wait(DEADLINE_S)
    if proc.stdout is not None:
        proc.stdout.close()


def state(pid: int) -> str | None:
    """The one-letter /proc state, read independently of the code under test."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].split()[0].decode()


# -- sessions ------------------------------------------------------------------------------


def test_spawn_gives_the_child_a_session_and_group_of_its_own() -> None:
    proc = start(READY_AND_SLEEP)
    try:
        wait_ready(proc)
        assert os.getpgid(proc.pid) == proc.pid
        assert os.getsid(proc.pid) == proc.pid
    finally:
        cleanup(proc)


def test_fork_in_new_session_returns_once_the_group_exists() -> None:
    pid = fork_in_new_session()
    if pid == 0:  # the child: sleep until killed
        time.sleep(100)
        os._exit(0)
    try:
        assert os.getpgid(pid) == pid and os.getsid(pid) == pid
        kill_group(pid)  # at once: the group is there to be signalled
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    finally:
        kill_group(pid)


def test_fork_and_forget_does_the_work_with_stdio_let_go(tmp_path: Path) -> None:
    out = tmp_path / "out"

    def work() -> None:
        out.with_suffix(".tmp").write_text(os.readlink("/proc/self/fd/1"))
        out.with_suffix(".tmp").rename(out)

    assert fork_and_forget(work) is True  # only the parent gets here
    assert wait_for(out.exists, DEADLINE_S)
    assert out.read_text() == os.devnull


# -- the stop rule -------------------------------------------------------------------------


def test_a_child_that_exits_on_sigterm_is_not_waited_for() -> None:
    proc = start(READY_AND_SLEEP)
    try:
        wait_ready(proc)
        t0 = time.monotonic()
        stop_groups([proc.pid], grace_s=DEADLINE_S)
        assert time.monotonic() - t0 < DEADLINE_S / 2  # it did not sit out the grace
        assert proc.wait(DEADLINE_S) == -signal.SIGTERM
    finally:
        cleanup(proc)


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    proc = start(IGNORES_TERM + READY_AND_SLEEP)
    try:
        wait_ready(proc)
        t0 = time.monotonic()
        stop_groups([proc.pid], grace_s=0.5)
        assert time.monotonic() - t0 >= 0.5
        assert proc.wait(DEADLINE_S) == -signal.SIGKILL
    finally:
        cleanup(proc)


def test_the_whole_group_is_stopped_grandchild_included() -> None:
    proc = start(IGNORES_TERM + WITH_GRANDCHILD)
    try:
        (grandchild,) = wait_ready(proc)
        assert os.getpgid(int(grandchild)) == proc.pid
        stop_groups([proc.pid], grace_s=0.3)
        assert proc.wait(DEADLINE_S) == -signal.SIGKILL
        # An orphan, reaped by init whenever it gets to it: dead means gone or a zombie.
        assert wait_for(lambda: state(int(grandchild)) in (None, "Z"), DEADLINE_S)
        assert group_dead(proc.pid)
    finally:
        cleanup(proc)


def test_a_stop_interrupted_during_the_grace_kills_at_once() -> None:
    proc = start(IGNORES_TERM + READY_AND_SLEEP)
    try:
        wait_ready(proc)
        steps = escalation([proc.pid], grace_s=3600.0)
        assert next(steps) > 0  # SIGTERM sent, now waiting out the grace
        assert proc.poll() is None
        steps.close()  # a second Ctrl-C: no more grace
        assert proc.wait(DEADLINE_S) == -signal.SIGKILL
    finally:
        cleanup(proc)


def test_a_stopped_group_is_continued_so_that_it_gets_sigterm() -> None:
    proc = start(READY_AND_SLEEP)
    try:
        wait_ready(proc)
        os.killpg(proc.pid, signal.SIGSTOP)
        assert wait_for(lambda: state(proc.pid) == "T", DEADLINE_S)
        stop_groups([proc.pid], grace_s=DEADLINE_S)
        assert proc.wait(DEADLINE_S) == -signal.SIGTERM
    finally:
        cleanup(proc)


# -- what /proc says -------------------------------------------------------------------------


def test_a_zombie_is_neither_a_live_pid_nor_a_live_group() -> None:
    proc = spawn(["true"])
    try:
        assert wait_for(lambda: state(proc.pid) == "Z", DEADLINE_S)  # exited, not reaped
        assert not pid_alive(proc.pid)
        assert not group_alive(proc.pid)
        assert start_time(proc.pid) is None
    finally:
        proc.wait()
    assert not pid_alive(proc.pid) and proc_stat(proc.pid) is None


def test_proc_stat_of_this_process() -> None:
    stat = proc_stat(os.getpid())
    assert stat is not None and stat.running
    assert stat.pgrp == os.getpgrp()
    field22 = Path("/proc/self/stat").read_bytes().rsplit(b")", 1)[1].split()[19].decode()
    assert stat.start_time == start_time(os.getpid()) == field22
    assert pid_alive(os.getpid()) and group_alive(os.getpgrp())


def test_groups_with_env_finds_a_group_by_its_environment() -> None:
    marker = f"THOTD_TEST_MARK={os.getpid()}-{time.monotonic_ns()}"
    name, _, value = marker.partition("=")
    proc = spawn(["sleep", "100"], env={**os.environ, name: value})
    try:
        assert wait_for(lambda: groups_with_env({marker.encode()}) == {proc.pid}, DEADLINE_S)
        assert groups_with_env({marker.encode() + b"-not"}) == set()
    finally:
        kill_group(proc.pid)
        proc.wait()
