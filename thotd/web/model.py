"""What the pages show, computed from control-method results (no HTTP, no templates).

A container's state is the state of its runs, worst first: ``running``, ``queued``,
``failed``, ``blocked``, ``stale``, else ``fresh`` (``none`` when it has no scripts). The
inputs are ``status`` (running, queued, blocked, failures with their log tail) and ``plan``
(stale runs): the two answers ``thotctl status`` and ``thotctl plan`` print. A collapsed
subtree shows the worst state inside it, so a failure deep down is visible from the top.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

#: Worst first.
ORDER = ("running", "queued", "failed", "blocked", "stale", "fresh", "none")
RANK = {name: i for i, name in enumerate(ORDER)}


@dataclass
class States:
    """Run states of one project's containers: own and worst-in-subtree."""

    root: str
    own: dict[str, str] = field(default_factory=dict)
    tails: dict[str, str] = field(default_factory=dict)  # failed container -> log tail
    below: dict[str, str] = field(default_factory=dict)  # worst state strictly below

    def of(self, container: str, has_scripts: bool) -> str:
        return self.own.get(container, "fresh" if has_scripts else "none")

    def subtree(self, container: str) -> str | None:
        return self.below.get(container)

    def as_json(self) -> dict[str, Any]:
        return {"own": self.own, "below": self.below, "tails": self.tails}


def _worse(a: str | None, b: str) -> str:
    return b if a is None or RANK[b] < RANK[a] else a


def states(project: dict[str, Any], plan: list[dict[str, Any]]) -> States:
    """From one project's ``status`` entry and the ``plan`` rows of that project."""
    out = States(project["root"])

    def mark(container: str, state: str) -> None:
        out.own[container] = _worse(out.own.get(container), state)

    for row in plan:
        if row.get("project") == out.root:
            mark(row["container"], "blocked" if row.get("blocked") else "stale")
    for b in project.get("blocked", []):
        mark(b["container"], "blocked")
    for f in project.get("failures", []):
        mark(f["container"], "failed")
        out.tails[f["container"]] = "\n".join(f.get("tail") or [])
    for q in project.get("queued", []):
        mark(q["container"], "queued")
    for r in project.get("running", []):
        mark(r["container"], "running")
    for container, state in out.own.items():
        if state in ("fresh", "none"):
            continue
        parent = os.path.dirname(container)
        while container != out.root and parent.startswith(out.root):
            out.below[parent] = _worse(out.below.get(parent), state)
            container, parent = parent, os.path.dirname(parent)
    return out


def rel(root: str, path: str) -> str:
    """``path`` as shown: relative to the project root (``.`` for the root)."""
    if path == root:
        return "."
    if path.startswith(root + os.sep):
        return path[len(root) + 1:]
    return path


def counts(project: dict[str, Any]) -> dict[str, int]:
    """The project list's counts: runs by recorded status plus queued/running/blocked."""
    out = dict(project.get("counts") or {})
    for name in ("queued", "running", "blocked", "invalid"):
        if project.get(name):
            out[name] = len(project[name])
    return out


def degraded(project: dict[str, Any]) -> str | None:
    """Why the project's watch is not a plain inotify watch (or its load failed)."""
    if project.get("error"):
        return str(project["error"])
    watch = project.get("watch") or {}
    if watch.get("reason"):
        fix = f" ({watch['fix']})" if watch.get("fix") else ""
        return f"{watch.get('mode')}: {watch['reason']}{fix}"
    return None


def paused(project: dict[str, Any]) -> set[str]:
    """The containers paused by path (``thotctl pause CONTAINER``)."""
    return {c["container"] for c in project.get("paused_containers") or []}


def held_by(project: dict[str, Any], container: str) -> str | None:
    """The paused container holding ``container``'s runs (itself or one above), or None;
    the project itself when the whole project is paused."""
    for path in sorted(paused(project)):
        if container == path or container.startswith(path + os.sep):
            return path
    return str(project["root"]) if project.get("paused") else None


def own_metadata(folder: str) -> dict[str, Any] | None:
    """The metadata written in the container's own ``_container.json`` (None if unreadable):
    the rest of its effective metadata is inherited."""
    import json

    try:
        with open(os.path.join(folder, "_container.json"), "rb") as fh:
            data = json.loads(fh.read(1 << 20))
    except (OSError, ValueError):
        return None
    meta = data.get("metadata") if isinstance(data, dict) else None
    return meta if isinstance(meta, dict) else {}
