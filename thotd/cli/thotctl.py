"""``thotctl``: ask the running daemon over its socket.

Start-up matters here (people type it), so this imports only the standard library, the
tiny JSON-RPC client and the leaf modules. Exit codes are :data:`EXIT_CODES` (from
:mod:`thotd.exits`); every ``--help`` ends with them.
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
from thotd.version import VersionAction
from thotd.words import plural, printable

#: How long past its own ``--timeout`` ``thotctl wait`` waits for the daemon's answer: a
#: hung daemon must not hang the script that waits on it.
WAIT_MARGIN_S = 10.0

EXIT_CODES = f"""exit codes:
  {exits.OK}   ok
  {exits.FAILURE}   failure: a request failed, no reply in time, or (status) something failed,
      is invalid or is blocked
  {exits.USAGE}   usage error
  {exits.NOT_RUNNING}   thotd is not running
  {exits.BLOCKED}   (wait) quiet, but runs wait for an invalid object file to be fixed
  {exits.INTERRUPTED} interrupted (Ctrl-C)"""


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="thotctl", description="Talk to the thotd daemon.",
                                 epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action=VersionAction)
    ap.add_argument("--socket", help="control socket (default: $THOTD_SOCKET or the runtime dir)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def cmd(name: str, help: str, json_flag: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, epilog=EXIT_CODES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    cmd("status", "daemon and projects at a glance; exits 1 when something failed, is "
        "invalid or is blocked")
    cmd("add", "register and watch a project").add_argument("path")
    cmd("remove", "stop watching a project").add_argument("path")
    cmd("pause", "hold new runs: of every project, of one (PATH is its root), or of one "
        "container and those under it (PATH is its folder); kept across restarts").add_argument(
        "path", nargs="?", help="a project root or a container folder inside one (default: "
        "every project)")
    cmd("resume", "let held runs start again: every project, one project (its root), or a "
        "container (its folder; also resumes the paused containers under it)").add_argument(
        "path", nargs="?", help="a project root or a container folder inside one (default: "
        "every project; paused containers stay paused)")
    runs = cmd("runs", "recent runs of the watched projects, newest first")
    runs.add_argument("project", nargs="?")
    runs.add_argument("-n", "--limit", type=int, default=20)
    runs.add_argument("--all", action="store_true",
                      help="also runs of projects thotd does not watch (`thot run` shares the history)")
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
    wait.add_argument("--timeout", type=float, default=600,
                      help=f"give up after S seconds (default 600; a silent daemon gets {WAIT_MARGIN_S:g} more)")
    reload = cmd("reload", "re-read the configuration")
    reload.add_argument("--wait", action="store_true", help="(always waits; for ExecReload=)")
    cmd("reconcile", "rescan projects from disk now").add_argument("path", nargs="?")
    cmd("web", "the dashboard's URL, with its token once (keep it private)").add_argument(
        "--open", action="store_true", help="open it in the default browser")
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
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)  # the reader left (| head): not an error
        os.dup2(devnull, sys.stdout.fileno())
        return exits.OK
    except KeyboardInterrupt:
        return exits.INTERRUPTED
    except (RpcError, OSError) as exc:
        return _failed(exc)


def _failed(exc: RpcError | OSError) -> int:
    """One line on stderr for what went wrong talking to the daemon, and its exit code."""
    if isinstance(exc, RpcError):
        message, code = exc.message, exits.FAILURE
    elif isinstance(exc, DaemonNotRunning):
        message, code = str(exc), exits.NOT_RUNNING
    elif isinstance(exc, UntrustedServer | TimeoutError):
        message, code = str(exc), exits.FAILURE
    elif isinstance(exc, ConnectionError):
        message, code = f"lost the connection to thotd: {exc}", exits.FAILURE
    else:
        message, code = f"cannot talk to thotd: {exc.strerror or exc}", exits.FAILURE
    print(f"thotctl: {printable(message)}", file=sys.stderr)
    return code


def _client(args: argparse.Namespace) -> Client:
    from thotd.paths import socket_path

    timeout = args.timeout + WAIT_MARGIN_S if args.cmd == "wait" else 30
    return Client(socket_path(args.socket), timeout=timeout)


def _abs(path: str | None) -> str | None:
    return os.path.abspath(path) if path else None


def _out(args: argparse.Namespace, data: Any, lines: list[str]) -> int:
    """``data`` as JSON with ``--json``, else ``lines``, each with its control characters
    escaped (a folder name with a newline must not forge a line of output)."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    elif lines:
        print("\n".join(map(printable, lines)))
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
    blocked = [p for p in st.get("problems", []) if p["kind"] == "blocked"]
    for p in st["projects"]:
        lines += _project_lines(p, [b["message"] for b in blocked if b["project"] == p["root"]])
    lines += _executor_lines(st.get("executors", []))
    problems = st.get("problems", [])
    if problems:
        lines.append(f"\nnot healthy: {plural(len(problems), 'problem')}")
    _out(args, st, lines)
    return exits.FAILURE if problems else exits.OK


