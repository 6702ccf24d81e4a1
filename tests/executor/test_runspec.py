"""Tests for thotd.executor.runspec: which command runs a script, and its environment."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from thotd.executor.runspec import ScriptError, interpreter_for, script_env


def write_script(path: Path, text: str, executable: bool = False) -> Path:
    """Write a script file, optionally with the executable bit."""
    path.write_text(text)
    if executable:
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_interpreter_for_known_extensions(tmp_path: Path) -> None:
    assert interpreter_for(write_script(tmp_path / "a.py", "")) == [sys.executable]
    assert interpreter_for(write_script(tmp_path / "a.sh", "")) == ["bash"]
    tool = write_script(tmp_path / "tool", "#!/bin/sh\n", executable=True)
    assert interpreter_for(tool) == []


def test_interpreter_for_missing_script_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    with pytest.raises(ScriptError, match="nope.py"):
        interpreter_for(missing)


def test_interpreter_for_non_executable_unknown_extension(tmp_path: Path) -> None:
    script = write_script(tmp_path / "job.txt", "echo hi\n")
    with pytest.raises(
        ScriptError, match=r"is not executable; chmod \+x it or use a \.py/\.R/\.sh"
    ):
        interpreter_for(script)


def test_interpreter_for_missing_rscript_says_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    for name in ("fit.R", "fit.r"):
        with pytest.raises(ScriptError, match="Rscript"):
            interpreter_for(write_script(tmp_path / name, "cat('x')\n"))


def test_script_env_strips_daemon_vars_and_adds_extra() -> None:
    base = {
        "PATH": "/usr/bin",
        "NOTIFY_SOCKET": "/run/x",
        "WATCHDOG_USEC": "1",
        "WATCHDOG_PID": "2",
        "LISTEN_FDS": "1",
        "LISTEN_PID": "3",
        "LISTEN_FDNAMES": "a",
    }
    env = script_env(base, {"THOT_PROJECT": "/p", "PATH": "/opt/bin"})
    assert env == {"PATH": "/opt/bin", "THOT_PROJECT": "/p"}
    assert "NOTIFY_SOCKET" in base  # the input is not modified
