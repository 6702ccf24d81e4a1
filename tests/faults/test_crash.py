"""1. Crashes: ``kill -9`` of the daemon at chosen moments, then a restart.

Each cycle edits the project the way a person would (a new sample, changed data, a deleted
sample), kills the daemon at one of four moments, checks the state database opens and passes
``PRAGMA integrity_check``, restarts, waits until quiet and then checks that nothing was
lost:

* every file the person wrote is still there, byte for byte;
* every derived asset equals what a fresh full ``thot run`` of the same files makes (the
  engine's oracle), so no half-written output survived and nothing stale was left;
* every run the kill cut off (``running`` in the database at the kill) ran again;
* no run is left marked ``running``.

The moments: *while a batch settles* (N ms after the write, inside the settle window),
*while a script runs* (a run is reported running), *while state is written* (right after
the database's WAL file changed: the daemon is inside or between its transactions) and
*during start-up* (the catch-up after a restart).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from ._faults import (
    Daemon,
    Prober,
    Report,
    add_sample,
    db_check,
    derived_assets,
    make_gs,
    oracle,
    pick,
    tagged_processes,
    user_files,
    wait_for,
)

PHASES = ("settle", "script", "state", "startup")
NAMES = {
    "settle": "kill -9 while a batch settles",
    "script": "kill -9 while a script runs",
    "state": "kill -9 while state is written",
    "startup": "kill -9 during start-up catch-up",
}
SLOW = "import time as _t\n_t.sleep(0.1)\n"
LONG_RUN = """\
import time
from thot import ThotProject
db = ThotProject()
n = len(db.find_assets({'type': 'stats'}))
time.sleep(2)
path = db.add_asset({'type': 'slow', 'file': 'slow.txt'}, 'slow')
open(path, 'w').write('%d stats\\n' % n)
"""


def _mutate(rng: random.Random, project: Path, serial: int) -> str:
    groups = sorted(p for p in project.glob("group-*") if p.is_dir())
    samples = [s for g in groups for s in sorted(g.glob("sample-*"))]
    if len(samples) <= 3:
        kind = "add"
    elif len(samples) >= 6:
        kind = rng.choice(["change", "delete"])
    else:
        kind = rng.choice(["add", "change", "delete"])
    if kind == "add":
        group = rng.choice(groups)
        add_sample(project, group.name, f"sample-{100 + serial:03d}")
        return f"add {group.name}/sample-{100 + serial:03d}"
    if kind == "change":
        sample = rng.choice(samples)
        values = [rng.randrange(0, 1000) for _ in range(5)]
        (sample / "raw" / "data.csv").write_text("value\n" + "".join(f"{v}\n" for v in values))
        return f"change {sample.name}"
    deletable = [s for s in samples if len(list(s.parent.glob("sample-*"))) > 1]
    sample = rng.choice(deletable)
    shutil.rmtree(sample)
    return f"delete {sample.parent.name}/{sample.name}"


def _wal_changes(db: Path, count: int, timeout: float = 10.0) -> bool:
    """Spin until the WAL file changed ``count`` times (the daemon is writing state)."""
    wal = Path(str(db) + "-wal")

    def sig() -> tuple[int, int] | None:
        try:
            st = wal.stat()
        except FileNotFoundError:
            return None
        return (st.st_size, st.st_mtime_ns)

    last = sig()
    seen = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = sig()
        if now != last:
            seen += 1
            last = now
            if seen >= count:
                return True
        time.sleep(0.0005)
    return False


def _crash_project(work: Path) -> Path:
    """A 2×2 G×S project with slowed scripts and a long run beside group-0's own: it is
    still running when a kill comes, and its process must not outlive the daemon into the
    restart."""
    project = make_gs(work, 2, 2)
    for name in ("sample.py", "group.py"):
        script = work / "analysis" / name
        script.write_text(SLOW + script.read_text())
    (work / "analysis" / "slow.py").write_text(LONG_RUN)
    (project / "group-0" / "_scripts.json").write_text(json.dumps([
        {"script": "root:/../analysis/group.py"},
        {"script": "root:/../analysis/slow.py", "priority": 1}]))
    return project


def _running_or_quiet(fd: Daemon) -> str | None:
    st = fd.status()
    if any(p["running"] for p in st["projects"]):
        return "running"
    return "quiet" if st["quiet"] else None


def _edit_then_wait_for_the_moment(fd: Daemon, rng: random.Random, work: Path, phase: str,
                                   cycle: int, info: dict[str, int]) -> tuple[str, dict[str, str]]:
    """Edit the project, then wait for the phase's moment to kill the daemon (the fault's
    own random delays). Returns what was edited and the user files it left."""
    project = work / "project"
    if phase == "startup":
        fd.kill9()
        what = _mutate(rng, project, cycle)
        expected = user_files(work)
        fd.start(check=False)
        time.sleep(rng.uniform(0.2, 1.5))  # the fault: kill at a random point of start-up
        info["mid"] += fd.answers()
        return what, expected
    what = _mutate(rng, project, cycle)
    expected = user_files(work)
    if phase == "settle":
        time.sleep(rng.uniform(0.0, 0.1))  # the fault: inside the settle window
    elif phase == "script":
        info["mid"] += wait_for(lambda: _running_or_quiet(fd), 30, "a script to run", 0.005) == "running"
        time.sleep(rng.uniform(0.0, 0.15))
    else:
        info["mid"] += _wal_changes(fd.state, rng.randint(1, 3))
    return what, expected


def _kill_and_restart(fd: Daemon, info: dict[str, int], problems: list[str]) -> tuple[dict[str, Any], list[Any]]:
    """Kill -9, check the state db as the crash left it, restart; the state db check and
    the runs the kill cut off."""
    fd.kill9()
    orphans = tagged_processes(fd.tag)  # its scripts, in their own sessions
    info["orphans"] += len(orphans)
    db = db_check(fd.state, copy=True)
    if db["integrity"] != "ok":
        problems.append(f"integrity_check: {db['integrity']}")
    cut = [k for k in db["running"] if os.path.isdir(k[0])]
    info["cut"] += len(cut)
    fd.start()
    survivors = [p for p in orphans if p in tagged_processes(fd.tag)]
    if survivors:
        problems.append(f"scripts of cut-off runs still alive after restart: {survivors}")
    fd.wait_quiet(180)
    return db, cut


def _check_recovered(fd: Daemon, work: Path, expected: dict[str, str], db: dict[str, Any],
                     cut: list[Any], info: dict[str, int], problems: list[str]) -> None:
    """What the person wrote is intact; what scripts derive equals a fresh full run; every
    cut-off run ran again; the state and the project are healthy."""
    project = work / "project"
    now = user_files(work)
    if now != expected:
        changed = sorted(set(now.items()) ^ set(expected.items()))[:5]
        problems.append(f"user files differ: {changed}")
    got = derived_assets(project)
    want = oracle(work, "project", work.parent / "oracle")
    if got != want:
        diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))[:5]
        problems.append(f"derived assets differ from a fresh run: {diff}")
    history = fd.runs()
    for container, script in cut:
        again = [r for r in history if r["id"] > db["history"]
                 and r["container"] == container and r["script"] == script]
        if again:
            info["rerun"] += 1
        else:
            problems.append(f"cut-off run not rerun: {container} {script}")
    after = db_check(fd.state)
    if after["running"] or after["integrity"] != "ok":
        problems.append(f"after restart: {after}")
    st = fd.project(project)
    if st["error"] or st["invalid"]:
        problems.append(f"project unhealthy after restart: {st['error']} {st['invalid']}")


def _notes(phase: str, i: dict[str, int], seed: int) -> str:
    moment = {"settle": "killed 0-100 ms after the edit",
              "script": f"{i['mid']} kills with a script running",
              "state": f"{i['mid']} kills within ~1 ms of a WAL write",
              "startup": f"{i['mid']} kills after the socket answered, the rest before"}[phase]
    return (f"{moment}; runs cut off: {i['cut']}, run again: {i['rerun']}; "
            f"integrity_check ok, user files and derived assets = fresh `thot run`; "
            f"{i['orphans']} script processes outlived the kill, all ended by the restart; "
            f"seed {seed}")


def test_kill9_at_random_moments(fd: Daemon, tmp_path: Path, reliability: Report) -> None:
    cycles = pick(10, 50)
    seed = int(os.environ.get("THOTD_FAULTS_SEED", "20261125"))
    rng = random.Random(seed)
    work = tmp_path / "work"
    project = _crash_project(work)
    rows = {phase: reliability.row(NAMES[phase]) for phase in PHASES}
    details: dict[str, dict[str, int]] = {p: {"cut": 0, "rerun": 0, "orphans": 0, "mid": 0} for p in PHASES}
    losses: list[str] = []

    fd.start()
    fd.add(project)
    for cycle in range(cycles):
        phase = PHASES[cycle % len(PHASES)]
        row, info = rows[phase], details[phase]
        problems: list[str] = []
        with Prober(fd.socket, allow_down=True) as prober:
            what, expected = _edit_then_wait_for_the_moment(fd, rng, work, phase, cycle, info)
            db, cut = _kill_and_restart(fd, info, problems)
        _check_recovered(fd, work, expected, db, cut, info, problems)
        if prober.failures:
            problems.append(f"status failed while up: {prober.failures[:3]}")
        row.tries += 1
        row.worst(prober)
        if problems:
            row.lost += 1
            losses.append(f"cycle {cycle} ({phase}, {what}): {problems}")
    for phase in PHASES:
        rows[phase].notes = _notes(phase, details[phase], seed)
    assert not losses, "\n".join(losses)
