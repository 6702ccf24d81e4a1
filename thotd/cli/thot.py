"""``thot``: run, check and explain a project from the command line (no daemon needed).

Data goes to stdout, diagnostics to stderr; every query command takes ``--json``. Exit codes
(:mod:`thotd.exits`): 0 ok, 1 something failed or is invalid, 2 usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from thotd import exits
from thotd.version import VersionAction

_EXITING = False  # set by entry(): the process ends when main() returns


@dataclass(frozen=True)
class PoolOption:
    """One ``thot run`` option that is also a ``[pool]`` setting of thotd's configuration.

    Declared once: the flags (the first is the historical one, later ones are aliases
    spelled like the config key), the config key it mirrors (a test checks that it exists)
    and the help text, which names the key. ``thot run`` does not take ``[pool]`` from thotd's
    config file (only ``[trust]`` and ``[run_logs]``); the shared name is for people moving
    between the two.
    """

    dest: str
    flags: tuple[str, ...]
    config_key: str  # "section.key" in thotd's config
    help: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    config_value: str = ""  # for a flag that sets the key to one value: " = false"

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        section, key = self.config_key.split(".")
        parser.add_argument(
            *self.flags, dest=self.dest, **self.kwargs,
            help=f"{self.help} (thotd's config: [{section}] {key}{self.config_value})")


RUN_POOL_OPTIONS = (
    PoolOption("jobs", ("-j", "-t", "--jobs", "--tasks", "--workers"), "pool.workers",
               "independent subtrees in parallel (-t alone: 16, as the original runner)",
               {"type": int, "nargs": "?", "const": 16, "default": 1}),
    PoolOption("timeout", ("--timeout", "--timeout-s"), "pool.timeout_s",
               "per-run timeout in seconds", {"type": float, "default": None}),
    PoolOption("no_fork", ("--no-fork",), "pool.fork",
               "start every Python script in a fresh interpreter instead of forking a "
               "preloaded one (slower; see README)", {"action": "store_true"}, " = false"),
)


#: Exit codes every command may end with, after its own (:mod:`thotd.exits`).
_COMMON_EXITS = ((exits.USAGE, "the command line is wrong"),
                 (exits.INTERRUPTED, "interrupted (Ctrl-C)"))


def _epilog(examples: Sequence[tuple[str, str]], codes: Sequence[tuple[int, str]]) -> str:
    """The end of a command's ``--help``: two examples, then its exit codes."""
    lines = ["examples:"] + [f"  {cmd:34} {what}" for cmd, what in examples]
    lines += ["", "exit codes:"] + [f"  {code:<4} {what}" for code, what in (*codes, *_COMMON_EXITS)]
    return "\n".join(lines)


