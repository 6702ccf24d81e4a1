"""What ``thot run`` prints: the summary and what did not succeed (with the end of its log),
a row per run only with ``--verbose``; a progress line on a terminal; ``--help`` and
``--version`` of every command."""

from __future__ import annotations

import contextlib
import io
import os
import pty
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from corekit import REPO, cli, make_gs, make_tree

from thotd.cli.thot import HELP, main


def test_success_prints_only_the_summary(tmp_path: Path, state: Path) -> None:
    project = make_gs(tmp_path / "work", 2, 2)
    code, out, _ = cli("--state", state, "run", "--root", project)
    assert code == 0
    assert out.splitlines() == [out.splitlines()[-1]]
    assert out.startswith("7 of 7 runs: 7 ok in ")
    code, out, _ = cli("--state", state, "run", "--root", project, "--verbose")
    rows = [line for line in out.splitlines() if line.startswith("ok ")]
    assert code == 0 and len(rows) == 7  # every run with --verbose


def test_failures_show_why_and_the_end_of_their_log(tmp_path: Path, state: Path) -> None:
    make_tree(tmp_path / "analysis", {
        "ok.py": "print('fine')\n",
        "boom.py": "print('\\n'.join('line %d' % i for i in range(20)))\n"
                   "raise SystemExit('the data is bad')\n"})
    root = make_tree(tmp_path / "proj", {
        "_container.json": {}, "_scripts.json": [{"script": "root:/../analysis/ok.py"}],
        "a": {"_container.json": {}, "_scripts.json": [{"script": "root:/../analysis/boom.py"}]},
        "b": {"_container.json": {}, "_scripts.json": [{"script": "root:/../analysis/ok.py"}]},
        "c": {"_container.json": {}, "_scripts.json": [{"script": "root:/../analysis/ok.py"}],
              "d": {"_container.json": "{", "_scripts.json": [{"script": "root:/../analysis/ok.py"}]}},
    })
    code, out, _ = cli("--state", state, "run", "--root", root)
    assert code == 1
    lines = out.splitlines()
    failed = next(i for i, line in enumerate(lines) if line.startswith("failed "))
    assert " a " in lines[failed] and "boom.py" in lines[failed]
    assert "exit code 1" in lines[failed + 1] and "(log: " in lines[failed + 1]
    tail = [line.split("| ", 1)[1] for line in lines[failed + 2:] if "| " in line]
    assert tail == ["line 16", "line 17", "line 18", "line 19", "the data is bad"]
    blocked = [line for line in lines if line.startswith("blocked ")]
    # d is invalid: its run, c's and the root's wait for a fix of one file, told once
    assert len(blocked) == 1 and "ok.py in c/d and 2 more: waiting for a fix" in blocked[0]
    assert not [line for line in lines if line.startswith("ok ")]
    assert lines[-1].startswith("5 of 5 runs: 3 blocked, 1 failed, 1 ok in ")


def test_progress_line_on_a_terminal(tmp_path: Path, state: Path) -> None:
    project = make_gs(tmp_path / "work", 1, 2)
    primary, secondary = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "thotd.cli.thot", "--state", str(state), "run", "--root",
             str(project)], stdout=subprocess.PIPE, stderr=secondary, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        os.close(secondary)
        seen = b""
        with contextlib.suppress(OSError):  # EIO once the terminal's other side is closed
            while chunk := os.read(primary, 65536):
                seen += chunk
    finally:
        os.close(primary)
    assert done.returncode == 0 and done.stdout.startswith("4 of 4 runs: 4 ok")
    assert b"[0/4] running " in seen and b"[3/4] running summary.py in ." in seen


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"thot {version('thotd')}\n"


@pytest.mark.parametrize("command", sorted(HELP))
def test_help_ends_with_two_examples_and_the_exit_codes(command: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main([command, "--help"])
    text = out.getvalue()
    examples = text.split("examples:\n", 1)[1].split("\n\n")[0].splitlines()
    assert len(examples) == 2 and all(e.startswith(f"  thot {command}") for e in examples)
    codes = text.split("exit codes:\n", 1)[1].splitlines()
    assert codes[0].startswith("  0 ") and codes[-1].startswith("  130 ")
    assert text.endswith(codes[-1] + "\n")
