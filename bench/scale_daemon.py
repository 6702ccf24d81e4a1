"""``scale_bench.py --start`` and ``--react``: a real ``thotd`` at several sizes (issue 12,
goals 1 and 2). See ``scale_bench.py`` for what is measured and the verdicts.

The daemon runs from this checkout (``PYTHONPATH``) with its own XDG folders; it is timed
through raw JSON-RPC calls on its socket (no ``thotctl`` start-up in the numbers).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import gen
from bench.common import REPO, clean_env

SETTLE_MS = 100
CHANGED = 5  # samples whose data change while the daemon is stopped


def rpc(sock: Path, method: str, params: dict[str, Any] | None = None,
        timeout: float = 60.0) -> Any:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        req = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                raise ConnectionError(f"no reply to {method}")
            buf += chunk
    reply = json.loads(buf)
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


def poll(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Thotd:
    """One ``thotd start --foreground`` of this checkout, with ``home`` as its XDG home."""

    def __init__(self, home: Path, project: Path) -> None:
        self.home = home
        self.run_dir = Path(tempfile.mkdtemp(prefix="thsb-", dir="/tmp"))
        os.chmod(self.run_dir, 0o700)
        self.sock = self.run_dir / "thotd.sock"
        config = home / "config.toml"
        config.write_text(f"projects = [{json.dumps(str(project))}]\n[daemon]\n"
                          f"settle_ms = {SETTLE_MS}\nshutdown_grace_s = 5\n[pool]\nworkers = 2\n")
        self.env = {**clean_env(), "PYTHONPATH": str(REPO), "XDG_RUNTIME_DIR": str(self.run_dir),
                    "XDG_STATE_HOME": str(home / "state"), "XDG_CONFIG_HOME": str(home / "cfg"),
                    "THOTD_SOCKET": str(self.sock), "THOTD_CONFIG": str(config)}
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
            self.env.pop(var, None)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start it; the time until ``hello`` answers."""
        out = open(self.home / "daemon.out", "ab")  # noqa: SIM115 - lives with the process
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "thotd.cli.thotd", "start", "--foreground"],
                                     env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        out.close()
        poll(self.answers, 120, "the socket to answer", 0.002)
        return time.perf_counter() - t0

    def answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError((self.home / "daemon.out").read_text()[-3000:])
        try:
            rpc(self.sock, "hello", timeout=5)
            return True
        except (OSError, RuntimeError, ValueError):
            return False

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = rpc(self.sock, "status")
        return result

    def wait_quiet(self, timeout: float = 1800) -> None:
        if not rpc(self.sock, "wait", {"timeout": timeout}, timeout=timeout + 30).get("quiet"):
            raise RuntimeError("not quiet")

    def runs_since(self, t: float) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = rpc(self.sock, "runs", {"limit": 500})["runs"]
        return [r for r in runs if (r["started"] or 0) >= t]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)


@contextlib.contextmanager
def daemon(home: Path, project: Path) -> Iterator[Thotd]:
    d = Thotd(home, project)
    try:
        yield d
    finally:
        d.close()


def prepare(work: Path, groups: int, samples: int) -> tuple[Path, Path]:
    """The G×S project (real scripts) and a home whose state holds its first full run (and
    the index snapshot ``thot run`` leaves); made once, reused."""
    tree = work / f"g{groups}x{samples}"
    home = tree / "home"
    project = tree / "project"
    if (tree / "prepared").exists():
        return project, home
    shutil.rmtree(tree, ignore_errors=True)
    print(f"  preparing {groups}x{samples}: generate + first full run (kept in {tree}) ...",
          flush=True)
    gen.make_gs(tree, groups, samples)
    state = home / "state" / "thotd" / "state.sqlite3"
    state.parent.mkdir(parents=True)
    cmd = [sys.executable, "-m", "thotd.cli.thot", "--state", str(state), "run", "--root",
           str(project), "-j", "2"]
    subprocess.run(cmd, env={**clean_env(), "PYTHONPATH": str(REPO)}, check=True,
                   stdout=subprocess.DEVNULL)
    (tree / "prepared").write_text("ok\n")
    return project, home