def _executor_lines(executors: list[dict[str, Any]]) -> list[str]:
    """Remote executors: connected or why not, and workers that cannot see a project."""
    lines = []
    for ex in executors:
        where = ex.get("scheduler") or ex.get("cluster") or "?"
        state = "connected" if ex.get("connected") else "not connected"
        lines += ["", f"executor {ex['kind']} {where}: {state}, "
                  f"{plural(len(ex.get('workers', [])), 'worker')}, {ex.get('waiting', 0)} waiting"]
        if ex.get("reason"):
            lines.append(f"  {ex['reason']}")
        for e in ex.get("excluded", []):
            lines.append(f"  not used for {e['project']}: worker {e['worker']}: {e['reason']}")
    return lines


def _project_lines(p: dict[str, Any], blocked: list[str]) -> list[str]:
    counts = ", ".join(f"{n} {k}" for k, n in sorted(p.get("counts", {}).items())) or "no runs yet"
    lines = ["", p["root"] + (" [paused]" if p["paused"] else "")]
    if p["error"]:
        lines.append(f"  ERROR: {p['error']}")
    for c in p.get("paused_containers") or []:
        gone = " (folder gone: `thotctl resume` it to forget it)" if c.get("missing") else ""
        lines.append(f"  paused container {c['container']}: {plural(c['held'], 'run')} held{gone}")
    watch = p.get("watch") or {}
    if watch.get("mode") not in (None, "inotify"):
        lines.append(f"  watch: {watch.get('mode')}: {watch.get('reason')}")
        if watch.get("fix"):
            lines.append(f"    fix: {watch['fix']}")
    loading = p.get("loading")
    if loading:
        lines.append("  " + _loading_line(loading))
    lines.append(f"  {plural(p['objects'], 'object')}, {plural(p['runs'], 'run')}: {counts}")
    lines.append(f"  {len(p['running'])} running, {len(p['queued'])} queued, {len(p['blocked'])} blocked")
    for r in p["running"]:
        lines.append(f"  running {r['script']} in {r['container']} ({_ago(r['since'])})")
    for r in p["queued"][:10]:
        held = " [paused]" if r.get("held") else ""
        lines.append(f"  queued  {r['script']} in {r['container']}{held}: {'; '.join(r['reasons'])}")
    for e in p["invalid"]:
        where = e["file"] + (f":{e['line']}:{e['column']}" if e.get("line") else "")
        lines.append(f"  invalid {where}: {(e['field'] + ': ') if e.get('field') else ''}{e['reason']}")
    lines += [f"  {message}" for message in blocked]
    warnings = p.get("warnings") or []
    lines += [f"  warning {message}" for message in warnings[:10]]
    if len(warnings) > 10:
        lines.append(f"  … and {plural(len(warnings) - 10, 'more warning')} (thot validate lists them)")
    lines += _schedule_lines(p.get("schedules", []))
    for f in p["failures"]:
        lines.append(f"  {f['status']} {f['script']} in {f['container']} ({_ago(f['finished'])}), log {f['log']}")
        lines += [f"    | {t}" for t in f["tail"][-5:]]
    return lines


