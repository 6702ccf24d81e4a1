"""The dashboard's costs: page time at 10,000 containers, RSS it adds, idle CPU it adds.

    python bench/web_bench.py            # 100 groups x 100 samples (10,101 containers)
    python bench/web_bench.py --quick    # 10 x 10, a smoke run of the same steps

Two real ``thotd`` processes (the tests' ``daemonkit`` harness) watch the same generated
project, one with ``[web] enabled = false``, one serving the page. Every sample has a
script that is not autorun (running 10,000 scripts is not what is measured), so the daemon
reports them all fresh; the worst case of the state summary, 10,000 failed containers
each with a 15-line log tail, is timed separately on the same function the pages use
(``thotd.web.model.states``). Goals (issue 13):
project page < 1 s, RSS added < 30 MB, no idle CPU added (an open ``/events`` stream and a
quiet daemon: < 0.5 % of one core over the window). Prints PASS/FAIL per goal; exit 1 on
any FAIL. The table goes into ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.cookiejar
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests")]

from common import WORK, machine_info, print_goals, write_result  # noqa: E402
from daemonkit import Daemon, make_daemon, proc_memory  # noqa: E402

IDLE_S = 5.0


def make_project(base: Path, groups: int, samples: int) -> Path:
    """root -> groups -> samples, each sample with a raw asset and a (manual) script."""
    root = base / "project"
    if (root / ".complete").exists():
        return root
    (base / "analysis").mkdir(parents=True, exist_ok=True)
    (base / "analysis" / "noop.py").write_text("print('ok')\n")
    script = json.dumps([{"script": "root:/../analysis/noop.py", "autorun": False}])
    root.mkdir(parents=True, exist_ok=True)
    (root / "_container.json").write_text(json.dumps({"name": "project", "metadata": {"lab": "x"}}))
    for g in range(groups):
        gdir = root / f"group-{g:03d}"
        gdir.mkdir(exist_ok=True)
        (gdir / "_container.json").write_text(json.dumps({"type": "group", "metadata": {"g": g}}))
        for s in range(samples):
            sdir = gdir / f"sample-{s:03d}"
            (sdir / "raw").mkdir(parents=True, exist_ok=True)
            (sdir / "_container.json").write_text(json.dumps({"type": "sample"}))
            (sdir / "_scripts.json").write_text(script)
            (sdir / "raw" / "_asset.json").write_text(json.dumps({"type": "raw", "file": "d.csv"}))
            (sdir / "raw" / "d.csv").write_text("x\n1\n")
    (root / ".complete").write_text("")
    return root


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(pid: int) -> float:
    """CPU percent of one core over :data:`IDLE_S` of a quiet daemon."""
    before = cpu_s(pid)
    time.sleep(IDLE_S)
    return 100 * (cpu_s(pid) - before) / IDLE_S


def start(d: Daemon, root: Path) -> None:
    d.start(timeout=600)
    d.add(root, timeout=1200)
    time.sleep(1)  # let the allocator settle after the load before reading RSS


def timed(opener: urllib.request.OpenerDirector, url: str, n: int = 5) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        with opener.open(url, timeout=60) as r:
            r.read()
            assert r.status == 200, url
        out.append(time.perf_counter() - t0)
    return out


def worst_states(groups: int, samples: int) -> float:
    """Seconds for :func:`thotd.web.model.states` when every sample failed."""
    from thotd.web.model import states

    root = "/p"
    tail = [f"line {i} of the error" for i in range(15)]
    failures = [{"container": f"{root}/g{g}/s{s}", "script": "/a/x.py", "status": "failed",
                 "tail": tail} for g in range(groups) for s in range(samples)]
    project = {"root": root, "failures": failures, "queued": [], "running": [], "blocked": []}
    t0 = time.perf_counter()
    out = states(project, [])
    took = time.perf_counter() - t0
    assert len(out.own) == groups * samples
    return took


def bench(groups: int, samples: int) -> dict[str, Any]:
    root = make_project(WORK / f"web-{groups}x{samples}", groups, samples)
    containers = 1 + groups + groups * samples
    res: dict[str, Any] = {"containers": containers, "machine": machine_info(),
                           "worst_states_s": worst_states(groups, samples)}
    with tempfile.TemporaryDirectory(prefix="webbench-") as tmp:
        with make_daemon(Path(tmp), "off", web={"enabled": False}) as d:
            start(d, root)
            res["rss_off_mb"] = proc_memory(d.pid)["VmRSS"] / 1024
            res["idle_off_pct"] = idle_cpu(d.pid)
            d.stop()
        with make_daemon(Path(tmp), "on", web={"enabled": True, "port": 0}) as d:
            start(d, root)
            info = d.ctl_json("web")
            opener = urllib.request.build_opener(
                urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
            opener.open(info["login"], timeout=60).read()
            q = urllib.parse.quote(str(root), safe="")
            g = urllib.parse.quote(str(root / "group-000"), safe="")
            pages = {"projects": "", "project (10k)": f"project?root={q}",
                     "tree states": f"fragment/states?root={q}",
                     "expand a group": f"fragment/tree?node={g}",
                     "container": f"container?path={g}", "runs": "runs",
                     "graph (collapsed)": f"graph?root={q}"}
            res["pages"] = {name: timed(opener, info["url"] + path) for name, path in pages.items()}
            with opener.open(info["url"] + pages["tree states"], timeout=60) as r:
                res["non_fresh"] = len(json.loads(r.read())["own"])
            res["rss_on_mb"] = proc_memory(d.pid)["VmRSS"] / 1024
            stream = opener.open(info["url"] + "events", timeout=60)
            def drain() -> None:
                with contextlib.suppress(Exception):  # ends when the stream is closed
                    for _line in stream:
                        pass

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
            time.sleep(0.5)
            res["idle_on_pct"] = idle_cpu(d.pid)
            stream.close()
            d.stop()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 x 10 instead of 100 x 100")
    args = ap.parse_args(argv)
    n = 10 if args.quick else 100
    res = bench(n, n)
    print(f"web_bench: {res['containers']} containers ({res['non_fresh']} not fresh), "
          "pages over 5 requests each")
    print(f"{'page':22} {'median s':>9} {'max s':>7}")
    for name, times in res["pages"].items():
        print(f"{name:22} {statistics.median(times):9.3f} {max(times):7.3f}")
    print(f"state summary with every container failed: {res['worst_states_s']:.3f} s")
    added = res["rss_on_mb"] - res["rss_off_mb"]
    cpu_added = res["idle_on_pct"] - res["idle_off_pct"]
    print(f"RSS: {res['rss_off_mb']:.1f} MB without the page, {res['rss_on_mb']:.1f} MB with it "
          f"(+{added:.1f} MB)")
    print(f"idle CPU over {IDLE_S:g} s: {res['idle_off_pct']:.2f} % without, "
          f"{res['idle_on_pct']:.2f} % with the page and an open event stream")
    res["rss_added_mb"], res["idle_cpu_added_pct"] = added, cpu_added
    write_result("web_bench", args.quick, res)
    goals = {"project_page_under_1s": max(res["pages"]["project (10k)"]) < 1.0,
             "rss_added_under_30mb": added < 30, "idle_cpu_added_under_0.5pct": cpu_added < 0.5}
    return 0 if print_goals(goals) else 1


if __name__ == "__main__":
    sys.exit(main())
