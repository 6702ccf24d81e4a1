"""The graph of runs as an SVG drawn here (no JS library, nothing from the network).

Layered by container depth below the focused container: the focus and its children's
runs are drawn, one row per depth, the deepest at the bottom (producers feed upwards).
Deeper runs collapse into one box per child (``+N runs``) that links to the graph focused
there, so a 10,000-container project stays a page of at most a few hundred boxes.
Edges follow recorded inputs (producer -> consumer), merged onto the boxes drawn.
"""

from __future__ import annotations

import os
from html import escape
from typing import Any
from urllib.parse import quote

from thotd.web.model import rel

BOX_W, BOX_H, GAP_X, ROW_H, MAX_ROW = 180, 40, 16, 90, 60


def _depth(root: str, path: str) -> int:
    return 0 if path == root else rel(root, path).count(os.sep) + 1


def _visible(focus: str, container: str, depth: int) -> str | None:
    """The box a run of ``container`` is drawn in: itself, the collapsed child of the
    focus holding it (``+`` prefix), or None when outside the focus."""
    if container != focus and not container.startswith(focus + os.sep):
        return None
    d = _depth(focus, container)
    if d <= depth - 1:
        return container
    parts = rel(focus, container).split(os.sep)
    return "+" + os.path.join(focus, *parts[:depth - 1]) if depth > 1 else "+" + focus


def _boxes(graph: dict[str, Any], focus: str, depth: int
           ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The boxes to draw (a run, or ``+child``: the runs collapsed below it) and the box
    each run is drawn in."""
    boxes: dict[str, dict[str, Any]] = {}
    run_box: dict[str, str] = {}
    for run in graph.get("runs", []):
        where = _visible(focus, run["container"], depth)
        if where is None:
            continue
        if where.startswith("+"):
            box = boxes.setdefault(where, {"n": 0, "status": "ok", "container": where[1:]})
            box["n"] += 1
            if run["status"] in ("failed", "timeout", "error"):
                box["status"] = "failed"
            run_box[run["id"]] = where
        else:
            boxes[run["id"]] = {"run": run, "status": run["status"], "container": where}
            run_box[run["id"]] = run["id"]
    return boxes, run_box


def render(graph: dict[str, Any], root: str, focus: str, depth: int = 2) -> str:
    """The SVG markup (inline in the page: our own markup, every label escaped)."""
    boxes, run_box = _boxes(graph, focus, depth)
    rows: dict[int, list[str]] = {}
    for bid, box in boxes.items():
        rows.setdefault(_depth(focus, box["container"]) + (1 if bid.startswith("+") else 0), []).append(bid)
    if not rows:
        return '<p class="empty">no runs here</p>'
    deepest = max(rows)
    pos: dict[str, tuple[int, int]] = {}
    hidden = 0
    for d, ids in rows.items():
        ids.sort(key=lambda b: boxes[b]["container"])
        hidden += max(0, len(ids) - MAX_ROW)
        for i, bid in enumerate(ids[:MAX_ROW]):
            pos[bid] = (10 + i * (BOX_W + GAP_X), 10 + (deepest - d) * ROW_H)
    width = 20 + max(x for x, _ in pos.values()) + BOX_W
    height = 20 + max(y for _, y in pos.values()) + BOX_H
    edges = set()
    for e in graph.get("edges", []):
        a, b = run_box.get(e["from"]), run_box.get(e["to"])
        if a in pos and b in pos and a != b:
            edges.add((a, b))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img">']
    for a, b in sorted(edges):
        (ax, ay), (bx, by) = pos[a], pos[b]
        out.append(f'<line class="edge" x1="{ax + BOX_W // 2}" y1="{ay}" '
                   f'x2="{bx + BOX_W // 2}" y2="{by + BOX_H}"/>')
    for bid, (x, y) in pos.items():
        box = boxes[bid]
        if bid.startswith("+"):
            href = f"/graph?root={quote(root)}&amp;node={quote(box['container'])}"
            label = f"{rel(root, box['container'])}: +{box['n']} runs"
        else:
            href = f"/container?path={quote(box['container'])}"
            label = f"{os.path.basename(box['run']['script'])} @ {rel(root, box['container'])}"
        short = label if len(label) <= 28 else "…" + label[-27:]
        out.append(f'<a href="{href}"><rect class="box st-{escape(box["status"])}" x="{x}" y="{y}" '
                   f'width="{BOX_W}" height="{BOX_H}" rx="5"/><text x="{x + 8}" y="{y + 25}">'
                   f'<title>{escape(label)}</title>{escape(short)}</text></a>')
    if hidden:
        out.append(f'<text x="10" y="{height - 4}">{hidden} more not drawn</text>')
    out.append("</svg>")
    return "".join(out)
