"""Why a run is stale and what made what: the answers behind ``why`` and ``graph``.

Both ``thot`` (one-shot) and ``thotctl`` (through the daemon's control methods) ask the same
questions of an :class:`~thotd.engine.staleness.Engine`, so the answers are built here as
plain data (JSON-ready dicts: runs, their inputs, queries, outputs and stale reasons;
producer and consumer edges), and the ``render_*`` functions turn that data into text at the
edge: ``thotctl`` renders what the daemon sent, without an engine of its own.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

from thotd.project.locate import norm

if TYPE_CHECKING:
    from thotd.engine.staleness import Engine, RunKey
    from thotd.project.index import Node


def _target(engine: Engine, path: str) -> tuple[str, Node | None, bool]:
    """The object ``path`` names (a data file names its asset), its node, and whether it
    belongs to the project at all."""
    target = norm(path)
    index = engine.index
    node = index.nodes.get(target)
    if node is not None:
        return target, node, True
    assets = sorted(index.by_file.get(target, ()))
    if assets:
        return assets[0], index.nodes[assets[0]], True
    return target, None, index.owner_container(target) is not None


def _run_info(engine: Engine, key: RunKey) -> dict[str, Any]:
    row = engine.rows[key]
    rec = row.record or {}
    return {
        "container": key[0], "script": key[1], "status": row.status,
        "finished": row.finished, "log": row.log,
        "inputs": sorted(rec.get("consumed", {})),
        "queries": [{"kind": q["kind"], "search": q["search"], "ids": q["ids"]}
                    for q in rec.get("queries", [])],
        "outputs": sorted(rec.get("outputs", {})),
        "stale": engine.reasons(key),
        "reasons": [{"kind": r.kind, "path": r.path,
                     "query": {"kind": r.query[0], "search": json.loads(r.query[1])} if r.query else None}
                    for r in engine.why_stale(key)],
    }


def why_info(engine: Engine, path: str) -> dict[str, Any]:
    """Provenance of an asset or container: the run that produced it (and, for a container,
    its own runs) with their inputs, queries, outputs and why each is stale (``stale`` in
    words, ``reasons`` as data: kind, path, query)."""
    target, node, known = _target(engine, path)
    if not known:
        return {"path": target, "error": "not an object of this project"}
    producers = engine.producers()
    keys = [producers[target]] if target in producers else []
    if node is not None and node.kind == "container":
        keys += [k for k in engine.rows if k[0] == target]
    kind = node.kind if node is not None else None
    # unset in the file (the original's default, None) means a person put it there
    creator = (node.props.get("creator_type") or "user") if node is not None else None
    return {"path": target, "kind": kind, "creator_type": creator,
            "runs": [_run_info(engine, key) for key in keys]}


def render_why(info: dict[str, Any]) -> str:
    """:func:`why_info`'s answer as text, each field escaped on its own (a folder name may
    hold a newline or a terminal escape: printed raw it would forge a line of the answer)."""
    from thotd.words import printable as p

    if "error" in info:
        return f"{p(info['path'])}: {p(info['error'])}"
    lines = [f"{p(info['path'])} ({info['kind']}, made by {p(info['creator_type'] or 'user')})"]
    if not info["runs"]:
        lines.append("  no run produced it (a user's file, or no run recorded yet)")
    for r in info["runs"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["finished"])) if r["finished"] else "never finished"
        lines.append(f"  run {p(r['script'])} in {p(r['container'])}: {r['status']} at {when}")
        for q in r["queries"]:
            lines.append(f"    asked {p(q['kind'])} {json.dumps(q['search'])} -> {len(q['ids'])} objects")
        for i in r["inputs"]:
            lines.append(f"    input {p(i)}")
        lines.append("    stale: " + ("; ".join(map(p, r["stale"])) if r["stale"] else "no, up to date"))
        if r["log"]:
            lines.append(f"    log: {p(r['log'])}")
    return "\n".join(lines)


def graph_data(engine: Engine) -> dict[str, Any]:
    """Every planned run with its status, the assets each produced, and the (producer,
    asset, consumer) edges along recorded inputs."""
    runs = [{"id": f"{c}::{s}", "container": c, "script": s,
             "status": engine.rows[(c, s)].status if (c, s) in engine.rows else "never"}
            for c, s in (p.key for p in engine.plan())]
    edges = [{"from": f"{a[0]}::{a[1]}", "asset": asset, "to": f"{b[0]}::{b[1]}"}
             for a, asset, b in engine.edges()]
    produced = [{"run": f"{k[0]}::{k[1]}", "asset": oid} for oid, k in engine.producers().items()]
    return {"runs": runs, "edges": edges, "produced": produced}


def render_graph(engine: Engine, data: dict[str, Any], fmt: str) -> str:
    """:func:`graph_data` as ``json``, Graphviz ``dot`` or (any other ``fmt``) Mermaid."""
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
