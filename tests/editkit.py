"""Random edits of a small project on disk, for the property tests of the index and of its
snapshot: each edit is a tuple drawn by :data:`edit`, performed by :func:`apply_edit`."""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Callable
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


def _meta(root: Path, group: str, value: int) -> list[str]:
    folder = root / group if group else root
    new = not folder.exists()
    cfile = _container(folder, {"metadata": {"m": value, group or "top": value}})
    return [str(folder), str(cfile)] if new else [str(cfile)]


def _new_sample(root: Path, group: str, name: str, *, with_raw: bool = True) -> list[str]:
    sample = root / group / name
    if not (root / group / "_container.json").exists() or sample.exists():
        return []
    paths = [str(sample), _container(sample, {"type": "sample", "metadata": {"s": name}})]
    if with_raw:
        raw = sample / "raw"
        raw.mkdir()
        (raw / "_asset.json").write_text('{"type": "raw", "file": "data.csv"}')
        (raw / "data.csv").write_text("1\n")
        paths += [str(raw), str(raw / "_asset.json"), str(raw / "data.csv")]
    return [str(p) for p in paths]


def _delete(root: Path, *parts: str) -> list[str]:
    folder = root.joinpath(*parts)
    if not folder.exists():
        return []
    shutil.rmtree(folder)
    return [str(folder)]


def _move_sample(root: Path, g1: str, s1: str, g2: str, s2: str) -> list[str]:
    src, dst = root / g1 / s1, root / g2 / (s2 + "m")
    if not src.exists() or dst.exists() or not dst.parent.exists():
        return []
    os.rename(src, dst)
    return [str(src), str(dst)]


def _rewrite_container(root: Path, group: str, sample: str, *, text: str) -> list[str]:
    folder = root / group / sample if group else root
    cfile = folder / "_container.json"
    if not cfile.exists():
        return []
    cfile.write_text(text)
    return [str(cfile)]


def _break_scripts(root: Path, group: str) -> list[str]:
    folder = root / group
    if not folder.is_dir():
        return []
    (folder / "_scripts.json").write_text('[{"script": 5}]')
    return [str(folder / "_scripts.json")]


def _scripts(root: Path, group: str, n: int) -> list[str]:
    """Rewrite (in place when it exists) with a valid association."""
    folder = root / group
    if not (folder / "_container.json").exists():
        return []
    (folder / "_scripts.json").write_text(json.dumps([{"script": f"s{n}.py"}]))
    return [str(folder / "_scripts.json")]


def _both_files(root: Path, group: str, sample: str) -> list[str]:
    folder = root / group / sample
    if not (folder / "_container.json").exists():
        return []
    (folder / "_asset.json").write_text('{"file": "x"}')
    return [str(folder / "_asset.json")]


def _note(root: Path, group: str, n: int) -> list[str]:
    folder = root / group
    if not folder.is_dir():
        return []
    note = folder / "_notes" / f"n{n}.txt"
    note.parent.mkdir(exist_ok=True)
    note.write_text(f"note {n}")
    return [str(note)]


def _unmark_group(root: Path, group: str) -> list[str]:
    cfile = root / group / "_container.json"
    if not cfile.exists():
        return []
    cfile.unlink()
    return [str(cfile)]


def _touch(root: Path, group: str, sample: str, *, sneaky: bool) -> list[str]:
    """Touch the raw asset's file, or (``sneaky``) change it keeping its size and mtime."""
    afile = root / group / sample / "raw" / "_asset.json"
    if not afile.exists():
        return []
    st_ = afile.stat()
    if not sneaky:
        os.utime(afile)
        return [str(afile)]
    text = afile.read_text()
    swapped = text.replace('"raw"', '"rax"') if '"raw"' in text else text.replace('"rax"', '"raw"')
    afile.write_text(swapped)
    os.utime(afile, ns=(st_.st_atime_ns, st_.st_mtime_ns))
    return [str(afile)]


def _plain(root: Path, group: str) -> list[str]:
    folder = root / group / "scratch"
    if not (root / group).is_dir() or folder.exists():
        return []
    folder.mkdir()
    (folder / "notes.txt").write_text("not an object")
    return [str(folder)]


def _plain_to_asset(root: Path, group: str) -> list[str]:
    folder = root / group / "scratch"
    if not folder.is_dir() or (folder / "_asset.json").exists():
        return []
    (folder / "_asset.json").write_text('{"type": "raw", "file": "notes.txt"}')
    return [str(folder / "_asset.json")]


#: Each kind of :data:`edit` -> what performs it on ``(root, *the edit's arguments)``.
EDITS: dict[str, Callable[..., list[str]]] = {
    "meta": _meta,
    "new_sample": _new_sample,
    "new_sample_partial": functools.partial(_new_sample, with_raw=False),
    "delete_sample": _delete,
    "delete_asset": lambda root, group, sample: _delete(root, group, sample, "raw"),
    "move_sample": _move_sample,
    "break": functools.partial(_rewrite_container, text='{"metadata": {"broken": '),
    "fix": functools.partial(_rewrite_container, text=json.dumps({"metadata": {"fixed": True}})),
    "break_scripts": _break_scripts,
    "scripts": _scripts,
    "both_files": _both_files,
    "note": _note,
    "unmark_group": _unmark_group,
    "sneaky": functools.partial(_touch, sneaky=True),
    "touch": functools.partial(_touch, sneaky=False),
    "plain": _plain,
    "plain_to_asset": _plain_to_asset,
}


def apply_edit(root: Path, e: tuple[Any, ...]) -> list[str]:
    """Perform one edit on disk; return the paths a watcher would report."""
    if e[0] not in EDITS:
        raise AssertionError(e)
    return EDITS[e[0]](root, *e[1:])


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


