"""2. Scripts misbehaving: the daemon stays up and answers ``status`` in under a second
throughout, each run is recorded with the right status, nothing is left running, and no
rerun loop starts.

One project holds one container per misbehaviour; every round reruns all of them at once
(``rerun``), so they misbehave side by side on a 2-worker pool while a prober times a raw
``status`` call every 100 ms.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from ._faults import Daemon, Prober, Report, pick, tagged_processes, wait_for

LOG_CAP = 1024 * 1024
TIMEOUT_S = 3.0
FLOOD_MB = pick(1024, 4096)

SCRIPTS = {
    "fails": "import sys\nprint('about to fail', flush=True)\nsys.exit(3)\n",
    "segfaults": "import os, signal\nprint('crashing', flush=True)\nos.kill(os.getpid(), signal.SIGSEGV)\n",
    "hangs": "import time\nprint('hanging', flush=True)\ntime.sleep(600)\n",
    "hangs_ignoring_term": (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('hanging, deaf to SIGTERM', flush=True)\ntime.sleep(600)\n"
    ),
    "forks": (
        "import subprocess, sys\n"
        "subprocess.Popen(['sleep', '300'])\n"
        "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)'])\n"
        "print('forked two children and leaving', flush=True)\n"
    ),
    "chatty": (
        "import sys\nblock = b'x' * (1 << 20)\n"
        f"for _ in range({FLOOD_MB}):\n    sys.stdout.buffer.write(block)\n"
        "sys.stdout.flush()\n"
    ),
    "outside": (
        # Writes beside itself, into a sibling container, at the project root, and
        # outside the project entirely; same content every time.
        "import os\nroot = os.environ['THOT_PROJECT_ROOT']\n"
        "open('note-from-outside.txt', 'w').write('mine\\n')\n"
        "open(os.path.join(root, 'victim', 'dropped-by-outside.txt'), 'w').write('stray\\n')\n"
        "open(os.path.join(root, 'stray-at-root.txt'), 'w').write('stray\\n')\n"
        "open(os.path.join(os.environ['OUTSIDE_DIR'], 'escaped.txt'), 'a').write('x\\n')\n"
    ),
    "victim": "import os\nopen(os.environ['COUNTER'] + '.victim', 'a').write('run\\n')\n",
    "self_input": (
        "from thot import ThotProject\n"
        "db = ThotProject()\nraw = db.find_asset({'type': 'raw'})\n"
        "with open(raw.file, 'a') as fh:\n    fh.write('1\\n')\n"
        "out = db.add_asset({'type': 'derived', 'file': 'out.txt'}, 'out')\n"
        "open(out, 'w').write(open(raw.file).read())\n"
    ),
    "bad_record": (
        "import os\nfrom thot import ThotProject\nThotProject().find_assets({'type': 'raw'})\n"
        "with open(os.environ['THOT_RECORD'], 'ab') as fh:\n"
        "    fh.write(b'[1, 2]\\n{\"event\": \"query\"}\\n{\"event\": \"output\"}\\n\\xff\\xfe\\x00\\n')\n"
        "    fh.write(b'{\"event\": \"query\", \"kind\": 5, \"search\": null, \"opaque\": 0, \"ids\": 7}\\n')\n"
    ),
    "query_flood": (
        "from thot import ThotProject\ndb = ThotProject()\n"
        "for _ in range(400):\n    db.find_assets({'type': 'raw'})\n"
        "    db.find_containers({'name': {'$regex': '^q'}})\n"
    ),
    "root": "import os\nopen(os.environ['COUNTER'] + '.root', 'a').write('run\\n')\n",
}

EXPECTED = {  # script -> (status, exit code or None for "any")
    "fails": ("failed", 3),
    "segfaults": ("failed", None),
    "hangs": ("timeout", None),
    "hangs_ignoring_term": ("timeout", None),
    "forks": ("ok", 0),
    "chatty": ("ok", 0),
    "outside": ("ok", 0),
    "victim": ("ok", 0),
    "self_input": ("ok", 0),
    "bad_record": ("ok", 0),
    "query_flood": ("ok", 0),
    "root": ("ok", 0),
}
# Runs per round at most: one each, plus the reruns the design allows.
MAX_RUNS = {"victim": 2, "root": 3, "self_input": 3}

ROWS = {
    "script fails (exit 3; SIGSEGV)": ("fails", "segfaults"),
    f"script hangs past its {TIMEOUT_S:g} s timeout (one ignores SIGTERM)": ("hangs", "hangs_ignoring_term"),
    "script forks children (one deaf to SIGTERM) and exits": ("forks",),
    f"script prints {FLOOD_MB // 1024} GiB (log cap 1 MiB)": ("chatty",),
    "script writes outside its container and the project": ("outside", "victim", "root"),
    "script changes its own inputs": ("self_input",),
    "script corrupts its run record": ("bad_record",),
    "script floods the socket (800 queries)": ("query_flood",),
}


def _project(base: Path) -> Path:
    scripts = base / "scripts"
    scripts.mkdir(parents=True)
    for name, text in SCRIPTS.items():
        (scripts / f"{name}.py").write_text(text)
    proj = base / "proj"
    proj.mkdir()
    (proj / "_container.json").write_text(json.dumps({"name": "proj"}))
    (proj / "_scripts.json").write_text(json.dumps([{"script": "root:/../scripts/root.py"}]))
    for name in SCRIPTS:
        if name == "root":
            continue
        folder = proj / name
        folder.mkdir()
        (folder / "_container.json").write_text(json.dumps({"name": name}))
        (folder / "_scripts.json").write_text(json.dumps([{"script": f"root:/../scripts/{name}.py"}]))
        raw = folder / "raw"
        raw.mkdir()
        (raw / "_asset.json").write_text(json.dumps({"type": "raw", "file": "data.csv"}))
        (raw / "data.csv").write_text("value\n1\n")
    return proj


def _watch_log_size(log_dir: Path, stop: threading.Event, seen: list[int]) -> None:
    """Largest size any run log reached while the flood ran (sampled every 20 ms)."""
    while not stop.is_set():
        for path in log_dir.rglob("*.log"):
            with contextlib.suppress(OSError):
                seen.append(path.stat().st_size)
        stop.wait(0.02)


def _check_round(fd: Daemon, rnd: int, new: list[dict[str, Any]], lost: Counter[str],
                 problems: list[str]) -> Counter[str]:
    """Each run of a round recorded as expected, each script ran as often as allowed, no
    process left behind; how often each script ran."""
    counts = Counter(Path(r["script"]).stem for r in new)
    for r in new:
        name = Path(r["script"]).stem
        status, code = EXPECTED[name]
        if r["status"] != status or (code is not None and r["exit_code"] != code):
            lost[name] += 1
            problems.append(f"round {rnd}: {name} recorded {r['status']}/{r['exit_code']}, "
                            f"expected {status}/{code}")
    for name in EXPECTED:
        if counts[name] < 1 or counts[name] > MAX_RUNS.get(name, 1):
            lost[name] += 1
            problems.append(f"round {rnd}: {name} ran {counts[name]} times")
    server = fd.status()["fork"]["server_pid"]  # the daemon's fork server, not a run's
    left = [p for p in tagged_processes(fd.tag) if p not in (fd.pid, server)]
    if left:
        problems.append(f"round {rnd}: processes left behind: {left}")
        lost["forks"] += 1
    return counts


def _check_after(fd: Daemon, proj: Path, prober: Prober, lost: Counter[str],
                 problems: list[str]) -> list[dict[str, Any]]:
    """Status shows the failing script's output, logs kept to the cap, status answered
    in time throughout; the chatty script's runs."""
    st = fd.project(proj)
    failures = {Path(f["script"]).stem: f for f in st["failures"]}
    if "about to fail" not in "\n".join(failures.get("fails", {}).get("tail", [])):
        problems.append(f"status does not show the failing script's output: {failures.get('fails')}")
    chatty = [r for r in fd.runs() if Path(r["script"]).stem == "chatty"]
    for r in chatty:
        size = os.path.getsize(r["log"])
        if size > LOG_CAP + 4096:
            problems.append(f"chatty log is {size} bytes, cap {LOG_CAP}")
            lost["chatty"] += 1
    if prober.failures:
        problems.append(f"status failed: {prober.failures[:3]}")
    if prober.worst_ms >= 1000:
        problems.append(f"status took {prober.worst_ms:.0f} ms")
    return chatty