def _change_samples(project: Path, n: int, serial: int) -> set[str]:
    """Rewrite ``n`` samples' raw data (spread over the groups); their folders."""
    groups = sorted(p for p in project.glob("group-*") if p.is_dir())
    changed = set()
    for i in range(n):
        group = groups[(i * len(groups)) // n]
        sample = sorted(group.glob("sample-*"))[i % 7]
        values = [(serial * 31 + i * 7 + k) % 1000 for k in range(5)]
        (sample / "raw" / "data.csv").write_text("value\n" + "".join(f"{v}\n" for v in values))
        changed.add(str(sample))
    return changed


def _loading_seen(d: Thotd) -> dict[str, Any] | None:
    """The first status right after the socket answered: its loading part, if any."""
    st = d.status()
    for p in st["projects"]:
        if p.get("loading"):
            return dict(p["loading"])
    return None


def _time_until_loaded(d: Thotd, t0: float) -> float:
    poll(lambda: not d.status().get("loading"), 1800, "the projects to load", 0.01)
    return time.perf_counter() - t0


def start_mode(work: Path, groups: int, samples: int) -> dict[str, Any]:
    project, home = prepare(work, groups, samples)
    out: dict[str, Any] = {}
    with daemon(home, project) as d:
        t0 = time.perf_counter()
        out["first_socket_s"] = d.start()
        out["first_loading"] = _loading_seen(d)
        out["first_loaded_s"] = _time_until_loaded(d, t0)
        d.wait_quiet()
        out["first_quiet_s"] = time.perf_counter() - t0
        d.stop()  # a clean stop writes the daemon's snapshot
        changed = _change_samples(project, CHANGED, int(time.time()))
        t_start = time.time()
        t0 = time.perf_counter()
        out["socket_s"] = d.start()
        out["loading"] = _loading_seen(d)

        def found() -> bool:
            st = d.status()
            keys = {r["container"] for p in st["projects"] for r in p["queued"] + p["running"]}
            ran = {r["container"] for r in d.runs_since(t_start)}
            return changed <= keys | ran

        poll(found, 1800, "the catch-up to find the changed samples", 0.01)
        out["catch_up_s"] = time.perf_counter() - t0
        out["loaded_s"] = _time_until_loaded(d, t0)
        d.wait_quiet()
        out["quiet_s"] = time.perf_counter() - t0
        ran = d.runs_since(t_start)
        want = changed | {os.path.dirname(c) for c in changed} | {str(project)}
        got = [r["container"] for r in ran]
        out["runs"] = len(got)
        out["exact"] = sorted(got) == sorted(want) and all(r["status"] == "ok" for r in ran)
    return out


def _chain(project: Path, group: Path, name: str) -> list[str]:
    """The containers whose runs one new sample must cause, each exactly once."""
    return sorted([str(group / name), str(group), str(project)])


def _oracle_holds(project: Path, summary: Path) -> bool:
    """The summary equals what a fresh full run makes of the raw data on disk now."""
    from bench.engine_bench import expected_summary

    return summary.read_text(encoding="utf-8") == expected_summary(project)


def react_mode(work: Path, groups: int, samples: int, drops: int,
               burst: int = 0) -> dict[str, Any]:
    """``drops`` new samples one at a time (timed, each checked: exactly its chain ran once
    and the summary equals the oracle), then, with ``burst``, that many at once."""
    project, home = prepare(work, groups, samples)
    summary = project / "summary" / "summary.txt"
    shares, firsts, totals = [], [], []
    exact = oracle = True
    with daemon(home, project) as d:
        d.start()
        _time_until_loaded(d, time.perf_counter())
        d.wait_quiet()
        group = sorted(p for p in project.glob("group-*") if p.is_dir())[0]
        serial = int(time.time()) % 100000
        for i in range(drops):
            before = summary.read_bytes()
            name = f"sample-x{serial}-{i:03d}"
            t_write = time.time()
            gen.add_sample(project, group.name, name)
            t_last = time.time()
            t_perf = time.perf_counter()
            poll(lambda old=before: summary.read_bytes() != old, 120, "the summary to change", 0.002)
            totals.append(time.perf_counter() - t_perf)
            d.wait_quiet()
            ran = d.runs_since(t_write)
            mine = [r for r in ran if r["container"].endswith(name)]
            if not mine:
                raise RuntimeError(f"no run of {name}: {ran}")
            exact &= (sorted(r["container"] for r in ran) == _chain(project, group, name)
                      and all(r["status"] == "ok" for r in ran))
            oracle &= _oracle_holds(project, summary)
            first = mine[0]["started"] - t_last
            firsts.append(first)
            shares.append(first - SETTLE_MS / 1000)
            shutil.rmtree(group / name)  # back to the same size
            d.wait_quiet()
            oracle &= _oracle_holds(project, summary)
        out = {"share_p50_s": statistics.median(shares), "first_p50_s": statistics.median(firsts),
               "summary_p50_s": statistics.median(totals),
               "summary_p95_s": sorted(totals)[max(0, int(0.95 * len(totals)) - 1)],
               "drops": drops, "exact": exact, "oracle": oracle}
        if burst:
            out.update(_burst(d, project, summary, burst, serial))
    return out


def _burst(d: Thotd, project: Path, summary: Path, n: int, serial: int) -> dict[str, Any]:
    """``n`` new samples dropped as fast as they can be written, spread over the groups: each
    sample's run exactly once, the summary equal to the oracle once quiet; then removed."""
    groups = sorted(p for p in project.glob("group-*") if p.is_dir())
    added = [(groups[i % len(groups)], f"sample-b{serial}-{i:03d}") for i in range(n)]
    t_write = time.time()
    for group, name in added:
        gen.add_sample(project, group.name, name)
    t_perf = time.perf_counter()
    d.wait_quiet()
    quiet_s = time.perf_counter() - t_perf
    ran = d.runs_since(t_write)
    samples = sorted(r["container"] for r in ran if "/sample-b" in r["container"])
    once = samples == sorted(str(g / name) for g, name in added)
    ok = all(r["status"] == "ok" for r in ran)
    holds = _oracle_holds(project, summary)
    for group, name in added:
        shutil.rmtree(group / name)
    d.wait_quiet()
    return {"burst": n, "burst_quiet_s": quiet_s, "burst_runs": len(ran),
            "burst_exact": once and ok, "burst_oracle": holds and _oracle_holds(project, summary)}
