"""5. Load: many runs queued at once. The pool holds its limit (checked from the scripts' own
start/end stamps, not only from the daemon's word), the queue drains, every run is recorded,
``status`` stays fast and the daemon's memory stays bounded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ._faults import Daemon, Prober, Report, pick, proc_memory

WORKERS = 2
SCRIPT = """\
echo "s $(date +%s%N) $$" >> "$LOAD_STAMPS"
i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done
echo "e $(date +%s%N) $$" >> "$LOAD_STAMPS"
case "$PWD" in *7) echo "leaf ${PWD##*/} fails on purpose"; exit 3;; esac
"""


def _max_overlap(stamps: Path) -> tuple[int, int]:
    """(most runs alive at once, runs seen) from 's/e <ns> <pid>' lines."""
    events = []
    for line in stamps.read_text().splitlines():
        kind, ns, _pid = line.split()
        events.append((int(ns), 1 if kind == "s" else -1))
    events.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    alive = peak = 0
    for _t, delta in events:
        alive += delta
        peak = max(peak, alive)
    return peak, sum(1 for _t, d in events if d == 1)


def test_many_runs_queued_at_once(fd: Daemon, tmp_path: Path, reliability: Report) -> None:
    runs = pick(500, 1000)
    work = tmp_path / "work"
    (work / "scripts").mkdir(parents=True)
    (work / "scripts" / "leaf.sh").write_text(SCRIPT)
    project = work / "project"
    project.mkdir()
    (project / "_container.json").write_text(json.dumps({"name": "load"}))
    for i in range(runs):
        leaf = project / f"leaf-{i:04d}"
        leaf.mkdir()
        (leaf / "_container.json").write_text("{}")
        (leaf / "_scripts.json").write_text(json.dumps([{"script": "root:/../scripts/leaf.sh"}]))
    stamps = tmp_path / "stamps.txt"
    fd.env["LOAD_STAMPS"] = str(stamps)
    fd.configure(pool={"workers": WORKERS, "timeout_s": 120})
    fd.start()
    base_kib = proc_memory(fd.pid)["VmRSS"]
    row = reliability.row(f"{runs:,} runs queued at once (pool of {WORKERS})")
    seen = {"queued": 0, "running": 0}

    def check(status: dict) -> None:
        for p in status["projects"]:
            seen["queued"] = max(seen["queued"], len(p["queued"]))
            seen["running"] = max(seen["running"], len(p["running"]))
            assert len(p["running"]) <= WORKERS, f"{len(p['running'])} running"

    with Prober(fd.socket, interval=0.1, timeout=30, check=check, pid=fd.pid) as prober:
        fd.add(project, wait=False)
        fd.wait_quiet(pick(500, 1700))
    history = fd.runs()
    ok = sum(1 for r in history if r["status"] == "ok")
    failed = sum(1 for r in history if r["status"] == "failed" and r["exit_code"] == 3)
    doomed = sum(1 for i in range(runs) if i % 10 == 7)  # leaf-…7 fails on purpose
    t0 = time.perf_counter()
    shown = len(fd.status()["projects"][0]["failures"])
    status_ms = (time.perf_counter() - t0) * 1000
    peak, started = _max_overlap(stamps)
    mem = proc_memory(fd.pid)
    row.tries = runs
    row.lost = abs(runs - doomed - ok) + abs(doomed - failed) + len(prober.failures) + len(
        prober.problems)
    row.worst(prober)
    row.notes = (
        f"up to {seen['queued']:,} queued; at most {peak} scripts alive at once by their own "
        f"stamps ({seen['running']} by status); {ok:,} recorded ok and {failed} failed "
        f"as meant; status with {shown} failures and their log tails answered in "
        f"{status_ms:.0f} ms; "
        f"RSS {base_kib / 1024:.0f} MiB before, peak {mem['VmHWM'] / 1024:.0f} MiB, "
        f"{mem['VmRSS'] / 1024:.0f} MiB after"
    )
    assert not prober.problems, prober.problems[:3]
    assert not prober.failures, prober.failures[:3]
    assert started == runs and ok == runs - doomed and failed == doomed, (started, ok, failed)
    assert shown == doomed
    assert peak <= WORKERS
    assert seen["queued"] >= runs * 0.9, "the runs were not queued at once"
    assert mem["VmHWM"] < 512 * 1024, "memory not bounded"
    assert fd.status()["quiet"]