def _loading_line(loading: dict[str, Any]) -> str:
    """``loading: checking what moved since the snapshot, 1200 of 20298 objects, ...``"""
    total = loading.get("total")
    text = f"loading: {loading['phase']}, {loading['objects']}"
    text += f" of {total} objects" if total is not None else " objects so far"
    if loading.get("runs_to_check") is not None:
        text += f", {loading['runs_checked']} of {loading['runs_to_check']} runs checked"
    if loading.get("pending_batches"):
        text += f", {plural(loading['pending_batches'], 'batch', 'batches')} of changes waiting"
    return text + f" ({loading['elapsed_s']:.1f}s)"


def _schedule_lines(schedules: list[dict[str, Any]]) -> list[str]:
    lines = []
    for sch in schedules:
        if sch["error"]:
            lines.append(f"  schedule error: {sch['error']}")
        else:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(sch["next_run"])) if sch["next_run"] else "-"
            lines.append(f"  scheduled {os.path.basename(sch['script'])} @ {sch['container']}: "
                         f"'{sch['schedule']}', next {when}")
    return lines


def add(args: argparse.Namespace, c: Client) -> int:
    path = _abs(args.path)
    if path is None or not os.path.exists(path):
        print(f"thotctl: {printable(str(path))} does not exist", file=sys.stderr)
        return exits.FAILURE
    res = c.call("add", path=path)
    watch = res.get("watch") or {}
    if watch.get("mode") in ("degraded", "polling") and not getattr(args, "json", False):
        # Said where it is added, not only in status: a project polled because a limit was
        # hit reacts slower, and the person who added it can fix the limit now.
        print(printable(f"thotctl: {res['root']} is polled, not watched: {watch.get('reason')}"),
              file=sys.stderr)
        if watch.get("fix"):
            print(printable(f"  fix: {watch['fix']}"), file=sys.stderr)
    return _out(args, res, [f"watching {res['root']} ({plural(res['objects'], 'object')}, "
                            f"{plural(res['runs'], 'run')})"])


def remove(args: argparse.Namespace, c: Client) -> int:
    res = c.call("remove", path=_abs(args.path))
    return _out(args, res, [f"removed {res['removed']}"])


def pause(args: argparse.Namespace, c: Client) -> int:
    res = c.call(args.cmd, path=_abs(args.path))
    verb = "paused" if args.cmd == "pause" else "resumed"
    if res.get("container"):
        what = f"{verb} container {res[verb][0]} (project {res['project']})"
        if not res.get("changed"):
            what += "; it was paused already" if verb == "paused" else "; it was not paused"
        lines = [what]
        if res.get("held_by"):
            lines.append(f"its runs stay held: {res['held_by']} is paused")
        return _out(args, res, lines)
    return _out(args, res, [f"{verb} {r}" for r in res[verb]] or ["no projects"])


def runs(args: argparse.Namespace, c: Client) -> int:
    res = c.call("runs", project=_abs(args.project), limit=args.limit, all=args.all)
    lines = [f"{'id':>5} {'status':8} {'took':>7} {'finished':>10}  script @ container"]
    for r in res["runs"]:
        took = f"{(r['finished'] or 0) - (r['started'] or 0):.2f}s" if r["finished"] else "-"
        # `thot run`'s runs (and those of removed projects) share the history: say so.
        unwatched = "" if r.get("watched", True) else "  (not watched)"
        lines.append(f"{r['id']:>5} {r['status']:8} {took:>7} {_ago(r['finished']):>10}  "
                     f"{os.path.basename(r['script'])} @ {r['container']}{unwatched}")
    if not res["runs"]:
        lines.append("no runs yet" + ("" if args.all else " (--all: also those of `thot run`)"))
    return _out(args, res, lines)


