"""Random edits of a small project on disk, for the property tests of the index and of its
snapshot: each edit is a tuple drawn by :data:`edit`, performed by :func:`apply_edit`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from corekit import make_tree
from hypothesis import strategies as st

GROUPS = ["g0", "g1", "g2"]
SAMPLES = ["s0", "s1", "s2"]

edit = st.one_of(
    st.tuples(st.just("meta"), st.sampled_from(["", *GROUPS]), st.integers(0, 3)),
    st.tuples(st.just("new_sample"), st.sampled_from(GROUPS), st.sampled_from(SAMPLES)),
    st.tuples(st.just("new_sample_partial"), st.sampled_from(GROUPS), st.sampled_from(SAMPLES)),
    st.tuples(st.just("delete_sample"), st.sampled_from(GROUPS), st.sampled_from(SAMPLES)),
    st.tuples(st.just("delete_asset"), st.sampled_from(GROUPS), st.sampled_from(SAMPLES)),
    st.tuples(st.just("move_sample"), st.sampled_from(GROUPS), st.sampled_from(SAMPLES),
              st.sampled_from(GROUPS), st.sampled_from(SAMPLES)),
    st.tuples(st.just("break"), st.sampled_from(["", *GROUPS]), st.sampled_from(["", *SAMPLES])),
    st.tuples(st.just("fix"), st.sampled_from(["", *GROUPS]), st.sampled_from(["", *SAMPLES])),
    st.tuples(st.just("break_scripts"), st.sampled_from(GROUPS)),
    st.tuples(st.just("scripts"), st.sampled_from(GROUPS), st.integers(0, 3)),
    st.tuples(st.just("both_files"), st.sampled_from(GROUPS), st.sampled_from(SAMPLES)),
    st.tuples(st.just("note"), st.sampled_from(GROUPS), st.integers(0, 2)),
    st.tuples(st.just("unmark_group"), st.sampled_from(GROUPS)),
    # same size, same mtime: only the inode change time tells
    st.tuples(st.just("sneaky"), st.sampled_from(GROUPS), st.sampled_from(SAMPLES)),
    st.tuples(st.just("touch"), st.sampled_from(GROUPS), st.sampled_from(SAMPLES)),
    # a plain folder (no object), which may later become an asset
    st.tuples(st.just("plain"), st.sampled_from(GROUPS)),
    st.tuples(st.just("plain_to_asset"), st.sampled_from(GROUPS)),
)


def _container(folder: Path, doc: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "_container.json"
    path.write_text(json.dumps(doc))
    return path


def apply_edit(root: Path, e: tuple[Any, ...]) -> list[str]:
    """Perform one edit on disk; return the paths a watcher would report."""
    kind = e[0]
    if kind == "meta":
        folder = root / e[1] if e[1] else root
        new = not folder.exists()
        cfile = _container(folder, {"metadata": {"m": e[2], e[1] or "top": e[2]}})
        return [str(folder), str(cfile)] if new else [str(cfile)]
    if kind in ("new_sample", "new_sample_partial"):
        group = root / e[1]
        if not (group / "_container.json").exists():
            return []
        sample = group / e[2]
        if sample.exists():
            return []
        paths = [str(sample), _container(sample, {"type": "sample", "metadata": {"s": e[2]}})]
        if kind == "new_sample":
            raw = sample / "raw"
            raw.mkdir()
            (raw / "_asset.json").write_text('{"type": "raw", "file": "data.csv"}')
            (raw / "data.csv").write_text("1\n")
            paths += [str(raw), str(raw / "_asset.json"), str(raw / "data.csv")]
        return [str(p) for p in paths]
    if kind == "delete_sample":
        sample = root / e[1] / e[2]
        if not sample.exists():
            return []
        shutil.rmtree(sample)
        return [str(sample)]
    if kind == "delete_asset":
        raw = root / e[1] / e[2] / "raw"
        if not raw.exists():
            return []
        shutil.rmtree(raw)
        return [str(raw)]
    if kind == "move_sample":
        src, dst = root / e[1] / e[2], root / e[3] / (e[4] + "m")
        if not src.exists() or dst.exists() or not dst.parent.exists():
            return []
        os.rename(src, dst)
        return [str(src), str(dst)]
    if kind in ("break", "fix"):
        folder = root / e[1] / e[2] if e[1] else root
        cfile = folder / "_container.json"
        if not cfile.exists():
            return []
        if kind == "break":
            cfile.write_text('{"metadata": {"broken": ')
        else:
            cfile.write_text(json.dumps({"metadata": {"fixed": True}}))
        return [str(cfile)]
    if kind == "break_scripts":
        folder = root / e[1]
        if not folder.is_dir():
            return []
        (folder / "_scripts.json").write_text('[{"script": 5}]')
        return [str(folder / "_scripts.json")]
    if kind == "scripts":  # rewrite (in place when it exists) with a valid association
        folder = root / e[1]
        if not (folder / "_container.json").exists():
            return []
        (folder / "_scripts.json").write_text(json.dumps([{"script": f"s{e[2]}.py"}]))
        return [str(folder / "_scripts.json")]
    if kind == "both_files":
        folder = root / e[1] / e[2]
        if not (folder / "_container.json").exists():
            return []
        (folder / "_asset.json").write_text('{"file": "x"}')
        return [str(folder / "_asset.json")]
    if kind == "note":
        folder = root / e[1]
        if not folder.is_dir():
            return []
        note = folder / "_notes" / f"n{e[2]}.txt"
        note.parent.mkdir(exist_ok=True)
        note.write_text(f"note {e[2]}")
        return [str(note)]
    if kind == "unmark_group":
        cfile = root / e[1] / "_container.json"
        if not cfile.exists():
            return []
        cfile.unlink()
        return [str(cfile)]
    if kind in ("sneaky", "touch"):
        afile = root / e[1] / e[2] / "raw" / "_asset.json"
        if not afile.exists():
            return []
        st_ = afile.stat()
        if kind == "touch":
            os.utime(afile)
            return [str(afile)]
        text = afile.read_text()
        swapped = text.replace('"raw"', '"rax"') if '"raw"' in text else text.replace('"rax"', '"raw"')
        afile.write_text(swapped)
        os.utime(afile, ns=(st_.st_atime_ns, st_.st_mtime_ns))
        return [str(afile)]
    if kind == "plain":
        folder = root / e[1] / "scratch"
        if not (root / e[1]).is_dir() or folder.exists():
            return []
        folder.mkdir()
        (folder / "notes.txt").write_text("not an object")
        return [str(folder)]
    if kind == "plain_to_asset":
        folder = root / e[1] / "scratch"
        if not folder.is_dir() or (folder / "_asset.json").exists():
            return []
        (folder / "_asset.json").write_text('{"type": "raw", "file": "notes.txt"}')
        return [str(folder / "_asset.json")]
    raise AssertionError(e)


def base_tree(root: Path) -> None:
    spec: dict[str, Any] = {"_container.json": {"metadata": {"top": 0, "m": 0}}}
    for g in GROUPS[:2]:
        spec[g] = {"_container.json": {"type": "group", "metadata": {g: 1}},
                   "_scripts.json": [{"script": "s9.py", "autorun": False}]}
        for s in SAMPLES[:2]:
            spec[g][s] = {
                "_container.json": {"type": "sample"},
                "raw": {"_asset.json": {"type": "raw", "file": "data.csv"}, "data.csv": "0\n"},
            }
    make_tree(root, spec)


