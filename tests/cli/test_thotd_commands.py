"""``thotd``'s own answers: ``--version``, ``stop`` with nothing to stop, and ``demo``'s copy
and hint, which must stay right the second time (the whole demo runs in ``test_readme``)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from thotd import exits
from thotd.cli import thotd


def _thotd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "thotd.cli.thotd", *args],
                          capture_output=True, text=True, timeout=120)


def test_version() -> None:
    from thotd.version import version

    done = _thotd("--version")
    assert (done.returncode, done.stdout) == (exits.OK, f"thotd {version()}\n")


def test_help_ends_with_the_exit_codes() -> None:
    done = _thotd("--help")
    assert "exit codes:" in done.stdout and f"  {exits.CONFIG}  the configuration" in done.stdout


def test_stop_without_a_daemon_says_it_is_not_running(run_dir: Path) -> None:
    sock = run_dir / "none.sock"
    done = _thotd("stop", "--socket", str(sock))
    assert done.returncode == exits.NOT_RUNNING
    assert done.stderr == f"thotd: not running (no daemon at {sock})\n"


def test_the_demo_goes_to_the_user_data_dir(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    """Not the current folder: a demo started in a git checkout must not dirty it."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert thotd.demo_dir() == tmp_path / "data" / "thotd" / "thot-example"


def test_the_hint_names_a_sample_not_taken_yet(tmp_path: Path) -> None:
    dest = tmp_path / "demo"
    thotd.copy_example(dest)
    assert (dest / "project" / "_container.json").is_file()
    assert not list(dest.rglob("__pycache__"))
    assert "project/batch-a/sample-1 project/batch-a/sample-3\n" in thotd.demo_hint(dest)
    (dest / "project" / "batch-a" / "sample-3").mkdir()
    (dest / "project" / "batch-a" / "sample-7").mkdir()
    hint = thotd.demo_hint(dest)
    assert "project/batch-a/sample-1 project/batch-a/sample-8\n" in hint
    assert f"cd {dest}\n" in hint


def test_the_demo_refuses_a_folder_that_is_not_the_example(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine\n")
    args = argparse.Namespace(dir=str(mine), socket=str(tmp_path / "never.sock"))
    assert thotd.cmd_demo(args) == exits.FAILURE
    assert "exists and is not the example" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_stop_against_a_hung_daemon_is_one_line(run_dir: Path) -> None:
    """A daemon that accepts and never answers: ``stop`` gives up, it does not trace back."""
    import socket

    sock = run_dir / "hung.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(sock))
        server.listen()  # the kernel accepts for us; nobody ever reads or replies
        done = _thotd("stop", "--socket", str(sock))
    assert done.returncode == exits.FAILURE
    assert done.stderr == f"thotd: cannot stop the daemon at {sock}: no reply from thotd within 5s\n"