def _notes(chatty: list[dict[str, Any]], sizes: list[int],
           counts_per_round: list[Counter[str]]) -> dict[str, str]:
    return {
        "fails": "recorded failed, exit 3 / killed by SIGSEGV; log tail in status",
        "hangs": "recorded timeout; SIGTERM, 1 s grace, SIGKILL to the group; nothing left",
        "forks": "recorded ok; the children in its group were ended when it exited",
        "chatty": (f"recorded ok; logs kept to {max((os.path.getsize(r['log']) for r in chatty), default=0)} "
                   f"bytes, largest seen mid-run {max(sizes, default=0) // (1 << 20)} MiB"),
        "outside": (f"recorded ok; the victim container's script reran at most "
                    f"{max(c['victim'] for c in counts_per_round)}x per round, the root's "
                    f"{max(c['root'] for c in counts_per_round)}x; no loop"),
        "self_input": (f"recorded ok; ran {max(c['self_input'] for c in counts_per_round)}x per round "
                       "(one automatic rerun, then stopped as a cycle); no loop"),
        "bad_record": ("recorded ok; the damaged record makes the run depend on its whole "
                       "subtree (coarse, never too little)"),
        "query_flood": "recorded ok; other clients kept their answers",
    }


def test_misbehaving_scripts(fd: Daemon, tmp_path: Path, reliability: Report) -> None:
    rounds = pick(2, 5)
    base = tmp_path / "work"
    proj = _project(base)
    outside = tmp_path / "outside"
    outside.mkdir()
    fd.env["OUTSIDE_DIR"] = str(outside)
    fd.env["COUNTER"] = str(tmp_path / "counter")
    fd.configure(pool={"workers": 2, "timeout_s": TIMEOUT_S, "log_cap_bytes": LOG_CAP},
                 daemon={"settle_ms": 50, "shutdown_grace_s": 1})
    rows = {title: reliability.row(title) for title in ROWS}
    lost: Counter[str] = Counter()
    problems: list[str] = []
    sizes: list[int] = []
    fd.start()
    log_dir = fd.state.parent / "runs"
    stop = threading.Event()
    sizer = threading.Thread(target=_watch_log_size, args=(log_dir, stop, sizes), daemon=True)
    sizer.start()
    counts_per_round: list[Counter[str]] = []
    with Prober(fd.socket, interval=0.1, timeout=5) as prober:
        seen = 0
        for rnd in range(rounds):
            if rnd == 0:
                fd.add(proj, wait=False)
            else:
                fd.rpc("rerun", {"path": str(proj)})
            fd.wait_quiet(240)
            runs = sorted(fd.runs(), key=lambda r: r["id"])
            new, seen = [r for r in runs if r["id"] > seen], max([seen, *(r["id"] for r in runs)])
            counts_per_round.append(_check_round(fd, rnd, new, lost, problems))
        # No loop: once quiet, the daemon stays quiet (checked for a few settle periods).
        total = len(fd.runs())
        for _ in range(10):
            fd.wait_quiet(60)
        if len(fd.runs()) != total:
            problems.append("runs kept starting after the project went quiet")
            lost["self_input"] += 1
    stop.set()
    sizer.join(5)
    chatty = _check_after(fd, proj, prober, lost, problems)
    notes = _notes(chatty, sizes, counts_per_round)
    for title, names in ROWS.items():
        row = rows[title]
        row.tries = rounds
        row.lost = sum(lost[n] for n in names)
        row.worst(prober)
        row.notes = notes[names[0]] + "; all misbehaving side by side on 2 workers"
    assert not problems, "\n".join(problems)
    assert fd.alive()
    wait_for(lambda: fd.status()["quiet"], 30, "quiet")
