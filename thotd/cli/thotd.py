"""``thotd``: start and stop the service, install its systemd unit, try it on the example.

``thotd start`` detaches by default and returns once the control socket answers, so a
script can call ``thotctl`` right after it; ``--foreground`` is for systemd and tests.
Exit codes are :data:`EXIT_CODES` (from :mod:`thotd.exits`); ``--help`` ends with them.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from thotd import exits
from thotd.version import VersionAction
from thotd.words import printable

EXIT_CODES = f"""exit codes:
  {exits.OK}   ok
  {exits.FAILURE}   failure (the daemon did not start or stop in time)
  {exits.USAGE}   usage error
  {exits.NOT_RUNNING}   (stop) thotd is not running
  {exits.CONFIG}  the configuration cannot be used (systemd does not restart on it)"""

#: Where ``thotd demo`` copies the example unless told: the user's data folder, so the
#: demo never litters (or dirties, in a git checkout) the folder it is called from.
DEMO_NAME = "thot-example"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="thotd", description="The Thot project watcher service.",
                                 epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action=VersionAction)
    sub = ap.add_subparsers(dest="cmd", required=True)
    start = sub.add_parser("start", help="start the daemon (detached unless --foreground)")
    start.add_argument("--foreground", action="store_true", help="stay attached (systemd, tests)")
    start.add_argument("--config", help="config file (default: $THOTD_CONFIG or the user config dir)")
    start.add_argument("--socket", help="control socket (default: $THOTD_SOCKET or the runtime dir)")
    start.add_argument("--state", help="state database (default: the user state dir)")
    start.add_argument("--timeout", type=float, default=30, help="seconds to wait for readiness")
    start.add_argument("project", nargs="*", help="projects to register at start")
    stop = sub.add_parser("stop", help="stop the daemon, letting running scripts finish")
    stop.add_argument("--socket")
    stop.add_argument("--timeout", type=float, default=60)
    inst = sub.add_parser("install-service", help="write the systemd user unit")
    inst.add_argument("--print", action="store_true", help="print the unit instead of writing it")
    demo = sub.add_parser("demo", help="copy the bundled example project and watch it")
    demo.add_argument("dir", nargs="?", help=f"where to copy it (default: the user data dir's "
                      f"thotd/{DEMO_NAME}); an existing copy is reused")
    demo.add_argument("--socket")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int({"start": cmd_start, "stop": cmd_stop, "install-service": cmd_install,
                    "demo": cmd_demo}[args.cmd](args))
    except KeyboardInterrupt:
        return exits.INTERRUPTED


def cmd_start(args: argparse.Namespace) -> int:
    if args.socket:
        os.environ["THOTD_SOCKET"] = str(Path(args.socket).absolute())
    if args.config:
        os.environ["THOTD_CONFIG"] = str(Path(args.config).absolute())
    if args.foreground:
        return run_foreground(args)
    return start_detached(args)


def run_foreground(args: argparse.Namespace) -> int:
    import asyncio

    from thotd import paths
    from thotd.service.config import ConfigError, load_config
    from thotd.service.lock import AlreadyRunning
    from thotd.service.logs import configure_logging

    try:
        config = load_config(Path(args.config) if args.config else None)
        sock = paths.socket_path(args.socket)
    except (ConfigError, ValueError) as exc:
        print(f"thotd: {exc}", file=sys.stderr)
        return exits.CONFIG
    configure_logging(config.log.level, paths.log_file() if config.log.file else None)
    if args.project:
        config = config.model_copy(update={"projects": [*config.projects, *map(Path, args.project)]})
    from thotd.service.daemon import Daemon
    from thotd.service.methods import handlers

    store = Path(args.state) if args.state else paths.database_path()
    daemon = Daemon(config, store_path=store, socket_path=sock, methods=handlers,
                    config_path=Path(args.config) if args.config else None)
    try:
        return asyncio.run(daemon.run())
    except AlreadyRunning as exc:
        print(f"thotd: {exc}", file=sys.stderr)
        return exits.FAILURE


def start_detached(args: argparse.Namespace) -> int:
    from thotd import paths
    from thotd.executor.processgroup import spawn
    from thotd.service.rpc import Client, DaemonNotRunning

    sock = paths.socket_path(args.socket)
    with Client(sock, timeout=2) as probe:
        try:
            hello = probe.call("hello")
            print(f"thotd already running (pid {hello.get('pid')}), socket {sock}")
            return exits.OK
        except (DaemonNotRunning, OSError):
            pass
    cmd = [sys.executable, "-m", "thotd.cli.thotd", "start", "--foreground"]
    for flag in ("config", "state"):
        if getattr(args, flag):
            cmd += [f"--{flag}", str(Path(getattr(args, flag)).absolute())]
    cmd += [str(Path(p).absolute()) for p in args.project]
    out_path = paths.log_dir() / "thotd.out"
    with open(out_path, "ab", opener=paths.private_file_opener) as out:
        proc = spawn(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                     env=os.environ.copy())
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"thotd: failed to start (exit {proc.returncode}); see {out_path}:", file=sys.stderr)
            print(_tail(out_path), file=sys.stderr)
            return exits.FAILURE
        try:
            with Client(sock, timeout=2) as c:
                c.call("hello")
            print(f"thotd started (pid {proc.pid}), socket {sock}")
            return exits.OK
        except (DaemonNotRunning, OSError):
            time.sleep(0.05)
    print(f"thotd: not ready after {args.timeout:g}s; see {out_path}", file=sys.stderr)
    return exits.FAILURE


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def cmd_stop(args: argparse.Namespace) -> int:
    from thotd import paths
    from thotd.executor.processgroup import pid_alive
    from thotd.service.rpc import Client, DaemonNotRunning, RpcError

    sock = paths.socket_path(args.socket)
    try:
        with Client(sock, timeout=5) as c:
            pid = c.call("stop")["pid"]
    except DaemonNotRunning:
        print(f"thotd: not running (no daemon at {printable(str(sock))})", file=sys.stderr)
        return exits.NOT_RUNNING
    except (RpcError, OSError) as exc:  # a hung or crashing daemon: a line, not a traceback
        print(f"thotd: cannot stop the daemon at {printable(str(sock))}: "
              f"{printable(getattr(exc, 'message', None) or str(exc))}", file=sys.stderr)
        return exits.FAILURE
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            print("thotd stopped")
            return exits.OK
        time.sleep(0.05)
    print(f"thotd: pid {pid} still running after {args.timeout:g}s", file=sys.stderr)
    return exits.FAILURE


def cmd_install(args: argparse.Namespace) -> int:
    from thotd.service.unit import render_unit, unit_install_path

    text = render_unit()
    if args.print:
        print(text)
        return exits.OK
    target = unit_install_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, target)
    print(f"wrote {target}\nnow run:\n  systemctl --user daemon-reload\n"
          "  systemctl --user enable --now thotd\n  loginctl enable-linger \"$USER\"")
    return exits.OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Copy the example (once), start the daemon on it, and say what to try next."""
    dest = Path(args.dir).absolute() if args.dir else demo_dir()
    project = dest / "project"
    if not dest.exists():
        copy_example(dest)
        print(f"copied the example project to {printable(str(dest))}")
    elif (project / "_container.json").is_file():
        print(f"using the example already at {printable(str(dest))} (delete it for a fresh copy)")
    else:
        print(f"thotd: {printable(str(dest))} exists and is not the example; name another folder",
              file=sys.stderr)
        return exits.FAILURE
    if args.socket:
        os.environ["THOTD_SOCKET"] = str(Path(args.socket).absolute())
    start = argparse.Namespace(foreground=False, config=None, socket=args.socket, state=None,
                               timeout=30, project=[str(project)])
    rc = start_detached(start)
    if rc != exits.OK:
        return rc
    from thotd.cli.thotctl import main as ctl

    ctl(["add", str(project)])
    ctl(["wait", "--timeout", "120"])
    rc = ctl(["status"])
    print("\n" + demo_hint(dest))
    return rc


