"""Does thotd's own cost grow with the project, or with the change? (issue 12)

Three modes, each over 10x10 and 100x100 (300x100 with ``--big``), with ratios between the
sizes of one run of this script, on one machine:

* ``--full-run`` (goal 3): per-run overhead of the initial full run, below.
* ``--start`` (goal 2): a real ``thotd`` on a project some ``thot run`` left (state and index
  snapshot): start -> the socket answers (``hello``), -> loaded, -> quiet; then a clean stop,
  5 samples' data changed, start again: -> the socket answers, -> the 5 changed samples'
  runs queued or started (the catch-up found them), -> quiet, and whether exactly the
  expected runs ran. PASS: the socket answers within 0.5 s at every size (and says
  ``loading`` while it loads); the catch-up finds the runs within 3 s at the largest size.
* ``--react`` (goal 1): the same daemon, ``--drops`` new samples copied in one by one (file
  by file, ``bench/gen.py add_sample``): last byte written -> the sample's run started, minus
  the settle period (the daemon's share), and -> the summary file rewritten (p50, p95). PASS:
  the share at the largest size within 1.5x of the smallest's; summary p50 <= 0.2 s at the
  largest size. Each drop is checked too: exactly its chain (sample, group, project) ran once
  and, once quiet, the summary equals a fresh full run's (``engine_bench.expected_summary``,
  an oracle independent of thotd); then ``--burst`` (200) new samples at once: each sample's
  run exactly once, the summary equal to the oracle once quiet. A wrong result is a FAIL.

The projects and their first full run (real scripts: minutes at 100x100) are kept under
``--work`` (default ``bench/work/scale``) and reused by later runs.

    python bench/scale_bench.py --start --react        # 10x10 and 100x100
    python bench/scale_bench.py --start --big          # and 300x100 (slow: 60,301 folders)

The ``--full-run`` mode:

``--full-run`` generates ``bench/gen.py`` G×S projects, replaces their three scripts with a
trivial one (``pass``: what is left of a run's time is thotd's own overhead), runs ``thot run``
on each from an empty state database and prints the time per run, overall and steady (from
the runs' finish times in the state database: start-up left out). PASS when the steady
per-run overhead of the largest size is within 1.5x of the smallest's (ratios within one run
of this script, on one machine).

    python bench/scale_bench.py --full-run            # 10x10 and 100x100
    python bench/scale_bench.py --full-run --big      # and 300x100 (slow: 30,301 runs)

``--memory`` (issue 12, goal 4) measures what the daemon holds per project: after a full
``thot run`` of each size, a fresh child loads the index and the engine as ``thotd`` does at
start (``Index.load``, ``Engine``, the plan, every run checked, so every record is decoded)
and reports RSS and bytes per object and per run; the 300x100 RSS is extrapolated from the
largest size measured (PASS when <= 250 MB). See :func:`memory_main`.

    python bench/scale_bench.py --memory              # 10x10 and 100x100
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import gen  # noqa: E402
from bench.common import REPO, WORK, clean_env  # noqa: E402

#: The largest size's per-run overhead may be this many times the smallest's.
FLAT = 1.5
SIZES = [(10, 10), (100, 100)]
BIG = (300, 100)
SOCKET_S = 0.5  # goal 2: start -> the socket answers, at every size
CATCH_UP_S = 3.0  # goal 2: restart catch-up at the largest size
SUMMARY_S = 0.2  # goal 1: drop -> summary p50 at the largest size


def full_run(work: Path, groups: int, samples: int, jobs: int) -> dict[str, float]:
    """One size: generate, trivialise the scripts, ``thot run``; per-run times in ms."""
    tree = work / f"g{groups}x{samples}"
    project = gen.make_gs(tree, groups, samples)
    for script in (tree / "analysis").glob("*.py"):
        script.write_text("pass\n", encoding="utf-8")
    state = work / f"state-{groups}x{samples}" / "thot.db"
    state.parent.mkdir(parents=True)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "thotd.cli.thot", "--state", str(state),
           "run", "--root", str(project), "-j", str(jobs), "--json"]
    env = {**clean_env(), "PYTHONPATH": str(REPO)}  # this checkout's thot
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    rep = json.loads(proc.stdout)
    runs = len(rep["runs"])
    ok = rep["counts"].get("ok", 0)
    if proc.returncode != 0 or ok != runs:
        raise SystemExit(f"{groups}x{samples}: thot run failed: {rep['counts']}\n{proc.stderr[-2000:]}")
    return {"runs": runs, "wall_s": wall, "ms_per_run": 1000 * rep["elapsed_s"] / runs,
            **steady(state)}


def steady(state: Path) -> dict[str, float]:
    """Time per finished run in the run's first and last fifths, and between its 10th and
    90th percentile (start-up and the fork server's warm-up left out): a queue that costs
    O(queue) per run shows as a gap between the first fifth (queue full) and the last."""
    db = sqlite3.connect(state)
    ends = sorted(r[0] for r in db.execute("SELECT finished FROM history"))
    db.close()
    n = len(ends)

    def per_run(a: float, b: float) -> float:
        i, j = int(a * (n - 1)), int(b * (n - 1))
        return 1000 * (ends[j] - ends[i]) / max(1, j - i)

    return {"steady_ms": per_run(0.1, 0.9), "first_ms": per_run(0.1, 0.3),
            "last_ms": per_run(0.7, 0.9)}


def _full_run_mode(args: argparse.Namespace, sizes: list[tuple[int, int]]) -> bool:
    rows = []
    # (a fork server may still be closing its files as the folder goes)
    with tempfile.TemporaryDirectory(prefix="thotd-scale-", ignore_cleanup_errors=True) as tmp:
        for g, s in sizes:
            print(f"{g}x{s}: full run ...", flush=True)
            rows.append(((g, s), full_run(Path(tmp), g, s, args.jobs)))
            print(f"  {rows[-1][1]}", flush=True)
    print(f"| G×S | runs | wall | elapsed / run | steady / run (10-90 %) "
          f"| early (10-30 %) | late (70-90 %) |  (-j {args.jobs}, ms)")
    print("|---|---|---|---|---|---|---|")
    for (g, s), r in rows:
        print(f"| {g}×{s} | {r['runs']:.0f} | {r['wall_s']:.1f} s | {r['ms_per_run']:.1f} "
              f"| {r['steady_ms']:.1f} | {r['first_ms']:.1f} | {r['last_ms']:.1f} |")
    ratio = rows[-1][1]["steady_ms"] / rows[0][1]["steady_ms"]
    verdict = "PASS" if ratio <= FLAT else "FAIL"
    (g, s), _ = rows[-1]
    print(f"{verdict}: steady per-run overhead at {g}×{s} is {ratio:.2f}x that at "
          f"{rows[0][0][0]}×{rows[0][0][1]} (flat within {FLAT}x)")
    return verdict == "PASS"


def _start_mode(args: argparse.Namespace, sizes: list[tuple[int, int]]) -> bool:
    from bench.scale_daemon import start_mode

    rows = []
    for g, s in sizes:
        print(f"{g}x{s}: start, stop, change {5} samples, start ...", flush=True)
        rows.append(((g, s), start_mode(args.work, g, s)))
        print(f"  {rows[-1][1]}", flush=True)
    print("| G×S | first start: socket / loaded / quiet | restart: socket | said loading "
          "| catch-up found the 5 | loaded | quiet | runs (exact) |")
    print("|---|---|---|---|---|---|---|---|")
    for (g, s), r in rows:
        said = "yes" if r["loading"] else "no (loaded already)"
        print(f"| {g}×{s} | {r['first_socket_s']:.2f} / {r['first_loaded_s']:.2f} / "
              f"{r['first_quiet_s']:.1f} s | {r['socket_s']:.2f} s | {said} | "
              f"{r['catch_up_s']:.2f} s | {r['loaded_s']:.2f} s | {r['quiet_s']:.2f} s "
              f"| {r['runs']} ({'yes' if r['exact'] else 'NO'}) |")
    socket_ok = all(max(r["socket_s"], r["first_socket_s"]) <= SOCKET_S for _, r in rows)
    (g, s), last = rows[-1]
    catch_ok = last["catch_up_s"] <= CATCH_UP_S and all(r["exact"] for _, r in rows)
    worst = max(max(r["socket_s"], r["first_socket_s"]) for _, r in rows)
    print(f"{'PASS' if socket_ok else 'FAIL'}: the socket answers within {worst:.2f} s at every "
          f"size (goal {SOCKET_S} s)")
    print(f"{'PASS' if catch_ok else 'FAIL'}: restart catch-up at {g}×{s} found the changed "
          f"runs in {last['catch_up_s']:.2f} s (goal {CATCH_UP_S} s), exactly the expected runs ran")
    return socket_ok and catch_ok


def _react_mode(args: argparse.Namespace, sizes: list[tuple[int, int]]) -> bool:
    from bench.scale_daemon import react_mode

    rows = []
    for g, s in sizes:
        print(f"{g}x{s}: {args.drops} drops ...", flush=True)
        rows.append(((g, s), react_mode(args.work, g, s, args.drops, args.burst)))
        print(f"  {rows[-1][1]}", flush=True)
    print("| G×S | copy -> first run (p50) | daemon's share (minus settle) | drop -> summary p50 / p95 |")
    print("|---|---|---|---|")
    for (g, s), r in rows:
        print(f"| {g}×{s} | {r['first_p50_s'] * 1000:.0f} ms | {r['share_p50_s'] * 1000:.0f} ms "
              f"| {r['summary_p50_s']:.3f} / {r['summary_p95_s']:.3f} s |")
    (g, s), last = rows[-1]
    ratio = last["share_p50_s"] / max(rows[0][1]["share_p50_s"], 1e-3)
    share_ok = ratio <= FLAT
    summ_ok = last["summary_p50_s"] <= SUMMARY_S
    print(f"{'PASS' if share_ok else 'FAIL'}: the daemon's share at {g}×{s} is {ratio:.2f}x "
          f"that at {rows[0][0][0]}×{rows[0][0][1]} (within {FLAT}x)")
    print(f"{'PASS' if summ_ok else 'FAIL'}: drop -> summary p50 at {g}×{s} is "
          f"{last['summary_p50_s']:.3f} s (goal {SUMMARY_S} s)")
    if args.snakemake:
        _snakemake_rows(args, rows)
    right = all(r["exact"] and r["oracle"] and r.get("burst_exact", True)
                and r.get("burst_oracle", True) for _, r in rows)
    for (g, s), r in rows:
        if "burst" in r:
            print(f"  {g}×{s}: burst of {r['burst']} samples -> quiet in {r['burst_quiet_s']:.1f} s, "
                  f"{r['burst_runs']} runs")
    print(f"{'PASS' if right else 'FAIL'}: at every size each drop ran exactly its chain once and "
          "the summary equals a fresh full run" + (" (and after the burst)" if args.burst else ""))
    return share_ok and summ_ok and right


def _snakemake_rows(args: argparse.Namespace, rows: list[tuple[tuple[int, int], dict[str, Any]]]) -> None:
    """Snakemake's reaction to one new sample on the same sizes, in the same run: does its
    ratio to ours grow with the project (as it should: it rebuilds its DAG every time)?"""
    from bench.engine_bench import snakemake_reaction

    print("| G×S | thotd drop -> summary p50 | Snakemake one-shot (median) | ratio |")
    print("|---|---|---|---|")
    for (g, s), r in rows:
        smk = snakemake_reaction(args.work / f"smk-{g}x{s}", g, s, 3,
                                 log=lambda m: print(f"  {m}", flush=True))
        if not smk.get("available"):
            print(f"| {g}×{s} | {r['summary_p50_s']:.3f} s | not measured: {smk.get('error')} | |")
            continue
        ok = "" if smk["all_ok"] else " (CHECK FAILED)"
        print(f"| {g}×{s} | {r['summary_p50_s']:.3f} s | {smk['wall_s_median']:.2f} s{ok} "
              f"| {smk['wall_s_median'] / r['summary_p50_s']:.1f}x |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full-run", action="store_true",
                    help="per-run overhead of the initial full run (goal 3)")
    ap.add_argument("--start", action="store_true",
                    help="start -> socket answers; restart catch-up (goal 2)")
    ap.add_argument("--react", action="store_true",
                    help="copy -> first run; drop -> summary (goal 1)")
    ap.add_argument("--memory", action="store_true",
                    help="the daemon's memory per object and per run (goal 4)")
    ap.add_argument("--big", action="store_true", help=f"add {BIG[0]}x{BIG[1]}")
    ap.add_argument("--sizes", default=None, help="e.g. 10x10,100x100 (instead of the default)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--drops", type=int, default=10)
    ap.add_argument("--no-snakemake", dest="snakemake", action="store_false",
                    help="--react: skip Snakemake's reaction on the same sizes")
    ap.add_argument("--burst", type=int, default=200,
                    help="--react: then this many new samples at once (0: none)")
    ap.add_argument("--work", type=Path, default=WORK / "scale",
                    help="where the projects and their first run are kept (reused)")
    args = ap.parse_args(argv)
    if not (args.full_run or args.start or args.react or args.memory):
        ap.error("choose at least one of --full-run, --start, --react, --memory")
    sizes = SIZES + ([BIG] if args.big else [])
    if args.sizes:
        sizes = [(int(a), int(b)) for a, b in (x.split("x") for x in args.sizes.split(","))]
    ok = True
    if args.full_run:
        ok &= _full_run_mode(args, sizes)
    if args.start:
        ok &= _start_mode(args, sizes)
    if args.react:
        ok &= _react_mode(args, sizes)
    if args.memory:
        ok &= memory_main(sizes, args.jobs) == 0
    return 0 if ok else 1


# ---------------------------------------------------------------------- --memory (goal 4)

#: Idle memory the daemon may hold at 300x100 (issue 12, goal 4).
MEMORY_GOAL_MB = 250.0

_MEMORY_CHILD = r"""
import gc, json, sys
from pathlib import Path

def rss_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

from thotd.engine.staleness import Engine
from thotd.engine.state import Store
from thotd.project.index import Index
root, state = sys.argv[1], sys.argv[2]
gc.collect()
base = rss_mb()
index = Index.load(root)
gc.collect()
loaded = rss_mb()
engine = Engine(index, Store(Path(state)))
plan = engine.plan()
stale = engine.stale(plan)  # what the start-up catch-up does: every record is decoded
gc.collect()
checked = rss_mb()
print(json.dumps({"base_mb": base, "index_mb": loaded - base, "engine_mb": checked - loaded,
                  "rss_mb": checked, "objects": len(index.nodes), "runs": len(plan),
                  "stale": len(stale)}))
"""


def _vm_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0]) / 1024
    return out


def _rpc(sock_path: Path, method: str, params: dict[str, str]) -> dict[str, object]:
    """One JSON-RPC call on the daemon's socket, waiting as long as it takes (loading a big
    project on a loaded machine takes longer than ``thotctl``'s 30 s)."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1800)
        sock.connect(str(sock_path))
        sock.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                                 "params": params}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            buf += chunk
    reply: dict[str, object] = json.loads(buf)
    return reply


