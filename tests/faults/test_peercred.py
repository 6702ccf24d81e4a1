"""``thotctl`` talks only to a server of its own user (issue 11, item 2).

Another account can take a socket path in a shared folder first and wait for our
requests. A real server runs as ``nobody`` (uid 65534) at the path; the client asks the
kernel who that is (``SO_PEERCRED``) and refuses before sending a byte.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from thotd.cli import thotctl
from thotd.service.rpc import Client, UntrustedServer

from .trustkit import NOBODY, need_root, python_for, shared_tmpdir, wait_for

# Answers every line with a hello result and notes on stdout how many bytes it received.
SERVER = r"""
import json, os, socket, sys
path = sys.argv[1]
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
os.chmod(path, 0o666)
srv.listen(8)
print("listening", flush=True)
while True:
    conn, _ = srv.accept()
    data = conn.recv(65536)
    print("received", len(data), flush=True)
    if data:
        conn.sendall(json.dumps({"jsonrpc": "2.0", "id": 1,
                                 "result": {"protocol": 1, "who": "impostor"}}).encode() + b"\n")
    conn.close()
"""


@pytest.fixture
def impostor() -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    need_root()
    python = python_for(NOBODY)
    folder = shared_tmpdir("thpeer-")
    os.chmod(folder, 0o777)  # a shared folder: the other account can create the socket
    path = folder / "thotd.sock"
    proc = subprocess.Popen([python, "-c", SERVER, str(path)], user=NOBODY, group=NOBODY,
                            extra_groups=[], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "listening"
        yield path, proc
    finally:
        proc.kill()
        proc.wait(30)
        shutil.rmtree(folder, ignore_errors=True)


def test_client_refuses_a_server_of_another_user(
        impostor: tuple[Path, subprocess.Popen[str]]) -> None:
    path, proc = impostor
    assert os.stat(path).st_uid == NOBODY
    with pytest.raises(UntrustedServer) as info, Client(path, timeout=10) as client:
        client.call("hello")
    message = str(info.value)
    assert str(path) in message and "nobody (uid 65534)" in message
    assert info.value.uid == NOBODY and info.value.pid == proc.pid
    # Nothing was sent: the impostor saw a connection close without a byte.
    assert proc.stdout is not None
    assert wait_for(proc.stdout.readline, 10, "the impostor's note").split() == ["received", "0"]


def test_thotctl_says_so_and_fails(impostor: tuple[Path, subprocess.Popen[str]],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    path, _proc = impostor
    code = thotctl.main(["--socket", str(path), "status"])
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("thotctl: refusing to talk to the server at")
    assert "uid 65534" in err and "Traceback" not in err
