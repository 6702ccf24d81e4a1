"""``thot`` leaves nothing behind that writes to the terminal after it returned: the fork
server must go silently when its client is gone, whenever that happens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from corekit import REPO, add_sample, make_gs, run_json, wait_for


def _holders(path: Path) -> list[int]:
    """The pids of processes holding ``path`` open (the ones that could still write to it)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                    out.append(int(pid))
                    break
            except OSError:
                continue
    return out


def _run_with_stderr_file(argv: list[str], err: Path, cwd: Path) -> int:
    """Run ``argv`` with its stderr (inherited by everything it starts) in ``err``; wait
    until no process holds ``err`` any more."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with err.open("wb") as stderr:
        code = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=stderr, env=env,
                              cwd=cwd, timeout=60).returncode
    wait_for(lambda: not _holders(err), what="every process started by the command to end")
    return code


def test_changed_with_nothing_to_run_leaves_no_output(tmp_path: Path) -> None:
    project = make_gs(tmp_path / "work", 2, 2)
    state = tmp_path / "state" / "state.sqlite3"
    state.parent.mkdir()
    code, report = run_json(state, project)
    assert code == 0, report
    err = tmp_path / "stderr.txt"
    for extra in (["--changed"], ["--changed", "--dry-run"]):
        code = _run_with_stderr_file(
            [sys.executable, "-m", "thotd.cli.thot", "--state", str(state), "run",
             "--root", str(project), *extra], err, tmp_path)
        assert code == 0
        assert err.read_text() == "", extra


def test_fork_server_ends_silently_when_its_client_exits_before_ready(tmp_path: Path) -> None:
    err = tmp_path / "stderr.txt"
    client = ("import os\n"
              "from thotd.executor.process import start_forkserver\n"
              "start_forkserver()\n"
              "os._exit(0)\n")  # gone before the server has preimported and said "ready"
    assert _run_with_stderr_file([sys.executable, "-c", client], err, tmp_path) == 0
    assert err.read_text() == ""


def test_fork_server_starts_only_once_something_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from thotd.executor import process

    started: list[object] = []
    real = process.start_forkserver

    def counted() -> object:
        started.append(real())
        return started[-1]

    monkeypatch.setattr(process, "start_forkserver", counted)
    project = make_gs(tmp_path / "work", 1, 1)
    state = tmp_path / "state" / "state.sqlite3"
    state.parent.mkdir()
    assert run_json(state, project)[0] == 0 and len(started) == 1  # a full run: at once
    code, report = run_json(state, project, "--changed")
    assert code == 0 and report["runs"] == [] and len(started) == 1  # up to date: none
    add_sample(project, "group-0", "sample-new")
    code, report = run_json(state, project, "--changed")
    assert code == 0 and len(report["runs"]) == 3 and len(started) == 2  # at the first run
