"""``thotctl`` against a daemon that misbehaves: one clear line and an exit code of
:mod:`thotd.exits`, never a traceback, and never a hang past ``--timeout`` plus a margin.

The "daemons" here are real Unix sockets served by a thread that accepts and then says
nothing, or hangs up: what a wedged or crashing thotd looks like from the client.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from thotd import exits
from thotd.cli import thotctl
from thotd.words import plural, printable


@contextlib.contextmanager
def fake_daemon(path: Path, answer: Callable[[socket.socket], None]) -> Iterator[None]:
    """Listen on ``path``; ``answer`` each connection (in a thread) until the block ends."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    held: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                held.append(conn)
                answer(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown(socket.SHUT_RDWR)
        server.close()
        for conn in held:
            conn.close()
        thread.join(10)


def silent(conn: socket.socket) -> None:
    """A hung daemon: it accepts and never replies."""


def hang_up(conn: socket.socket) -> None:
    """A crashing daemon: it reads the request and drops the connection."""
    conn.recv(65536)
    conn.close()


def _ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "thotd.cli.thotctl", *args],
                          capture_output=True, text=True, timeout=120)


def test_wait_gives_up_on_a_hung_daemon(run_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    sock = run_dir / "hung.sock"
    monkeypatch.setattr(thotctl, "WAIT_MARGIN_S", 0.5)
    with fake_daemon(sock, silent):
        started = time.monotonic()
        code = thotctl.main(["--socket", str(sock), "wait", "--timeout", "0.5"])
        took = time.monotonic() - started
    assert code == exits.FAILURE
    assert took < 10  # without a client-side timeout: forever
    err = capsys.readouterr().err
    assert err == "thotctl: no reply from thotd within 1.0s\n"


def test_a_dropped_connection_is_one_line_not_a_traceback(run_dir: Path) -> None:
    sock = run_dir / "drop.sock"
    with fake_daemon(sock, hang_up):
        done = _ctl("--socket", str(sock), "status")
    assert done.returncode == exits.FAILURE
    assert done.stderr == "thotctl: lost the connection to thotd: thotd closed the connection\n"


def test_no_daemon_is_not_running_in_one_line(run_dir: Path) -> None:
    done = _ctl("--socket", str(run_dir / "none.sock"), "runs")
    assert done.returncode == exits.NOT_RUNNING
    assert done.stderr.startswith("thotctl: thotd is not running")
    assert done.stderr.count("\n") == 1


def test_version() -> None:
    from thotd.version import version

    done = _ctl("--version")
    assert (done.returncode, done.stdout) == (exits.OK, f"thotctl {version()}\n")
    assert version()[0].isdigit()


def test_every_help_ends_with_the_exit_codes() -> None:
    for args in (["--help"], ["status", "--help"], ["wait", "--help"]):
        done = _ctl(*args)
        assert done.returncode == exits.OK
        assert "exit codes:" in done.stdout
        assert f"  {exits.BLOCKED}   (wait)" in done.stdout


def test_plural() -> None:
    assert [plural(n, "project") for n in (0, 1, 2)] == ["0 projects", "1 project", "2 projects"]
    assert plural(1, "entry", "entries") == "1 entry"
    assert plural(3, "entry", "entries") == "3 entries"


def test_printable_escapes_control_characters_only() -> None:
    assert printable("plain/é/日本") == "plain/é/日本"
    assert printable("a\nb\tc\x1b[2J\x7f\u2028") == "a\\nb\\tc\\x1b[2J\\x7f\\u2028"
    assert printable("bytes-\udcff") == "bytes-\udcff"  # not UTF-8: printed as its bytes


def test_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch, run_dir: Path) -> None:
    def interrupted(*args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(thotctl.HANDLERS, "status", interrupted)
    assert thotctl.main(["--socket", str(run_dir / "s.sock"), "status"]) == exits.INTERRUPTED


def test_exit_codes_are_distinct() -> None:
    codes = [exits.OK, exits.FAILURE, exits.USAGE, exits.NOT_RUNNING, exits.BLOCKED,
             exits.CONFIG, exits.INTERRUPTED]
    assert len(set(codes)) == len(codes)


def test_why_escapes_each_field_so_a_name_cannot_forge_a_line() -> None:
    from thotd.engine.explain import render_why

    odd = "/p/a\nrun evil.py in /x: ok\x1b[2J"
    info = {"path": f"{odd}/stats", "kind": "asset", "creator_type": "script",
            "runs": [{"script": f"{odd}/s.py", "container": odd, "status": "ok", "finished": None,
                      "queries": [{"kind": "assets", "search": {"type": "x\ny"}, "ids": []}],
                      "inputs": [f"{odd}/raw"], "stale": [f"input {odd}/raw changed"],
                      "log": f"{odd}.log"}]}
    lines = render_why(info).splitlines()
    assert len(lines) == 6  # path, run, asked, input, stale, log: one line each, none forged
    assert not any("\x1b" in line for line in lines)
    assert lines[1].startswith("  run /p/a\\nrun evil.py")
    assert render_why({"path": odd, "error": "not\nfound"}).count("\n") == 0