#: Each command's one-line help, its two examples and its own exit codes.
HELP: dict[str, tuple[str, tuple[tuple[str, str], ...], tuple[tuple[int, str], ...]]] = {
    "run": ("run the project's scripts bottom-up", (
        ("thot run", "run every script, children before parents"),
        ("thot run --changed --dry-run", "what is stale, and what may follow it"),
    ), ((exits.OK, "every run succeeded"),
        (exits.FAILURE, "a run failed or was blocked, or an object file is invalid"))),
    "validate": ("list invalid object files", (
        ("thot validate", "check the project around the current folder"),
        ("thot validate path/to/project --json", "the same, machine-readable"),
    ), ((exits.OK, "every object file is valid (warnings allowed)"),
        (exits.FAILURE, "an object file is invalid, or PATH is not in a project"))),
    "tree": ("print the project tree", (
        ("thot tree", "containers, assets and scripts, as a tree"),
        ("thot tree path/to/project --json", "the same, nested JSON"),
    ), ((exits.OK, "printed"), (exits.FAILURE, "PATH is not in a project"))),
    "schema": ("write the object files' JSON Schemas", (
        ("thot schema", "write *.schema.json into the current folder"),
        ("thot schema --out schemas", "into ./schemas"),
    ), ((exits.OK, "written"),)),
    "why": ("which run made an asset, from what, and is it stale", (
        ("thot why results/stats.txt", "the run that made it, its inputs, staleness"),
        ("thot why group-1 --json", "a container's runs, machine-readable"),
    ), ((exits.OK, "explained"), (exits.FAILURE, "PATH is no object of the project"))),
    "graph": ("the dependency graph of runs and assets", (
        ("thot graph | dot -Tsvg > graph.svg", "draw it with Graphviz"),
        ("thot graph --format mermaid", "paste into Markdown"),
    ), ((exits.OK, "printed"), (exits.FAILURE, "not in a project"))),
}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="thot", description="Thot projects: run, validate, explain.",
        epilog=_epilog(HELP["run"][1], ((exits.OK, "done"), (exits.FAILURE, "something failed"))),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action=VersionAction)
    ap.add_argument("--state", help="state database (default: the user state dir)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def command(name: str) -> argparse.ArgumentParser:
        text, examples, codes = HELP[name]
        return sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".",
                              epilog=_epilog(examples, codes),
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    run = command("run")
    run.add_argument("-r", "--root", default=".", help="project root (default: current folder)")
    run.add_argument("--changed", action="store_true", help="run only stale runs")
    run.add_argument("--dry-run", action="store_true",
                     help="show what would run and why, and what may follow it")
    _original_run_options(run)
    for option in RUN_POOL_OPTIONS:
        option.add_to(run)
    run.add_argument("--json", action="store_true", help="machine-readable report")
    run.add_argument("--executor", choices=("local", "dask"), default="local",
                     help="where scripts run: this machine (default) or a Dask cluster")
    run.add_argument("--scheduler", default=None,
                     help="the Dask scheduler's address for --executor dask (tcp://host:8786)")
    run.add_argument("--trust-anyone", action="store_true",  # thotd.engine.trust.OVERRIDE_FLAG
                     help="for this run only, also run scripts that other accounts own or "
                     "can write (refused by default: see [trust] in thotd's config)")

    val = command("validate")
    val.add_argument("path", nargs="?", default=".")
    val.add_argument("--json", action="store_true")

    tree = command("tree")
    tree.add_argument("path", nargs="?", default=".")
    tree.add_argument("--json", action="store_true")

    sch = command("schema")
    sch.add_argument("--out", default=".", help="folder to write *.schema.json into")

    why = command("why")
    why.add_argument("path")
    why.add_argument("--root", default=None, help="project root (default: found from PATH)")
    why.add_argument("--json", action="store_true")

    graph = command("graph")
    graph.add_argument("--root", default=".")
    graph.add_argument("--format", choices=("dot", "mermaid", "json"), default="dot")
    return ap


def _original_run_options(run: argparse.ArgumentParser) -> None:
    """The original runner's options (``python -m thot.runner``), so its commands still work."""
    run.add_argument("--scripts", type=_script_list, default=None,
                     help="only these scripts: a JSON list of paths, relative to --root or "
                     "'root:/...' (the original runner's form), or one path")
    run.add_argument("--ignore-errors", action="store_true",
                     help="accepted for the original runner: here a failed run never stops "
                     "the others")
    run.add_argument("-v", "--verbose", action="store_true",
                     help="report every run, not only those that did not succeed")


def _script_list(value: str) -> list[str]:
    try:
        parsed = json.loads(value)
    except ValueError:
        return [value]
    if isinstance(parsed, str):
        return [parsed]
    if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
        raise argparse.ArgumentTypeError("--scripts takes a JSON list of script paths")
    return parsed


def _only_scripts(engine: Any, root: str, scripts: list[str]) -> None:
    """Make ``engine`` plan only the runs of ``scripts`` (resolved as the original runner
    did: against ``root``, ``root:`` against the project root)."""
    from thotd.engine.staleness import Planned
    from thotd.project.locate import norm, resolve_path

    wanted = {resolve_path(s, norm(root), engine.index.root) for s in scripts}
    full = engine.plan

    def plan(*args: Any, **kwargs: Any) -> list[Planned]:
        kept = [p for p in full(*args, **kwargs) if p.script in wanted]
        return [Planned(p.key, p.priority, i, p.depth, p.schedule, p.blocked)
                for i, p in enumerate(kept)]

    engine.plan = plan


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from thotd.project.index import NotAProject

    try:
        return int(COMMANDS[args.cmd](args))
    except NotAProject as exc:
        print(f"thot: {exc}", file=sys.stderr)
        return exits.FAILURE
    except KeyboardInterrupt:
        return exits.INTERRUPTED
    except BrokenPipeError:
        return quiet_broken_pipe()


def entry() -> None:
    """The ``thot`` command: :func:`main`, then exit without tearing the interpreter down.

    Freeing a loaded project object by object at exit takes ~50 ms at 3,000 objects -- a
    quarter of a quick ``thot run --changed``. By then every file is written and closed and
    the state database committed, so the process just ends (stdout flushed first)."""
    global _EXITING
    _EXITING = True
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = quiet_broken_pipe()
    os._exit(code)


def quiet_broken_pipe() -> int:
    """The reader of our output left (``| head``): not an error. Point stdout at /dev/null so
    the interpreter's final flush does not complain either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return exits.OK


def _load(path: str) -> Any:
    from thotd.project.index import Index, find_project_root

    return Index.load(find_project_root(path))


def _engine(root: str, state: str | None, *, snapshot: bool = False) -> Any:
    from thotd.engine.staleness import Engine
    from thotd.engine.state import Store

    store = Store(state)
    if snapshot:
        from thotd.engine import snapshot as snap
        from thotd.project.index import find_project_root

        index, since, runs = snap.load(find_project_root(root), store.path.parent)
        engine = Engine(index, store)
        if since is not None and runs is not None:
            engine.known_clean = snap.clean_runs(engine, since, runs)
        return engine
    return Engine(_load(root), store)


class ForkServerOnDemand:
    """The fork server of one ``thot run``, started when it is first asked for.

    A full run asks at once (its server boots on the other core while the project loads);
    ``--changed`` asks when its first run starts, so an up-to-date project starts no
    process at all -- nothing left behind to outlive the command."""

    def __init__(self, *, now: bool) -> None:
        self.server: Any = None
        self.asked = False
        if now:
            self()

    def __call__(self) -> Any:
        if not self.asked:
            from thotd.executor.process import start_forkserver

            self.asked = True
            self.server = start_forkserver()
        return self.server

    def close(self, *, wait: bool = True) -> None:
        if self.server is not None:
            self.server.close(wait=wait)


def cmd_run(args: argparse.Namespace) -> int:
    from thotd.engine import snapshot
    from thotd.service import runconfig

    try:
        trust, retention = runconfig.for_run(anyone=args.trust_anyone)
    except runconfig.UnusableConfig as exc:
        print(f"thot: {exc}", file=sys.stderr)
        return exits.CONFIG
    server = None
    if not args.dry_run and not args.no_fork:
        server = ForkServerOnDemand(now=not args.changed)
    try:
        engine = _engine(args.root, args.state, snapshot=True)
        engine.retention = retention
        if args.scripts is not None:
            _only_scripts(engine, args.root, args.scripts)
    except BaseException:
        if server is not None:
            server.close()
        raise
    try:
        return _run(args, engine, server, trust)
    finally:
        if server is not None:
            server.close(wait=not _EXITING)
        # For the next run: the index as it is now, and the query answers it computed.
        snapshot.save(engine.index, engine.store.path.parent, engine=engine, detach=_EXITING)
        if not _EXITING:
            # An exiting process leaves the connection as a crash would, which SQLite is
            # made for: the last close checkpoints the WAL, ~5 ms the next opener can pay.
            engine.store.close()


def _executor(args: argparse.Namespace) -> Any:
    """``--executor dask --scheduler ADDR``: the remote executor (None: run here)."""
    if args.executor == "local":
        return None
    from thotd.executor.choose import load

    return load(args.executor)(scheduler=args.scheduler)


def _run(args: argparse.Namespace, engine: Any, server: Any, trust: Any) -> int:
    from thotd.engine.oneshot import Progress, dry_run, format_dry_run, format_report, run_project

    for err in engine.index.errors():
        print(f"thot: invalid: {err}", file=sys.stderr)
    if args.dry_run:
        plan = dry_run(engine, changed=args.changed, trust=trust)
        print(json.dumps(plan, indent=2) if args.json else format_dry_run(plan, engine))
        return exits.OK
    t0 = time.monotonic()
    if args.executor == "dask" and not args.scheduler:
        print("thot: --executor dask needs --scheduler tcp://host:port", file=sys.stderr)
        return exits.USAGE
    try:
        executor = _executor(args)
    except RuntimeError as exc:  # the [dask] extra is not installed
        print(f"thot: {exc}", file=sys.stderr)
        return exits.FAILURE
    try:
        report = run_project(
            engine, changed=args.changed, jobs=args.jobs, timeout_s=args.timeout,
            progress=Progress(0, enabled=None if not args.json else False), forkserver=server,
            trust=trust, executor=executor,
        )
    finally:
        if executor is not None:
            executor.close()
    elapsed = time.monotonic() - t0
    if args.json:
        print(json.dumps({
            "runs": [o.to_json() for o in report.outcomes], "counts": report.counts(),
            "considered": report.considered, "elapsed_s": round(elapsed, 3),
            "invalid": [e.to_json() for e in engine.index.errors()],
        }, indent=2))
    else:
        print(format_report(report, engine, elapsed, verbose=args.verbose))
    return exits.FAILURE if report.failed or engine.index.errors() else exits.OK


def cmd_validate(args: argparse.Namespace) -> int:
    index = _load(args.path)
    errors, warnings = index.errors(), index.warnings()
    checked, invalid = _object_files(index), sorted({e.path for e in errors})
    if args.json:
        print(json.dumps({"root": index.root, "objects": len(index.nodes),
                          "files_checked": checked, "invalid_files": invalid,
                          "errors": [e.to_json() for e in errors], "warnings": warnings}, indent=2))
    else:
        for e in errors:
            print(f"error: {e}")
        for w in warnings:
            print(f"warning: {w}")
        verdict = (f"{_count(len(invalid), 'invalid file')} ({_count(len(errors), 'error')})"
                   if errors else "all valid")
        print(f"{_count(checked, 'object file')} checked: {verdict}, "
              f"{_count(len(warnings), 'warning')}")
    return exits.FAILURE if errors else exits.OK


def _object_files(index: Any) -> int:
    """How many object files the index was read from: one per object, and each container's
    ``_scripts.json``."""
    from thotd.project.vocabulary import SCRIPTS_FILE

    return sum(1 + (n.kind == "container" and os.path.isfile(os.path.join(n.id, SCRIPTS_FILE)))
               for n in index.walk(include_invalid=True))


def _count(n: int, noun: str) -> str:
    """``1 error``, ``2 errors``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def cmd_tree(args: argparse.Namespace) -> int:
    index = _load(args.path)
    if args.json:
        def node_json(nid: str) -> dict[str, Any]:
            n = index.nodes[nid]
            out: dict[str, Any] = {"id": nid, "kind": n.kind, "name": index.view(nid)["name"],
                                   "type": n.props.get("type"), "valid": n.valid}
            if n.kind == "container":
                out["scripts"] = index.view(nid)["scripts"] if n.valid else []
                out["children"] = [node_json(c) for c in n.entries if c in index.nodes]
            else:
                out["file"] = n.file
            return out

        print(json.dumps(node_json(index.root), indent=2))
        return exits.OK

    def show(nid: str, prefix: str, last: bool, top: bool) -> None:
        n = index.nodes[nid]
        name = os.path.basename(nid) if not top else nid
        label = f"{name}/ [{n.props.get('type') or n.kind}]"
        if n.kind == "asset":
            label += f" -> {os.path.relpath(n.file, nid) if n.file else '?'}"
        if not n.valid:
            label += f"  INVALID: {n.errors[0].reason}"
        branch = "" if top else ("└── " if last else "├── ")
        print(prefix + branch + label)
        inner = prefix + ("" if top else ("    " if last else "│   "))
        for s in n.scripts:
            flag = "" if s["autorun"] else " (manual)"
            shown = "root:/" + os.path.relpath(s["script"], index.root)  # as written in files
            print(f"{inner}  ⚙ {shown} p={s['priority']:g}{flag}")
        kids = [c for c in n.entries if c in index.nodes]
        for i, c in enumerate(kids):
            show(c, inner, i == len(kids) - 1, False)

    show(index.root, "", True, True)
    return exits.OK


def cmd_schema(args: argparse.Namespace) -> int:
    from pathlib import Path

    from thotd.project.model import write_schemas

    for path in write_schemas(Path(args.out)):
        print(path)
    return exits.OK


def cmd_why(args: argparse.Namespace) -> int:
    from thotd.engine.explain import render_why, why_info
    from thotd.project.index import find_project_root

    start = args.path if os.path.isdir(args.path) else os.path.dirname(os.path.abspath(args.path))
    root = args.root or _outermost(start)
    info = why_info(_engine(find_project_root(root), args.state), args.path)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return exits.OK if "error" not in info else exits.FAILURE
    print(render_why(info))
    return exits.OK if "error" not in info else exits.FAILURE


def _outermost(start: str) -> str:
    """The nearest folder at or above ``start`` holding a ``_container.json``."""
    cur = os.path.abspath(start)
    while not os.path.isfile(os.path.join(cur, "_container.json")):
        parent = os.path.dirname(cur)
        if parent == cur:
            return start
        cur = parent
    return cur


def cmd_graph(args: argparse.Namespace) -> int:
    from thotd.engine.explain import graph_data, render_graph

    engine = _engine(args.root, args.state)
    print(render_graph(engine, graph_data(engine), args.format))
    return exits.OK


COMMANDS = {
    "run": cmd_run, "validate": cmd_validate, "tree": cmd_tree, "schema": cmd_schema,
    "why": cmd_why, "graph": cmd_graph,
}


if __name__ == "__main__":
    entry()
