"""The README works as written: a new user who follows it, in a clean folder, sees the result
and no traceback (issue: the first hour has no surprises).

The commands run as the user types them, after the README's ``pip install``: ``thotd``,
``thotctl`` and ``thot`` on ``PATH`` (small shims running this checkout's code), with
``HOME``, every ``XDG_*`` folder and ``THOTD_SOCKET`` inside the test's temporary folders, so
the real user's folders and this checkout are never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMANDS = ("thot", "thotd", "thotctl")


def _blocks(title: str | None = None) -> list[tuple[str, str]]:
    """The fenced code blocks (language, text) of a README section, or of its top."""
    text = (REPO / "README.md").read_text()
    body = text.split(f"## {title}\n", 1)[1] if title else text
    return re.findall(r"```(\w+)\n(.*?)```", body.split("\n## ", 1)[0], re.S)


def test_ci_runs_the_readmes_test_command_word_for_word() -> None:
    install = _blocks()[0][1].splitlines()
    readme = install[1].split("#", 1)[0].strip()
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == readme


@pytest.fixture
def user(tmp_path: Path, run_dir: Path) -> Iterator[dict[str, str]]:
    """A new user's environment: own home, XDG folders and socket; the commands on PATH."""
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    bin_dir.mkdir()
    for name in COMMANDS:
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m thotd.cli.{name} "$@"\n')
        shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "THOT"))}
    env.update({
        "HOME": str(home), "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_RUNTIME_DIR": str(run_dir), "THOTD_SOCKET": str(run_dir / "thotd.sock"),
    })
    home.mkdir()
    try:
        yield env
    finally:  # whatever happened, no daemon outlives the test
        subprocess.run(["thotd", "stop"], env=env, capture_output=True, timeout=120)


def _sh(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["sh", "-ec", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, f"{script}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def test_first_project_runs_as_written(tmp_path: Path, user: dict[str, str]) -> None:
    (shell, make), (python, script) = _blocks("Your first project")[:2]
    assert (shell, python) == ("sh", "python")
    work = tmp_path / "work"
    work.mkdir()
    _sh(make, work, user)
    path = re.match(r"# (\S+)\n", script)
    assert path, "the script block starts with a comment naming its path"
    (work / path.group(1)).write_text(script)
    done = _sh("thot run --root lab", work, user)
    assert done.stderr == ""
    assert (work / "lab" / "sample-1" / "mean" / "mean.txt").read_text() == "1.5"
    line = "`thot run --root lab` runs it once; `thotctl add lab` (with `thotd start`) keeps it fresh."
    assert line in (REPO / "README.md").read_text()
    watched = _sh("thotd start && thotctl add lab && thotctl wait && thotctl status && thotd stop",
                  work, user)
    assert "1 project, 0 running" in watched.stdout


@pytest.mark.timeout(900)
def test_the_demo_runs_as_written_and_leaves_the_folder_clean(
        tmp_path: Path, user: dict[str, str]) -> None:
    pytest.importorskip("pandas", reason="the example's scripts need the [example] extra")
    if shutil.which("git") is None:
        pytest.skip("git is not installed: cannot check the checkout stays clean")
    install, try_it = _blocks()[:2]
    demo = install[1].splitlines()[0].split("&&", 1)[1].split("#", 1)[0].strip()
    assert demo == "thotd demo"
    checkout = tmp_path / "checkout"  # the user runs the demo from a git checkout
    checkout.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=checkout, check=True)

    first = _sh(demo, checkout, user)
    assert "copied the example project to" in first.stdout
    assert "project/batch-a/sample-3\n" in first.stdout  # the hint the README shows
    done = _sh(try_it[1], checkout, user)
    assert done.stdout.startswith("quiet\n")
    assert "sample-3" in done.stdout  # summary.csv has the new sample
    newest = done.stdout.split("script @ container\n", 1)[1].splitlines()[:2]
    assert [line.split()[-3] for line in newest] == ["summary.py", "stats.py"]

    again = _sh(demo, checkout, user)
    assert "using the example already at" in again.stdout
    assert "project/batch-a/sample-4\n" in again.stdout  # sample-3 is taken now
    _sh("thotd stop", checkout, user)

    status = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=checkout,
                            capture_output=True, text=True, check=True)
    assert status.stdout == ""