def demo_dir() -> Path:
    import platformdirs

    from thotd.paths import APP_NAME

    return Path(platformdirs.user_data_dir(APP_NAME)) / DEMO_NAME


def copy_example(dest: Path) -> None:
    """Copy the bundled example to ``dest`` whole or not at all (an interrupted copy is not
    mistaken for the example by the next ``thotd demo``)."""
    example = Path(__file__).parent.parent / "example"
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(example, partial, ignore=shutil.ignore_patterns("__pycache__"))
    os.rename(partial, dest)


def demo_hint(dest: Path) -> str:
    """The commands to try, with a sample name not taken yet (``cp -r`` onto an existing
    folder would copy into it instead)."""
    batch = dest / "project" / "batch-a"
    taken = [int(m.group(1)) for m in (re.fullmatch(r"sample-(\d+)", p.name)
                                       for p in batch.iterdir() if p.is_dir()) if m]
    new = f"sample-{max(taken, default=0) + 1}"
    return (f"Try:\n  cd {shlex.quote(printable(str(dest)))}\n"
            f"  cp -r project/batch-a/sample-1 project/batch-a/{new}\n"
            "  thotctl wait && cat project/summary/summary.csv\n"
            "  thotctl runs\n"
            "  thotctl web --open   # the page: tree, runs, newest plots, live\n"
            "Stop with: thotd stop")


if __name__ == "__main__":
    sys.exit(main())