def logs(args: argparse.Namespace, c: Client) -> int:
    entry = c.call("log", id=args.run)
    path = entry.get("log")
    if args.json and not args.follow:
        return _out(args, entry, [])
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
    return _out(args, res, render_why(res).splitlines())


def plan(args: argparse.Namespace, c: Client) -> int:
    res = c.call("plan", path=_abs(args.path))
    lines = []
    for p in res["plan"]:
        state = "blocked" if p["blocked"] else ("running" if p["running"] else ("queued" if p["queued"] else "stale"))
        lines.append(f"{state:8} {os.path.basename(p['script'])} @ {p['container']}")
        lines += [f"    because {r}" for r in p["reasons"]]
    lines.append(f"{plural(len(res['plan']), 'run')} not up to date")
    return _out(args, res, lines)


def graph(args: argparse.Namespace, c: Client) -> int:
    res = c.call("graph", path=_abs(args.path), format=args.format)
    print(res["text"])
    return exits.OK


def rerun(args: argparse.Namespace, c: Client) -> int:
    res = c.call("rerun", path=_abs(args.path))
    return _out(args, res, [f"queued {plural(len(res['queued']), 'run')}"])


def wait(args: argparse.Namespace, c: Client) -> int:
    res = c.call("wait", timeout=args.timeout)
    blocked = res.get("blocked", [])
    if not res["quiet"]:
        lines = [f"still busy after {args.timeout:g}s"]
    else:
        lines = [f"waiting for a fix: {b['message']}" for b in blocked] or ["quiet"]
    _out(args, res, lines)
    if not res["quiet"]:
        return exits.FAILURE
    return exits.BLOCKED if blocked else exits.OK


def reload(args: argparse.Namespace, c: Client) -> int:
    res = c.call("reload")
    _out(args, res, ["reloaded" if res["reloaded"] else f"reload refused: {res.get('error')}"])
    return exits.OK if res["reloaded"] else exits.FAILURE


def reconcile(args: argparse.Namespace, c: Client) -> int:
    res = c.call("reconcile", path=_abs(args.path))
    return _out(args, res, [f"{k}: {plural(v, 'run')} queued" for k, v in res["queued"].items()] or ["done"])


def web(args: argparse.Namespace, c: Client) -> int:
    """The dashboard's address from the daemon's state folder (``web.json``, written when
    the page started) and the token that logs the browser in (``thotd.web.secret``)."""
    from pathlib import Path

    from thotd.web import secret

    st = c.call("status")
    deadline = time.monotonic() + 15  # just started: the page comes up a moment after the socket
    while st.get("web") == "starting" and time.monotonic() < deadline:
        time.sleep(0.05)
        st = c.call("status")
    folder = Path(st["state"]).parent
    where = secret.read_address(folder)
    key = secret.token(folder, create=False)
    if where is None or where.get("pid") != st["pid"] or key is None:
        print("thotctl: the dashboard is not serving: [web] enabled is false, or its port "
              "was taken (the daemon's log says which)", file=sys.stderr)
        return exits.FAILURE
    login = f"{where['url']}?token={key}"
    if args.open:
        import webbrowser

        webbrowser.open(login)
    return _out(args, {"url": where["url"], "login": login}, [login])


HANDLERS = {
    "status": status, "add": add, "remove": remove, "pause": pause, "resume": pause,
    "runs": runs, "logs": logs, "why": why, "plan": plan, "graph": graph, "rerun": rerun,
    "wait": wait, "reload": reload, "reconcile": reconcile, "web": web,
}


if __name__ == "__main__":
    sys.exit(main())