def daemon_idle_mb(home: Path, project: Path, env: dict[str, str]) -> dict[str, float]:
    """A real ``thotd`` watching the project, whose runs the full run already recorded in
    the daemon's own state database: its RSS once ``thotctl wait`` says it is idle."""
    run = home / "run"
    env = {**env, "XDG_RUNTIME_DIR": str(run), "XDG_STATE_HOME": str(home / "state"),
           "XDG_CONFIG_HOME": str(home / "cfg"), "THOTD_SOCKET": str(run / "thotd.sock"),
           "THOTD_CONFIG": str(home / "config.toml")}
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
        env.pop(var, None)

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "thotd.cli.thotctl", *args], env=env,
                              capture_output=True, text=True, timeout=1800, check=False,
                              cwd=REPO)  # -m puts the working folder first on sys.path

    with open(home / "daemon.out", "ab") as out:
        daemon = subprocess.Popen([sys.executable, "-m", "thotd.cli.thotd", "start",
                                   "--foreground"], env=env, stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while ctl("status").returncode not in (0, 1):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("thotd did not start:\n"
                                 + (home / "daemon.out").read_text(errors="replace")[-2000:])
            time.sleep(0.2)
        added = _rpc(run / "thotd.sock", "add", {"path": str(project)})  # thotctl waits 30 s
        if "error" in added:
            raise SystemExit(f"add failed: {added['error']}")
        waited = ctl("wait", "--timeout", "1200")
        if waited.returncode != 0:
            raise SystemExit(f"thotctl wait failed: {waited.stdout}{waited.stderr}")
        status = json.loads(ctl("status", "--json").stdout or "{}")
        runs = sum(len(p.get("running", [])) for p in status.get("projects", []))
        objects = sum(p.get("objects", 0) for p in status.get("projects", []))
        return {**_vm_mb(daemon.pid), "running": runs, "objects": objects}
    finally:
        daemon.terminate()  # SIGTERM: the daemon's own orderly stop
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def memory_size(work: Path, groups: int, samples: int, jobs: int) -> dict[str, float]:
    """One size: generate, ``thot run`` it in full (real scripts: their records are what
    the daemon keeps) into the state database a daemon will use, then measure a fresh
    child that loads it as the daemon does, and the daemon itself, idle."""
    tree = work / f"mem-g{groups}x{samples}"
    project = gen.make_gs(tree, groups, samples)
    home = Path(tempfile.mkdtemp(prefix="thotd-mem-", dir="/tmp"))  # sun_path: 108 bytes
    (home / "run").mkdir(mode=0o700)
    (home / "config.toml").write_text("[daemon]\nshutdown_grace_s = 5\n")
    state = home / "state" / "thotd" / "state.sqlite3"  # where the daemon looks
    state.parent.mkdir(parents=True, mode=0o700)
    env = {**clean_env(), "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "thotd.cli.thot", "--state", str(state), "run",
                          "--root", str(project), "-j", str(jobs), "--json"],
                         capture_output=True, text=True, env=env, check=False, cwd=REPO)
    if run.returncode != 0:
        raise SystemExit(f"{groups}x{samples}: thot run failed:\n{run.stderr[-2000:]}")
    child = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(project), str(state)],
                           capture_output=True, text=True, env=env, check=False, cwd=REPO)
    if child.returncode != 0:
        raise SystemExit(f"{groups}x{samples}: measuring failed:\n{child.stderr[-2000:]}")
    out: dict[str, float] = json.loads(child.stdout.strip().splitlines()[-1])
    import shutil

    try:
        idle = daemon_idle_mb(home, project, env)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    out["daemon_rss_mb"], out["daemon_peak_mb"] = idle["VmRSS"], idle["VmHWM"]
    return out


