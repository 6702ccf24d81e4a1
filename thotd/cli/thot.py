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

_EXITING = False  # set by entry(): the process ends when main() returns


@dataclass(frozen=True)
class PoolOption:
    """One ``thot run`` option that is also a ``[pool]`` setting of thotd's configuration.

    Declared once: the flags (the first is the historical one, later ones are aliases
    spelled like the config key), the config key it mirrors (a test checks that it exists)
    and the help text, which names the key. ``thot run`` does not read thotd's config file;
    the shared name is for people moving between the two.
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
    PoolOption("jobs", ("-j", "--jobs", "--workers"), "pool.workers",
               "independent subtrees in parallel", {"type": int, "default": 1}),
    PoolOption("timeout", ("--timeout", "--timeout-s"), "pool.timeout_s",
               "per-run timeout in seconds", {"type": float, "default": None}),
    PoolOption("no_fork", ("--no-fork",), "pool.fork",
               "start every Python script in a fresh interpreter instead of forking a "
               "preloaded one (slower; see README)", {"action": "store_true"}, " = false"),
)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="thot", description="Thot projects: run, validate, explain.")
    ap.add_argument("--state", help="state database (default: the user state dir)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="run the project's scripts bottom-up")
    run.add_argument("--root", default=".", help="project root (default: current folder)")
    run.add_argument("--changed", action="store_true", help="run only stale runs")
    run.add_argument("--dry-run", action="store_true", help="show what would run and why")
    for option in RUN_POOL_OPTIONS:
        option.add_to(run)
    run.add_argument("--json", action="store_true", help="machine-readable report")

    val = sub.add_parser("validate", help="list invalid object files")
    val.add_argument("path", nargs="?", default=".")
    val.add_argument("--json", action="store_true")

    tree = sub.add_parser("tree", help="print the project tree")
    tree.add_argument("path", nargs="?", default=".")
    tree.add_argument("--json", action="store_true")

    sch = sub.add_parser("schema", help="write the object files' JSON Schemas")
    sch.add_argument("--out", default=".", help="folder to write *.schema.json into")

    why = sub.add_parser("why", help="which run made an asset, from what, and is it stale")
    why.add_argument("path")
    why.add_argument("--root", default=None, help="project root (default: found from PATH)")
    why.add_argument("--json", action="store_true")

    graph = sub.add_parser("graph", help="the dependency graph of runs and assets")
    graph.add_argument("--root", default=".")
    graph.add_argument("--format", choices=("dot", "mermaid", "json"), default="dot")
    return ap


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


def cmd_run(args: argparse.Namespace) -> int:
    from thotd.engine import snapshot
    server = None
    if not args.dry_run and not args.no_fork:
        # Started first: it boots on the other core while the project loads.
        from thotd.executor.process import start_forkserver

        server = start_forkserver()
    try:
        engine = _engine(args.root, args.state, snapshot=True)
    except BaseException:
        if server is not None:
            server.close()
        raise
    try:
        return _run(args, engine, server)
    finally:
        if server is not None:
            server.close(wait=not _EXITING)
        # For the next run: the index as it is now, and the query answers it computed.
        snapshot.save(engine.index, engine.store.path.parent, engine=engine, detach=_EXITING)
        if not _EXITING:
            # An exiting process leaves the connection as a crash would, which SQLite is
            # made for: the last close checkpoints the WAL, ~5 ms the next opener can pay.
            engine.store.close()


def _run(args: argparse.Namespace, engine: Any, server: Any) -> int:
    from thotd.engine.oneshot import Progress, format_report, run_project

    for err in engine.index.errors():
        print(f"thot: invalid: {err}", file=sys.stderr)
    if args.dry_run:
        plan = engine.plan()
        rows = []
        for p in plan:
            reasons = [p.blocked] if p.blocked else (engine.reasons(p.key) if args.changed else ["full run"])
            if reasons:
                rows.append({"container": p.container, "script": p.script,
                             "blocked": bool(p.blocked), "reasons": reasons})
        if args.json:
            print(json.dumps({"would_run": rows, "considered": len(plan)}, indent=2))
        else:
            for r in rows:
                verb = "blocked" if r["blocked"] else "would run"
                print(f"{verb}: {engine.rel(r['script'])} in {engine.rel(r['container'])}")
                for reason in r["reasons"]:
                    print(f"    because {reason}")
            print(f"{sum(not r['blocked'] for r in rows)} of {len(plan)} runs would run")
        return exits.OK
    t0 = time.monotonic()
    report = run_project(
        engine, changed=args.changed, jobs=args.jobs, timeout_s=args.timeout,
        progress=Progress(0, enabled=None if not args.json else False), forkserver=server,
    )
    elapsed = time.monotonic() - t0
    if args.json:
        print(json.dumps({
            "runs": [o.to_json() for o in report.outcomes], "counts": report.counts(),
            "considered": report.considered, "elapsed_s": round(elapsed, 3),
            "invalid": [e.to_json() for e in engine.index.errors()],
        }, indent=2))
    else:
        print(format_report(report, engine, elapsed))
    return exits.FAILURE if report.failed or engine.index.errors() else exits.OK


def cmd_validate(args: argparse.Namespace) -> int:
    index = _load(args.path)
    errors, warnings = index.errors(), index.warnings()
    if args.json:
        print(json.dumps({"root": index.root, "objects": len(index.nodes),
                          "errors": [e.to_json() for e in errors], "warnings": warnings}, indent=2))
    else:
        for e in errors:
            print(f"error: {e}")
        for w in warnings:
            print(f"warning: {w}")
        print(f"{len(index.nodes)} objects, {len(errors)} invalid, {len(warnings)} warnings")
    return exits.FAILURE if errors else exits.OK


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


def why_info(engine: Any, path: str) -> dict[str, Any]:
    """Provenance of an asset or container, shared by ``thot why`` and ``thotctl why``."""
    from thotd.project.index import norm

    target = norm(path)
    node = engine.index.nodes.get(target)
    if node is None:
        owner = engine.index.owner_container(target)
        assets = sorted(engine.index.by_file.get(target, ()))  # a data file: its asset
        if assets:
            target, node = assets[0], engine.index.nodes[assets[0]]
        elif owner is None:
            return {"path": target, "error": "not an object of this project"}
    producers = engine.producers()
    runs = []
    keys = [producers[target]] if target in producers else []
    if node is not None and node.kind == "container":
        keys += [k for k in engine.rows if k[0] == target]
    for key in keys:
        row = engine.rows[key]
        rec = row.record or {}
        runs.append({
            "container": key[0], "script": key[1], "status": row.status,
            "finished": row.finished, "log": row.log,
            "inputs": sorted(rec.get("consumed", {})),
            "queries": [{"kind": q["kind"], "search": q["search"], "ids": q["ids"]}
                        for q in rec.get("queries", [])],
            "outputs": sorted(rec.get("outputs", {})),
            "stale": engine.reasons(key),
        })
    kind = node.kind if node is not None else None
    creator = node.props.get("creator_type") if node is not None else None
    return {"path": target, "kind": kind, "creator_type": creator, "runs": runs}


def cmd_why(args: argparse.Namespace) -> int:
    from thotd.project.index import find_project_root

    start = args.path if os.path.isdir(args.path) else os.path.dirname(os.path.abspath(args.path))
    root = args.root or _outermost(start)
    info = why_info(_engine(find_project_root(root), args.state), args.path)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return exits.OK if "error" not in info else exits.FAILURE
    print(render_why(info))
    return exits.OK if "error" not in info else exits.FAILURE


def render_why(info: dict[str, Any]) -> str:
    if "error" in info:
        return f"{info['path']}: {info['error']}"
    lines = [f"{info['path']} ({info['kind']}, made by {info['creator_type'] or 'user'})"]
    if not info["runs"]:
        lines.append("  no run produced it (a user's file, or no run recorded yet)")
    for r in info["runs"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["finished"])) if r["finished"] else "never finished"
        lines.append(f"  run {r['script']} in {r['container']}: {r['status']} at {when}")
        for q in r["queries"]:
            lines.append(f"    asked {q['kind']} {json.dumps(q['search'])} -> {len(q['ids'])} objects")
        for i in r["inputs"]:
            lines.append(f"    input {i}")
        lines.append("    stale: " + ("; ".join(r["stale"]) if r["stale"] else "no, up to date"))
        if r["log"]:
            lines.append(f"    log: {r['log']}")
    return "\n".join(lines)


def _outermost(start: str) -> str:
    """The nearest folder at or above ``start`` holding a ``_container.json``."""
    cur = os.path.abspath(start)
    while not os.path.isfile(os.path.join(cur, "_container.json")):
        parent = os.path.dirname(cur)
        if parent == cur:
            return start
        cur = parent
    return cur


def graph_data(engine: Any) -> dict[str, Any]:
    runs = [{"id": f"{c}::{s}", "container": c, "script": s,
             "status": engine.rows[(c, s)].status if (c, s) in engine.rows else "never"}
            for c, s in (p.key for p in engine.plan())]
    edges = [{"from": f"{a[0]}::{a[1]}", "asset": asset, "to": f"{b[0]}::{b[1]}"}
             for a, asset, b in engine.edges()]
    produced = [{"run": f"{k[0]}::{k[1]}", "asset": oid} for oid, k in engine.producers().items()]
    return {"runs": runs, "edges": edges, "produced": produced}


def render_graph(engine: Any, data: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2)

    def label(run_id: str) -> str:
        c, s = run_id.split("::")
        return f"{os.path.basename(s)} @ {engine.rel(c)}"

    ids = {r["id"]: f"r{i}" for i, r in enumerate(data["runs"])}
    assets = sorted({p["asset"] for p in data["produced"]} | {e["asset"] for e in data["edges"]})
    aids = {a: f"a{i}" for i, a in enumerate(assets)}
    if fmt == "dot":
        out = ["digraph thot {", "  rankdir=BT;"]
        out += [f'  {ids[r["id"]]} [shape=box label="{label(r["id"])}"];' for r in data["runs"]]
        out += [f'  {aids[a]} [shape=ellipse label="{engine.rel(a)}"];' for a in assets]
        out += [f'  {ids[p["run"]]} -> {aids[p["asset"]]};' for p in data["produced"] if p["run"] in ids]
        out += [f'  {aids[e["asset"]]} -> {ids[e["to"]]};' for e in data["edges"] if e["to"] in ids]
        return "\n".join([*out, "}"])
    out = ["flowchart BT"]
    out += [f'  {ids[r["id"]]}["{label(r["id"])}"]' for r in data["runs"]]
    out += [f'  {aids[a]}(["{engine.rel(a)}"])' for a in assets]
    out += [f"  {ids[p['run']]} --> {aids[p['asset']]}" for p in data["produced"] if p["run"] in ids]
    out += [f"  {aids[e['asset']]} --> {ids[e['to']]}" for e in data["edges"] if e["to"] in ids]
    return "\n".join(out)


def cmd_graph(args: argparse.Namespace) -> int:
    engine = _engine(args.root, args.state)
    print(render_graph(engine, graph_data(engine), args.format))
    return exits.OK


COMMANDS = {
    "run": cmd_run, "validate": cmd_validate, "tree": cmd_tree, "schema": cmd_schema,
    "why": cmd_why, "graph": cmd_graph,
}


if __name__ == "__main__":
    entry()
