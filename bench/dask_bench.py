"""The dask executor against the local one, on this machine (issue 14).

1. **Per-run overhead**: the same trivial Python script run one after the other through the
   local executor and through the dask executor (a real ``dask scheduler`` and ``dask
   worker`` on loopback); overhead = median dask run - median local run. Goal <= 20 ms.
2. **Throughput**: runs of a ``time.sleep(1)`` script submitted at once to 16 worker
   threads (one ``dask worker --nthreads 16``: the runs are subprocesses, so threads are
   workers); goal: 1,000 runs within 1.3x of 1000/16 s. ``--quick``: 160 runs. The same
   runs through the local executor, 16 at a time, are timed for reference: on a small
   machine process start-up (CPU) rather than the executor sets the pace.

Prints PASS/FAIL per goal; exits 1 if one fails. Results go to ``bench/results/``.

    python bench/dask_bench.py [--quick] [--runs N] [--overhead-runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, fmt, machine_info, med, now_iso, print_goals, write_result  # noqa: E402

WORKERS = 16


def _start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def start_cluster(tmp: Path, nthreads: int) -> tuple[str, list[subprocess.Popen[bytes]]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    sched_file = tmp / "scheduler.json"
    procs = [_start([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                     "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)],
                    tmp / "scheduler.log", env)]
    deadline = time.monotonic() + 60
    while not (sched_file.exists() and sched_file.stat().st_size):
        if time.monotonic() > deadline:
            raise RuntimeError("the scheduler did not start")
        time.sleep(0.1)
    address = json.loads(sched_file.read_text())["address"]
    procs.append(_start([sys.executable, "-m", "distributed.cli.dask_worker", address,
                         "--nthreads", str(nthreads), "--no-nanny", "--no-dashboard",
                         "--local-directory", str(tmp / "worker")], tmp / "worker.log", env))
    return address, procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def make_project(tmp: Path, body: str) -> tuple[Path, Path]:
    root = tmp / "project"
    root.mkdir(parents=True, exist_ok=True)
    (root / "_container.json").write_text('{"name": "bench"}\n')
    script = tmp / "script.py"
    script.write_text(body)
    return root, script


def job(root: Path, script: Path, logs: Path, i: int) -> Any:
    from thotd.executor.choose import Job
    from thotd.executor.runspec import RunSpec, script_env

    log = logs / f"run-{i}.log"
    env = script_env(os.environ, {"THOT_CONTAINER_ID": str(root), "THOT_SCRIPT_ID": str(script),
                                  "THOT_PROJECT_ROOT": str(root), "THOT_RECORD": f"{log}.record",
                                  "PYTHONUNBUFFERED": "1"})
    spec = RunSpec(script=script, cwd=root, env=env, log_path=log, timeout_s=600,
                   log_cap_bytes=1 << 20)
    return Job(spec, str(root))


def wait_workers(ex: Any, n: int) -> None:
    deadline = time.monotonic() + 60
    while not (ex.status()["connected"] and len(ex.status()["workers"]) >= n):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no Dask worker: {ex.status()}")
        time.sleep(0.1)


def overhead(tmp: Path, address: str, runs: int) -> dict[str, Any]:
    from thotd.executor.dask.client import DaskExecutor
    from thotd.executor.local import LocalExecutor

    root, script = make_project(tmp / "overhead", "x = 1\n")
    logs = tmp / "overhead-logs"
    logs.mkdir()
    local = LocalExecutor()
    remote = DaskExecutor(scheduler=address)
    wait_workers(remote, 1)
    times: dict[str, list[float]] = {"local": [], "dask": []}
    try:
        for i in range(runs + 2):  # the first two of each warm up
            for name, ex in (("local", local), ("dask", remote)):
                t0 = time.perf_counter()
                res = ex.run_sync(job(root, script, logs, i * 2 + (name == "dask")))
                dt = time.perf_counter() - t0
                assert res.status == "ok", (name, res)
                if i >= 2:
                    times[name].append(dt)
    finally:
        remote.close()
    lo, hi = med(times["local"]), med(times["dask"])
    assert lo is not None and hi is not None
    return {"runs": runs, "local_median_s": lo, "dask_median_s": hi,
            "overhead_ms": (hi - lo) * 1000}


def throughput(tmp: Path, address: str, runs: int) -> dict[str, Any]:
    from thotd.executor.dask.client import DaskExecutor

    root, script = make_project(tmp / "throughput", "import time\ntime.sleep(1)\n")
    logs = tmp / "throughput-logs"
    logs.mkdir()
    ex = DaskExecutor(scheduler=address)
    wait_workers(ex, 1)

    async def all_runs() -> list[Any]:
        return list(await asyncio.gather(*(ex.run_async(job(root, script, logs, i))
                                           for i in range(runs))))

    try:
        t0 = time.perf_counter()
        results = asyncio.run(all_runs())
        elapsed = time.perf_counter() - t0
    finally:
        ex.close()
    ok = sum(r.status == "ok" for r in results)
    ideal = runs / WORKERS
    return {"runs": runs, "ok": ok, "elapsed_s": elapsed, "ideal_s": ideal,
            "ratio": elapsed / ideal}


def local_throughput(tmp: Path, runs: int) -> dict[str, Any]:
    """The same runs through the local executor, 16 at a time: what this machine itself
    allows (process start-up is CPU; the sleeps are not)."""
    from thotd.executor.local import LocalExecutor

    root, script = make_project(tmp / "local-throughput", "import time\ntime.sleep(1)\n")
    logs = tmp / "local-throughput-logs"
    logs.mkdir()
    ex = LocalExecutor()

    async def all_runs() -> list[Any]:
        gate = asyncio.Semaphore(WORKERS)

        async def one(i: int) -> Any:
            async with gate:
                return await ex.run_async(job(root, script, logs, i))

        return list(await asyncio.gather(*(one(i) for i in range(runs))))

    t0 = time.perf_counter()
    results = asyncio.run(all_runs())
    elapsed = time.perf_counter() - t0
    return {"runs": runs, "ok": sum(r.status == "ok" for r in results), "elapsed_s": elapsed,
            "ratio": elapsed / (runs / WORKERS)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="160 throughput runs, 20 overhead runs")
    ap.add_argument("--runs", type=int, default=None, help="throughput runs (default 1000)")
    ap.add_argument("--overhead-runs", type=int, default=None)
    args = ap.parse_args()
    runs = args.runs or (160 if args.quick else 1000)
    oruns = args.overhead_runs or (20 if args.quick else 50)
    with tempfile.TemporaryDirectory(prefix="thotd-dask-bench-") as t:
        tmp = Path(t)
        address, procs = start_cluster(tmp, WORKERS)
        try:
            over = overhead(tmp, address, oruns)
            print(f"per-run: local {fmt(over['local_median_s'] * 1000, 1)} ms, dask "
                  f"{fmt(over['dask_median_s'] * 1000, 1)} ms, overhead "
                  f"{fmt(over['overhead_ms'], 1)} ms ({oruns} runs each)", flush=True)
            thr = throughput(tmp, address, runs)
            print(f"throughput: {thr['ok']}/{runs} ok in {fmt(thr['elapsed_s'], 1)} s "
                  f"(ideal {fmt(thr['ideal_s'], 1)} s with {WORKERS} workers: "
                  f"{fmt(thr['ratio'], 2)}x)", flush=True)
        finally:
            stop(procs)
        base = local_throughput(tmp, runs)
        print(f"for reference, local executor 16 at a time: {fmt(base['elapsed_s'], 1)} s "
              f"({fmt(base['ratio'], 2)}x)", flush=True)
    goals = {"overhead<=20ms": over["overhead_ms"] <= 20,
             "throughput<=1.3x": thr["ok"] == runs and thr["ratio"] <= 1.3}
    passed = print_goals(goals)
    write_result("dask", args.quick, {"when": now_iso(), "machine": machine_info(),
                                      "overhead": over, "throughput": thr, "local_throughput": base,
                                      "goals": goals})
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
