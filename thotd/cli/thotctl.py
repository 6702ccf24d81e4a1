"""``thotctl``: ask the running daemon over its socket.

Start-up matters here (people type it), so this imports only the standard library, the
tiny JSON-RPC client and :mod:`thotd.exits`. Exit codes: 0 ok, 1 failure, 2 usage, 3 daemon
not running.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from thotd import exits
from thotd.service.rpc import Client, DaemonNotRunning, RpcError, UntrustedServer


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="thotctl", description="Talk to the thotd daemon.")
    ap.add_argument("--socket", help="control socket (default: $THOTD_SOCKET or the runtime dir)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def cmd(name: str, help: str, json_flag: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    cmd("status", "daemon and projects at a glance")
    cmd("add", "register and watch a project").add_argument("path")
    cmd("remove", "stop watching a project").add_argument("path")
    cmd("pause", "hold new runs (all projects, or one)").add_argument("path", nargs="?")
    cmd("resume", "let runs start again").add_argument("path", nargs="?")
    runs = cmd("runs", "recent runs, newest first")
    runs.add_argument("project", nargs="?")
    runs.add_argument("-n", "--limit", type=int, default=20)
    logs = cmd("logs", "a run's log (RUN is the id from `thotctl runs`)")
    logs.add_argument("run", type=int)
    logs.add_argument("-f", "--follow", action="store_true", help="follow while the run lasts")
    cmd("why", "which run made this, from what, and is it stale").add_argument("path")
    cmd("plan", "what would run now, and why").add_argument("path", nargs="?")
    graph = cmd("graph", "the dependency graph of a project", json_flag=False)
    graph.add_argument("path")
    graph.add_argument("--format", choices=("dot", "mermaid", "json"), default="dot")
    cmd("rerun", "run again, stale or not").add_argument("path", nargs="?")
    wait = cmd("wait", "return when every project is quiet")
    wait.add_argument("--timeout", type=float, default=600)
    reload = cmd("reload", "re-read the configuration")
    reload.add_argument("--wait", action="store_true", help="(always waits; for ExecReload=)")
    cmd("reconcile", "rescan projects from disk now").add_argument("path", nargs="?")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    # Paths that are not UTF-8 reach us as surrogate escapes: print their original bytes
    # rather than fail (what Python already does under the C locale).
    if getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return HANDLERS[args.cmd](args, _client(args))
    except DaemonNotRunning as exc:
        print(f"thotctl: {exc}", file=sys.stderr)
        return exits.NOT_RUNNING
    except UntrustedServer as exc:
        print(f"thotctl: {exc}", file=sys.stderr)
        return exits.FAILURE
    except RpcError as exc:
        print(f"thotctl: {exc.message}", file=sys.stderr)
        return exits.FAILURE
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)  # the reader left (| head): not an error
        os.dup2(devnull, sys.stdout.fileno())
        return exits.OK
    except KeyboardInterrupt:
        return exits.FAILURE


def _client(args: argparse.Namespace) -> Client:
    from thotd.paths import socket_path

    return Client(socket_path(args.socket), timeout=None if args.cmd == "wait" else 30)


def _abs(path: str | None) -> str | None:
    return os.path.abspath(path) if path else None


def _out(args: argparse.Namespace, data: Any, text: str) -> int:
    print(json.dumps(data, indent=2, default=str) if getattr(args, "json", False) else text)
    return exits.OK


def _ago(t: float | None) -> str:
    if not t:
        return "-"
    d = time.time() - t
    return f"{d:.0f}s ago" if d < 120 else (f"{d / 60:.0f}m ago" if d < 7200 else f"{d / 3600:.0f}h ago")


def status(args: argparse.Namespace, c: Client) -> int:
    st = c.call("status")
    lines = [f"thotd up (pid {st['pid']}, {st['uptime_s']:.0f}s), {st['summary']}"
             + ("" if st["quiet"] else " — busy")]
    if st.get("recovered"):
        lines.append(f"warning: {st['recovered']}")
    for p in st["projects"]:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(p.get("counts", {}).items())) or "no runs yet"
        flag = " [paused]" if p["paused"] else ""
        lines.append(f"\n{p['root']}{flag}")
        if p["error"]:
            lines.append(f"  ERROR: {p['error']}")
        watch = p.get("watch") or {}
        if watch.get("mode") not in (None, "inotify"):
            lines.append(f"  watch: {watch.get('mode')}: {watch.get('reason')}")
            if watch.get("fix"):
                lines.append(f"    fix: {watch['fix']}")
        lines.append(f"  {p['objects']} objects, {p['runs']} runs: {counts}")
        lines.append(f"  {len(p['running'])} running, {len(p['queued'])} queued, {len(p['blocked'])} blocked")
        for r in p["running"]:
            lines.append(f"  running {r['script']} in {r['container']} ({_ago(r['since'])})")
        for r in p["queued"][:10]:
            lines.append(f"  queued  {r['script']} in {r['container']}: {'; '.join(r['reasons'])}")
        for e in p["invalid"]:
            where = e["file"] + (f":{e['line']}:{e['column']}" if e.get("line") else "")
            lines.append(f"  invalid {where}: {(e['field'] + ': ') if e.get('field') else ''}{e['reason']}")
        for sch in p.get("schedules", []):
            if sch["error"]:
                lines.append(f"  schedule error: {sch['error']}")
            else:
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(sch["next_run"])) if sch["next_run"] else "-"
                lines.append(f"  scheduled {os.path.basename(sch['script'])} @ {sch['container']}: '{sch['schedule']}', next {when}")
        for f in p["failures"]:
            lines.append(f"  {f['status']} {f['script']} in {f['container']} ({_ago(f['finished'])}), log {f['log']}")
            lines += [f"    | {t}" for t in f["tail"][-5:]]
    _out(args, st, "\n".join(lines))
    return exits.OK


def add(args: argparse.Namespace, c: Client) -> int:
    res = c.call("add", path=_abs(args.path))
    return _out(args, res, f"watching {res['root']} ({res['objects']} objects, {res['runs']} runs)")


def remove(args: argparse.Namespace, c: Client) -> int:
    res = c.call("remove", path=_abs(args.path))
    return _out(args, res, f"removed {res['removed']}")


def pause(args: argparse.Namespace, c: Client) -> int:
    res = c.call(args.cmd, path=_abs(args.path))
    verb = "paused" if args.cmd == "pause" else "resumed"
    return _out(args, res, "\n".join(f"{verb} {r}" for r in res[verb]) or "no projects")


def runs(args: argparse.Namespace, c: Client) -> int:
    res = c.call("runs", project=_abs(args.project), limit=args.limit)
    lines = [f"{'id':>5} {'status':8} {'took':>7} {'finished':>10}  script @ container"]
    for r in res["runs"]:
        took = f"{(r['finished'] or 0) - (r['started'] or 0):.2f}s" if r["finished"] else "-"
        lines.append(f"{r['id']:>5} {r['status']:8} {took:>7} {_ago(r['finished']):>10}  "
                     f"{os.path.basename(r['script'])} @ {r['container']}")
    return _out(args, res, "\n".join(lines))


def logs(args: argparse.Namespace, c: Client) -> int:
    entry = c.call("log", id=args.run)
    path = entry.get("log")
    if args.json and not args.follow:
        return _out(args, entry, "")
    if not path or not os.path.exists(path):
        print(f"thotctl: the log of run {args.run} is gone ({path})", file=sys.stderr)
        return exits.FAILURE
    with open(path, "rb") as fh:
        sys.stdout.buffer.write(fh.read())
        sys.stdout.flush()
        if not args.follow:
            return exits.OK
        # Follow while the run lasts, reopening if the file is replaced.
        inode = os.fstat(fh.fileno()).st_ino
        while True:
            chunk = fh.read()
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                continue
            try:
                if os.stat(path).st_ino != inode:
                    fh.close()
                    fh = open(path, "rb")  # noqa: SIM115 - reopened across rotation
                    inode = os.fstat(fh.fileno()).st_ino
                    continue
            except FileNotFoundError:
                pass
            if not c.call("log", id=args.run).get("running"):
                sys.stdout.buffer.write(fh.read())
                return exits.OK
            time.sleep(0.2)


def why(args: argparse.Namespace, c: Client) -> int:
    from thotd.engine.explain import render_why

    res = c.call("why", path=_abs(args.path))
    return _out(args, res, render_why(res))


def plan(args: argparse.Namespace, c: Client) -> int:
    res = c.call("plan", path=_abs(args.path))
    lines = []
    for p in res["plan"]:
        state = "blocked" if p["blocked"] else ("running" if p["running"] else ("queued" if p["queued"] else "stale"))
        lines.append(f"{state:8} {os.path.basename(p['script'])} @ {p['container']}")
        lines += [f"    because {r}" for r in p["reasons"]]
    lines.append(f"{len(res['plan'])} runs not up to date")
    return _out(args, res, "\n".join(lines))


def graph(args: argparse.Namespace, c: Client) -> int:
    res = c.call("graph", path=_abs(args.path), format=args.format)
    print(res["text"])
    return exits.OK


def rerun(args: argparse.Namespace, c: Client) -> int:
    res = c.call("rerun", path=_abs(args.path))
    return _out(args, res, f"queued {len(res['queued'])} runs")


def wait(args: argparse.Namespace, c: Client) -> int:
    res = c.call("wait", timeout=args.timeout)
    _out(args, res, "quiet" if res["quiet"] else f"still busy after {args.timeout:g}s")
    return exits.OK if res["quiet"] else exits.FAILURE


def reload(args: argparse.Namespace, c: Client) -> int:
    res = c.call("reload")
    _out(args, res, "reloaded" if res["reloaded"] else f"reload refused: {res.get('error')}")
    return exits.OK if res["reloaded"] else exits.FAILURE


def reconcile(args: argparse.Namespace, c: Client) -> int:
    res = c.call("reconcile", path=_abs(args.path))
    return _out(args, res, "\n".join(f"{k}: {v} runs queued" for k, v in res["queued"].items()) or "done")


HANDLERS = {
    "status": status, "add": add, "remove": remove, "pause": pause, "resume": pause,
    "runs": runs, "logs": logs, "why": why, "plan": plan, "graph": graph, "rerun": rerun,
    "wait": wait, "reload": reload, "reconcile": reconcile,
}


if __name__ == "__main__":
    sys.exit(main())
