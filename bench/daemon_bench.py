"""Daemon bench: a real ``thotd`` reacting to dropped samples, vs Snakemake run by hand.

Issue: on a 100 × 10 project, 20 drops of a new sample; latency from the last byte written
to the root result updated (p50, p95), the daemon's own share (latency minus the three
scripts' run time), its idle CPU and its RSS; side by side, the time Snakemake needs to
react to the same drop when run by hand. Goals: p50 under 0.5 s end to end, the daemon's
share under 150 ms, idle CPU near zero, RSS under 150 MB with 10,000 objects watched, and
at least 10× faster than the Snakemake reaction. Report the ratio.

What it does:

1. ``make_gs(G, S)`` under ``bench/work/daemon-<G>x<S>-<stamp>/``; starts
   ``python -m thotd.cli.thotd start --foreground`` isolated in a temporary home
   (``XDG_RUNTIME_DIR``, ``XDG_STATE_HOME``, ``XDG_CONFIG_HOME``, ``THOTD_SOCKET``,
   ``THOTD_CONFIG`` → ``[daemon] settle_ms = 100``, ``[pool] workers = 2``);
   ``thotctl add P``; ``thotctl wait`` through the initial full run (every run once).
2. ``--drops`` times: ``add_sample`` (file by file, as a file manager would), the clock
   starting when its last file (``raw/data.csv``) is written and closed; then a tight loop
   (5 ms) reads ``summary/summary.txt`` until it holds exactly the summary expected with the
   new sample (computed by the bench from the raw numbers). ``thotctl wait``, then
   ``thotctl runs P --json`` gives the runs that started since the drop: they must be exactly
   the sample's, its group's and the root's, all ``ok``. Daemon share = latency − the three
   runs' durations (each ``finished − started``: spawn to exit of the script process).
   The share is also broken down along the runs' timestamps: last write → first run started
   (settle + stability looks + index update + staleness + spawn), the gaps between one run's
   end and the next one's start, and last run's end → summary seen by the poller.
3. Idle CPU: ``utime + stime`` of the daemon from ``/proc/<pid>/stat`` over a quiet window
   (``--idle-s``, 10 s), as a percentage of one core. RSS: ``VmRSS`` and ``VmHWM`` from
   ``/proc/<pid>/status`` after the drops.
4. A second daemon on ``make_flat(5000 containers, 5000 assets)`` with the groups'
   ``_scripts.json`` removed (10,000 objects watched, no runs): RSS, peak RSS and idle CPU once
   quiet, and the time ``thotctl add`` + ``wait`` took.
5. Snakemake's reaction by hand: ``engine_bench.snakemake_reaction`` (a throwaway venv under
   ``bench/.venvs/snakemake``, the equivalent Snakefile, full run, then ``--smk-drops`` drops,
   each timed as a ``snakemake --cores 2`` invocation), or ``--snakemake-from`` an
   ``engine-*.json`` result of the same project size.

Every daemon is stopped (SIGTERM, then SIGKILL after 30 s) on the way out, errors included.

Usage::

    python bench/daemon_bench.py                 # 100 x 10, 20 drops (initial run: minutes)
    python bench/daemon_bench.py --quick         # 10 x 10, 20 drops
    python bench/daemon_bench.py --snakemake-from bench/results/engine-....json
    python bench/daemon_bench.py --skip-snakemake --skip-flat
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import engine_bench as eb  # noqa: E402
import gen  # noqa: E402
from common import WORK, clean_env, fmt, machine_info, now_iso, pct, verdict, write_result  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


class DaemonProc:
    """One isolated ``thotd`` process: its own XDG folders, socket and config."""

    def __init__(self, name: str, *, settle_ms: int = 100, workers: int = 2) -> None:
        # Under /tmp: the socket path must fit in sun_path (108 bytes).
        self.home = Path(tempfile.mkdtemp(prefix=f"thotd-bench-{name}-", dir="/tmp"))
        run_dir = self.home / "run"
        run_dir.mkdir(mode=0o700)
        self.config = self.home / "config.toml"
        self.config.write_text(
            f"[daemon]\nsettle_ms = {settle_ms}\nshutdown_grace_s = 5\n"
            f"[pool]\nworkers = {workers}\n"
        )
        self.env = {
            **clean_env(),
            "XDG_RUNTIME_DIR": str(run_dir),
            "XDG_STATE_HOME": str(self.home / "state"),
            "XDG_CONFIG_HOME": str(self.home / "cfg"),
            "THOTD_SOCKET": str(run_dir / "thotd.sock"),
            "THOTD_CONFIG": str(self.config),
        }
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
            self.env.pop(var, None)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60) -> None:
        out = open(self.home / "daemon.out", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [str(eb.thot_python()), "-m", "thotd.cli.thotd", "start", "--foreground"],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"thotd exited at start ({self.proc.returncode}):\n" + self.output()[-3000:]
                )
            if self.ctl("status", timeout=30).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"thotd did not answer within {timeout:g}s:\n" + self.output()[-3000:]
                )
            time.sleep(0.1)

    def output(self) -> str:
        try:
            return (self.home / "daemon.out").read_text(errors="replace")
        except OSError:
            return ""

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(eb.thot_python()), "-m", "thotd.cli.thotctl", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ctl_json(self, *args: str, timeout: float = 120) -> Any:
        res = self.ctl(*args, "--json", timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(
                f"thotctl {' '.join(args)} failed ({res.returncode}): "
                f"{res.stderr}{res.stdout}\n{self.output()[-3000:]}"
            )
        return json.loads(res.stdout)

    def wait_quiet(self, timeout: float) -> float:
        t0 = time.perf_counter()
        res = self.ctl("wait", "--timeout", str(timeout), timeout=timeout + 60)
        if res.returncode != 0:
            raise RuntimeError(
                f"thotctl wait: not quiet after {timeout:g}s: {res.stdout}"
                f"{res.stderr}\n{self.output()[-3000:]}"
            )
        return time.perf_counter() - t0

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # after the comm: state is fields[0]; utime, stime are stat fields 14, 15
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def mem_mb(self) -> dict[str, float]:
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) / 1024
        return out

    def idle_cpu(self, window: float) -> dict[str, float]:
        c0, t0 = self.cpu_s(), time.perf_counter()
        time.sleep(window)
        c1, t1 = self.cpu_s(), time.perf_counter()
        return {"cpu_s": c1 - c0, "window_s": t1 - t0, "percent": 100 * (c1 - c0) / (t1 - t0)}

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 30 s; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(30)

    def cleanup(self, keep: bool = False) -> None:
        self.stop()
        if not keep:
            shutil.rmtree(self.home, ignore_errors=True)


def _raise_exit(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def ensure_flat(containers: int, assets: int) -> Path:
    """The 10k-object tree, generated once; the groups' ``_scripts.json`` removed (no runs)."""
    WORK.mkdir(parents=True, exist_ok=True)
    name = f"daemon-flat-{containers}c-{assets}a-noscripts"
    root = WORK / name
    marker = WORK / f"{name}.complete"
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        gen.make_flat(root, containers, assets)
        for f in root.rglob("_scripts.json"):
            f.unlink()
        marker.write_text("ok\n")
    return root


