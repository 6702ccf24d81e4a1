"""The original runners and ours, started the same way on the same project: where scripts
start (the runner's working folder), where the script API moves them (their container), and
the original runner's command-line options."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from compatkit import HERE, VERSIONS, run_original, run_ours
from corekit import make_tree

_TREE: dict[str, Any] = {
    "_container.json": {},
    # "autorun": true spelled out: 0.0.2 defaulted it to false
    "_scripts.json": [{"script": "where.py", "autorun": True},
                      {"script": "other.py", "priority": 1, "autorun": True}],
    "s": {"_container.json": {}, "_scripts.json": [{"script": "../where.py", "autorun": True}]},
}


def _project(work: Path) -> Path:
    make_tree(work / "proj", _TREE)
    for name in ("where.py", "other.py"):
        shutil.copy(HERE / "probe_where.py", work / "proj" / name)
    (work / "data.txt").write_text("found relative to where the runner was started\n")
    return work


def _runs(work: Path, done: Any) -> list[dict[str, Any]]:
    assert done.returncode == 0, done.stdout + done.stderr
    out = work / "probe.jsonl"
    return sorted((json.loads(line) for line in out.read_text().splitlines()),
                  key=lambda r: (r["container"], r["script"]))


def _run(who: str, tmp_path: Path, options: list[str]) -> list[dict[str, Any]]:
    work = _project(tmp_path / who)
    args = ["-m", "thot.runner", "-r", "proj", *options]
    env = {"PROBE_OUT": str(work / "probe.jsonl"), "PROBE_WORK": str(work),
           "XDG_STATE_HOME": str(tmp_path / "state")}
    done = run_ours(args, work, **env) if who == "ours" else run_original(who, args, work, **env)
    return _runs(work, done)


@pytest.mark.parametrize("version", VERSIONS)
def test_scripts_start_where_the_runner_was_started(tmp_path: Path, version: str) -> None:
    theirs = _run(version, tmp_path, ["-t"] if version == "0.6.3" else [])
    ours = _run("ours", tmp_path, ["--ignore-errors", "--verbose", "-t"])
    if version == "0.0.2":  # its dev_mode() is inverted (docs/decisions.md)
        theirs = [{**r, "dev_mode": not r["dev_mode"]} for r in theirs]
    assert ours == theirs
    assert {(r["first"], r["sees_data_first"]) for r in ours} == {(".", True)}
    assert [(r["container"], r["after"]) for r in ours] == [
        ("proj", "proj"), ("proj", "proj"), ("proj/s", "proj/s")]


def test_scripts_option_runs_only_those(tmp_path: Path) -> None:
    """``--scripts`` as 0.2.3 took it (0.6.3's crashes): a JSON list, relative to the root."""
    options = ["--scripts", json.dumps(["where.py"])]
    theirs = _run("0.2.3", tmp_path, options)
    ours = _run("ours", tmp_path, options)
    assert ours == theirs
    assert [(r["container"], r["script"]) for r in ours] == [("proj", "where.py"), ("proj/s", "where.py")]


def test_other_scripts_start_in_their_container(tmp_path: Path) -> None:
    """A shell script (the originals ran Python only) has no script API to move it: it starts
    in its container, while a Python script beside it starts where the runner was started."""
    work = _project(tmp_path / "ours")
    (work / "proj" / "pwd.sh").write_text('echo "sh $PWD" >> "$PROBE_OUT.sh"\n')
    (work / "proj" / "s" / "_scripts.json").write_text(json.dumps(
        [{"script": "../where.py"}, {"script": "../pwd.sh"}]))
    env = {"PROBE_OUT": str(work / "probe.jsonl"), "PROBE_WORK": str(work),
           "XDG_STATE_HOME": str(tmp_path / "state")}
    done = run_ours(["-m", "thot.runner", "-r", "proj"], work, **env)
    assert [(r["container"], r["first"]) for r in _runs(work, done)] == [
        ("proj", "."), ("proj", "."), ("proj/s", ".")]
    assert (work / "probe.jsonl.sh").read_text() == f"sh {work / 'proj' / 's'}\n"