def memory_main(sizes: list[tuple[int, int]], jobs: int) -> int:
    """``--memory``: the table, bytes per object and per run, and the goal's verdict from
    the largest size measured, extrapolated linearly to 300x100."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="thotd-mem-", ignore_cleanup_errors=True) as tmp:
        for g, s in sizes:
            print(f"{g}x{s}: full run, then measuring ...", flush=True)
            rows.append(((g, s), memory_size(Path(tmp), g, s, jobs)))
            print(f"  {rows[-1][1]}", flush=True)
    print("| G×S | objects | runs | in-process: modules MB | index MB | engine MB "
          "| index B/object | engine B/run | thotd idle RSS / peak MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (g, s), r in rows:
        print(f"| {g}×{s} | {r['objects']:.0f} | {r['runs']:.0f} | {r['base_mb']:.1f} "
              f"| {r['index_mb']:.1f} | {r['engine_mb']:.1f} "
              f"| {r['index_mb'] * 2**20 / r['objects']:.0f} "
              f"| {r['engine_mb'] * 2**20 / r['runs']:.0f} "
              f"| {r['daemon_rss_mb']:.1f} / {r['daemon_peak_mb']:.1f} |")
    (g0, s0), small = rows[0]
    (g, s), big = rows[-1]
    if (g, s) == BIG:
        projected, how = big["daemon_rss_mb"], "measured"
    else:  # what grows with the project, from the two ends measured, carried to 300x100
        per_sample = (big["daemon_rss_mb"] - small["daemon_rss_mb"]) / (g * s - g0 * s0)
        projected = small["daemon_rss_mb"] + per_sample * (BIG[0] * BIG[1] - g0 * s0)
        how = f"extrapolated linearly from {g0}×{s0} and {g}×{s}"
    verdict = "PASS" if projected <= MEMORY_GOAL_MB else "FAIL"
    print(f"{verdict}: thotd idle RSS at {BIG[0]}×{BIG[1]}: {projected:.0f} MB ({how}; "
          f"goal <= {MEMORY_GOAL_MB:.0f} MB)")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