def measure_drop(
    d: DaemonProc,
    project: Path,
    layout: eb.Layout,
    analysis: Path,
    group: str,
    sample: str,
    timeout: float,
) -> dict[str, Any]:
    values = gen.sample_values(group, sample)
    layout[group][sample] = [float(v) for v in values]
    expected = eb.summary_from_layout(layout).encode()
    summary = project / "summary" / "summary.txt"

    t_before_wall = time.time()
    gen.add_sample(project, group, sample, values=values)
    t_last = time.perf_counter()
    t_last_wall = time.time()
    data_mtime = (project / group / sample / "raw" / "data.csv").stat().st_mtime
    seen = None
    while True:
        try:
            with open(summary, "rb") as fh:
                content = fh.read()
        except OSError:
            content = None
        if content == expected:
            seen = time.perf_counter()
            seen_wall = time.time()
            break
        if time.perf_counter() - t_last > timeout:
            break
        time.sleep(0.005)
    out: dict[str, Any] = {"group": group, "sample": sample}
    if seen is None:
        out.update(
            ok=False,
            timeout=True,
            latency_s=None,
            summary_now=(summary.read_text() if summary.exists() else None),
        )
        return out
    latency = seen - t_last
    summary_mtime = summary.stat().st_mtime
    d.wait_quiet(600)
    hist = d.ctl_json("runs", str(project), "-n", "20")["runs"]
    mine = sorted(
        (r for r in hist if r["started"] and r["started"] >= t_before_wall - 0.001),
        key=lambda r: r["started"],
    )
    keys = {(r["container"], r["script"]) for r in mine}
    want = {
        (str(project / group / sample), str(analysis / "sample.py")),
        (str(project / group), str(analysis / "group.py")),
        (str(project), str(analysis / "summary.py")),
    }
    durations = [r["finished"] - r["started"] for r in mine if r["finished"]]
    scripts = sum(durations)
    out.update(
        latency_s=latency,
        latency_mtime_s=summary_mtime - data_mtime,
        runs=len(mine),
        run_list=[
            {
                "container": r["container"],
                "script": os.path.basename(r["script"]),
                "status": r["status"],
                "duration_s": r["finished"] - r["started"],
                "trigger": r.get("trigger"),
                "reasons": r["reasons"],
            }
            for r in mine
        ],
        scripts_s=scripts,
        daemon_share_s=latency - scripts,
        expected_runs=keys == want and len(mine) == 3,
        all_ok=all(r["status"] == "ok" for r in mine),
    )
    if mine:
        out["to_first_start_s"] = mine[0]["started"] - t_last_wall
        out["gaps_s"] = [mine[i + 1]["started"] - mine[i]["finished"] for i in range(len(mine) - 1)]
        out["after_last_s"] = seen_wall - max(r["finished"] for r in mine)
        # What the daemon spent before and between the runs (from its own timestamps): the
        # share without the last script's exit, which the poller may see past.
        out["before_runs_s"] = out["to_first_start_s"] + sum(out["gaps_s"])
    out["ok"] = out["expected_runs"] and out["all_ok"]
    return out


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--groups", type=int, default=100)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--drops", type=int, default=20)
    ap.add_argument("--settle-ms", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--idle-s", type=float, default=10.0, help="idle CPU window, seconds")
    ap.add_argument("--drop-timeout", type=float, default=60.0)
    ap.add_argument("--force", action="store_true", help="drop even if the initial run failed")
    ap.add_argument("--flat-containers", type=int, default=5000)
    ap.add_argument("--flat-assets", type=int, default=5000)
    ap.add_argument("--skip-flat", action="store_true")
    ap.add_argument("--skip-snakemake", action="store_true")
    ap.add_argument("--smk-drops", type=int, default=3)
    ap.add_argument("--snakemake-mode", choices=sorted(eb.SNAKEFILES), default="shell")
    ap.add_argument("--snakemake-from", type=Path,
                    help="reuse the Snakemake median of an engine-*.json result")
    ap.add_argument("--quick", action="store_true", help="10 x 10 project")
    ap.add_argument("--keep", action="store_true", help="keep trees and daemon homes")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.groups, args.samples = 10, 10
    return args


def _initial_run(d: DaemonProc, project: Path, layout: eb.Layout, n_runs: int,
                 result: dict[str, Any], problems: list[str]) -> bool:
    """Register the project and wait through its full run; whether it came out clean."""
    print(f"thotd pid {d.pid} (home {d.home}); adding {project} ({n_runs} runs) ...", flush=True)
    t0 = time.perf_counter()
    added = d.ctl_json("add", str(project))
    d.wait_quiet(3600)
    initial_s = time.perf_counter() - t0
    hist = d.ctl_json("runs", str(project), "-n", str(n_runs * 2))["runs"]
    statuses = dict(Counter(r["status"] for r in hist))
    summary_ok = eb.read_text(project / "summary" / "summary.txt") == eb.summary_from_layout(layout)
    result["initial"] = {"wall_s": initial_s, "add": added, "history": statuses,
                         "summary_ok": summary_ok}
    print(f"  initial full run: {initial_s:.1f} s, runs {statuses}, summary "
          f"{'ok' if summary_ok else 'WRONG'}", flush=True)
    if summary_ok and statuses.get("ok", 0) == n_runs:
        return True
    problems.append(f"initial run: {statuses} (want {n_runs} ok), summary_ok={summary_ok}")
    for r in [r for r in hist if r["status"] != "ok"][:3]:
        print(f"  failed: {r['script']} in {r['container']}: log {r['log']}", flush=True)
        tail = eb.read_text(Path(r["log"])) if r.get("log") else None
        if tail:
            print("    | " + "\n    | ".join(tail.splitlines()[-6:]), flush=True)
    return False


def _drops(args: argparse.Namespace, d: DaemonProc, project: Path, layout: eb.Layout,
           problems: list[str]) -> list[dict[str, Any]]:
    """Drop ``--drops`` new samples one after the other, each measured."""
    drops: list[dict[str, Any]] = []
    analysis = project.parent / "analysis"
    for k in range(args.drops):
        if sum(1 for r in drops[-2:] if r.get("timeout")) == 2:
            problems.append("two drops in a row timed out: remaining drops skipped")
            break
        g, s = eb.pick_drop(k, args.groups, args.samples)
        r = measure_drop(d, project, layout, analysis, g, s, args.drop_timeout)
        drops.append(r)
        if r.get("timeout"):
            print(f"  drop {k + 1} ({g}/{s}): TIMEOUT after {args.drop_timeout:g} s", flush=True)
            problems.append(f"drop {k + 1} {g}/{s}: summary not updated in {args.drop_timeout:g} s")
            d.wait_quiet(600)
            continue
        print(f"  drop {k + 1} ({g}/{s}): {r['latency_s']:.3f} s, {r['runs']} runs, scripts "
              f"{r['scripts_s']:.3f} s, daemon {r['daemon_share_s']:.3f} s (first start "
              f"{fmt(r.get('to_first_start_s'))} s, gaps "
              f"{', '.join(f'{x:.3f}' for x in r.get('gaps_s', []))}, tail "
              f"{fmt(r.get('after_last_s'))} s)" + ("" if r["ok"] else "  CHECK FAILED"), flush=True)
        if not r["ok"]:
            problems.append(f"drop {k + 1} {g}/{s}: runs {r['run_list']}")
        time.sleep(0.3)
    return drops


def _p(values: list[float], q: float) -> float | None:
    return pct(values, q) if values else None


def _summarise(drops: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in drops if r.get("latency_s") is not None and "daemon_share_s" in r]
    lat = [r["latency_s"] for r in good]
    share = [r["daemon_share_s"] for r in good]

    def key(name: str) -> list[float]:
        return [r[name] for r in good if name in r]

    return {
        "latency_p50_s": _p(lat, 50),
        "latency_p95_s": _p(lat, 95),
        "latency_max_s": max(lat) if lat else None,
        "latency_mtime_p50_s": _p(key("latency_mtime_s"), 50),
        "share_p50_s": _p(share, 50),
        "share_p95_s": _p(share, 95),
        "scripts_p50_s": _p(key("scripts_s"), 50),
        "to_first_start_p50_s": _p(key("to_first_start_s"), 50),
        "gaps_p50_s": _p([x for r in good for x in r.get("gaps_s", [])], 50),
        "after_last_p50_s": _p(key("after_last_s"), 50),
        "before_runs_p50_s": _p(key("before_runs_s"), 50),
        "before_runs_p95_s": _p(key("before_runs_s"), 95),
        "runs_executed": [r.get("runs") for r in drops],
        "timeouts": sum(1 for r in drops if r.get("timeout")),
        "all_ok": bool(drops) and all(r.get("ok") for r in drops),
    }


def _flat(args: argparse.Namespace, daemons: list[DaemonProc]) -> dict[str, Any]:
    """A second daemon watching the 10k-object flat tree: memory and idle CPU."""
    froot = ensure_flat(args.flat_containers, args.flat_assets)
    fd = DaemonProc("flat", settle_ms=args.settle_ms, workers=args.workers)
    daemons.append(fd)
    fd.start()
    mem0 = fd.mem_mb()
    t0 = time.perf_counter()
    fadd = fd.ctl_json("add", str(froot))
    t_add = time.perf_counter() - t0
    fd.wait_quiet(600)
    t_quiet = time.perf_counter() - t0
    time.sleep(2.0)
    fidle = fd.idle_cpu(args.idle_s)
    fmem = fd.mem_mb()
    fstatus = fd.ctl_json("status")
    fd.stop()
    print(f"flat tree {fadd.get('objects')} objects, {fadd.get('runs')} runs: add "
          f"{t_add:.2f} s; RSS {fmem.get('VmRSS', 0):.1f} MB, peak "
          f"{fmem.get('VmHWM', 0):.1f} MB (before add {mem0.get('VmRSS', 0):.1f}); "
          f"idle CPU {fidle['percent']:.3f} %", flush=True)
    return {
        "root": str(froot), "objects": fadd.get("objects"), "runs": fadd.get("runs"),
        "add_s": t_add, "add_and_quiet_s": t_quiet, "mem_before_add_mb": mem0, "mem_mb": fmem,
        "idle_cpu": fidle, "watch": [p.get("watch") for p in fstatus.get("projects", [])],
    }


def _snakemake(args: argparse.Namespace, work: Path) -> dict[str, Any] | None:
    """Snakemake reacting by hand: measured here, or read from an engine bench result."""
    if args.snakemake_from:
        data = json.loads(args.snakemake_from.read_text())
        sm = data.get("snakemake") or {}
        project = data.get("project") or {}
        if (project.get("groups"), project.get("samples")) != (args.groups, args.samples):
            print(f"note: {args.snakemake_from} is for another project size", flush=True)
        return {"available": bool(sm), "from": str(args.snakemake_from),
                "version": sm.get("version"), "mode": sm.get("mode"),
                "wall_s_median": sm.get("wall_s_median"), "all_ok": sm.get("all_ok"),
                "project": data.get("project")}
    if args.skip_snakemake:
        return None
    smk = eb.snakemake_reaction(work / "snakemake", args.groups, args.samples, args.smk_drops,
                                mode=args.snakemake_mode)
    if not smk.get("available"):
        print(f"snakemake unavailable: {smk.get('error')}", flush=True)
    return smk


def _goals(summ: dict[str, Any], idle: dict[str, Any], flat: dict[str, Any] | None,
           ratio: float | None) -> dict[str, bool]:
    goals: dict[str, bool] = {
        "three_runs_each_drop": summ["all_ok"],
        "p50_under_0.5s": summ["latency_p50_s"] is not None and summ["latency_p50_s"] < 0.5,
        "daemon_share_p50_under_150ms": summ["share_p50_s"] is not None and summ["share_p50_s"] < 0.15,
        "idle_cpu_near_zero_(<1%)": idle["percent"] < 1.0,
    }
    if flat:
        goals["rss_10k_objects_under_150mb"] = flat["mem_mb"].get("VmRSS", 1e9) < 150
    if ratio is not None:
        goals["at_least_10x_faster_than_snakemake"] = ratio >= 10
    return goals


Row = tuple[str, str, str, "bool | None"]


def _rows(args: argparse.Namespace, summ: dict[str, Any], gs: dict[str, Any],
          flat: dict[str, Any] | None, smk: dict[str, Any] | None, ratio: float | None,
          goals: dict[str, bool]) -> list[Row]:
    idle, mem = gs["idle_cpu"], gs["mem_mb"]
    rows: list[Row] = [
        ("latency p50 / p95 (s)", f"{fmt(summ['latency_p50_s'])} / {fmt(summ['latency_p95_s'])}",
         "p50 < 0.5 s", goals["p50_under_0.5s"]),
        ("daemon share p50 / p95 (s)", f"{fmt(summ['share_p50_s'])} / {fmt(summ['share_p95_s'])}",
         "p50 < 0.15 s", goals["daemon_share_p50_under_150ms"]),
        ("  scripts p50 (s)", fmt(summ["scripts_p50_s"]), "", None),
        ("  before/between runs p50 / p95 (s)",
         f"{fmt(summ['before_runs_p50_s'])} / {fmt(summ['before_runs_p95_s'])}", "", None),
        ("  write -> first run start p50 (s)", fmt(summ["to_first_start_p50_s"]), "", None),
        ("  gap between runs p50 (s)", fmt(summ["gaps_p50_s"]), "", None),
        ("  last run end -> seen p50 (s)", fmt(summ["after_last_p50_s"]), "", None),
        ("idle CPU, G x S daemon (%)", f"{idle['percent']:.3f}", "< 1 %",
         goals["idle_cpu_near_zero_(<1%)"]),
        ("RSS / peak, G x S daemon (MB)", f"{mem.get('VmRSS', 0):.1f} / {mem.get('VmHWM', 0):.1f}",
         "", None),
    ]
    if flat:
        rows += [
            (f"RSS / peak, {flat['objects']} objects (MB)",
             f"{flat['mem_mb'].get('VmRSS', 0):.1f} / {flat['mem_mb'].get('VmHWM', 0):.1f}",
             "RSS < 150 MB", goals["rss_10k_objects_under_150mb"]),
            (f"idle CPU, {flat['objects']} objects (%)", f"{flat['idle_cpu']['percent']:.3f}", "", None),
        ]
    if smk and smk.get("wall_s_median"):
        rows += [
            (f"snakemake {smk.get('version')} reaction (s)", fmt(smk["wall_s_median"]), "", None),
            ("ratio snakemake / p50", fmt(ratio, 1, "x"), ">= 10x",
             goals.get("at_least_10x_faster_than_snakemake")),
        ]
    elif not args.skip_snakemake:
        rows.append(("snakemake reaction", "NOT MEASURED", "", None))
    rows.append(("3 expected runs per drop", str(sorted(set(summ["runs_executed"]), key=str)), "",
                 goals["three_runs_each_drop"]))
    return rows


def _print_table(args: argparse.Namespace, n_drops: int, rows: list[Row]) -> None:
    print()
    print(f"project {args.groups} x {args.samples} "
          f"({args.groups * args.samples + args.groups + 1} runs), {n_drops} drops, settle_ms "
          f"{args.settle_ms}, workers {args.workers}")
    w = max(len(r[0]) for r in rows) + 2
    print(f"{'measure':<{w}}{'value':>18}  {'goal':<14}{'':>5}")
    print("-" * (w + 40))
    for name, value, goal, ok in rows:
        print(f"{name:<{w}}{value:>18}  {goal:<14}{verdict(ok):>5}")
    print("latency: last byte of the drop written -> summary.txt seen with the new content "
          "(5 ms poll); daemon share = latency - the 3 runs' durations (spawn to exit; the "
          "scripts' queries, answered by the daemon over its socket, are inside them); "
          "before/between runs = write -> first start + the gaps between runs, from the "
          f"daemon's run timestamps (settle_ms = {args.settle_ms} is inside it).")


def _bench(args: argparse.Namespace, work: Path, daemons: list[DaemonProc],
           result: dict[str, Any]) -> int:
    G, S = args.groups, args.samples
    problems: list[str] = []
    project = gen.make_gs(work / "tree", G, S)
    layout = eb.read_layout(project)
    d = DaemonProc("gs", settle_ms=args.settle_ms, workers=args.workers)
    daemons.append(d)
    d.start()
    clean = _initial_run(d, project, layout, G * S + G + 1, result, problems)
    time.sleep(1.0)
    drops: list[dict[str, Any]] = []
    if clean or args.force:
        drops = _drops(args, d, project, layout, problems)
    else:
        print("  the initial run is not clean: drops skipped (the expected summary would "
              "never appear); --force to drop anyway", flush=True)
    time.sleep(2.0)
    idle = d.idle_cpu(args.idle_s)
    mem = d.mem_mb()
    print(f"  idle CPU {idle['percent']:.3f} % over {idle['window_s']:.1f} s; "
          f"RSS {mem.get('VmRSS', 0):.1f} MB, peak {mem.get('VmHWM', 0):.1f} MB", flush=True)
    result["gs_daemon_exit"] = d.stop()
    summ = _summarise(drops)
    result["gs"] = {**summ, "idle_cpu": idle, "mem_mb": mem, "drops": drops}
    flat = result["flat"] = None if args.skip_flat else _flat(args, daemons)
    smk = result["snakemake"] = _snakemake(args, work)
    ratio = None
    if smk and smk.get("wall_s_median") and summ["latency_p50_s"]:
        ratio = smk["wall_s_median"] / summ["latency_p50_s"]
    result["ratio_snakemake_over_p50"] = ratio
    goals = result["goals"] = _goals(summ, idle, flat, ratio)
    result["problems"] = problems
    _print_table(args, len(drops), _rows(args, summ, result["gs"], flat, smk, ratio, goals))
    if problems:
        print("PROBLEMS:\n  " + "\n  ".join(problems))
    return 0 if all(goals.values()) and not problems else 1


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    signal.signal(signal.SIGTERM, _raise_exit)
    G, S = args.groups, args.samples
    work = WORK / f"daemon-{G}x{S}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True)
    machine = machine_info()
    machine["thotd_version"] = eb.ensure_thotd()  # measured as installed, like Snakemake
    daemons: list[DaemonProc] = []
    result: dict[str, Any] = {
        "bench": "daemon",
        "date": now_iso(),
        "project": {"groups": G, "samples": S, "runs": G * S + G + 1, "work": str(work)},
        "config": {"settle_ms": args.settle_ms, "workers": args.workers},
        "machine": machine,
    }
    try:
        return _bench(args, work, daemons, result)
    except BaseException as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        for d in daemons:
            result.setdefault("daemon_output_tail", {})[str(d.home)] = d.output()[-3000:]
        raise
    finally:
        for d in daemons:
            d.cleanup(keep=args.keep)
        if not args.no_save:
            write_result("daemon", args.quick, result)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
