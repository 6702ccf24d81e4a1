"""Probe of the script API and searches, run unchanged under an original Thot and under ours.

Prints one JSON object: what a script can observe. Run with the working folder holding the
project ``proj`` (see ``compatkit.PROJECT``) and no ``THOT_*`` variables set.
"""

import json
import os
import re

try:
    from thot.thot import LocalProject as Project
except ImportError:  # 0.5+: ThotProject only
    from thot.thot import ThotProject as Project

WORK = os.getcwd()
CAUGHT = (ValueError, TypeError, RuntimeError, KeyError, AttributeError, OSError, NameError)
out = {}


def rel(path):
    return os.path.relpath(str(path), WORK)


def probe(key, fn):
    try:
        out[key] = fn()
    except CAUGHT as exc:
        out[key] = {"raises": sorted(c.__name__ for c in CAUGHT if isinstance(exc, c))}
    finally:
        os.chdir(WORK)


def names(objects):
    return sorted(str(o["name"]) for o in objects)


probe("no_container", lambda: Project() and "no error")
probe("dev_mode_on_class", lambda: Project.dev_mode())


def relative_roots():
    a = Project("proj/a")
    b = Project("proj/b")  # relative to where the first was made, not to proj/a
    return [rel(a.root), rel(b.root), rel(os.getcwd())]


probe("relative_roots", relative_roots)
os.environ.pop("THOT_ORIGINAL_DIR", None)

SEARCHES = {
    "int_matches_true": ("containers", {"metadata.flag": 1}),
    "true_matches_int": ("containers", {"metadata.batch": True}),
    "none_is_not_missing": ("assets", {"description": None}),
    "default_not_searched": ("assets", {"tags": []}),
    "sub_document_partial": ("containers", {"metadata": {"batch": 2}}),
    "sub_document_whole": ("containers", {"metadata": {"batch": 2, "lab": "B12"}}),
    "scalar_equality": ("assets", {"type": "raw"}),
    "in_operator": ("assets", {"tags": {"$in": ["x", "y"]}}),
    "in_scalar": ("containers", {"metadata.batch": {"$in": [2, 3]}}),
    "unknown_operator": ("assets", {"tags": {"$foo": 1}}),
    "regex": ("assets", {"name": re.compile("^r")}),
    "regex_on_int": ("containers", {"metadata.batch": re.compile("1")}),
    "callable": ("containers", {"metadata.batch": lambda v: v >= 2}),
    "callable_on_missing": ("assets", {"description": lambda v: True}),
    "list_contained": ("assets", {"tags": ["x"]}),
    "dotted": ("containers", {"metadata.lab": "B12"}),
}


def search(kind, query):
    db = Project("proj")
    found = db.find_containers(query) if kind == "containers" else db.find_assets(query)
    return names(found)


for key, (kind, query) in SEARCHES.items():
    probe("search_" + key, lambda kind=kind, query=query: search(kind, query))


def objects():
    db = Project("proj")
    top = db.find_container({"_id": db.root})
    raw = db.find_asset({"name": "raw-a"})
    group = db.find_container({"name": "a"})
    return {
        "scripts": [[type(s).__name__, rel(s.script), s.priority, type(s.priority).__name__,
                     s.autorun] for s in top.scripts],
        "asset_created": type(raw.created).__name__,
        "asset_roles": raw.roles,
        "asset_creator_type": raw.creator_type,
        "asset_tags": raw.tags,
        "asset_file": rel(raw.file),
        "asset_metadata": raw.metadata,
        "note_created": type(group.notes[0]["created"]).__name__,
        "note": [group.notes[0]["title"], group.notes[0]["content"]],
        "children": [rel(c) for c in sorted(top.children)],
        "name_default": group.name,
    }


probe("objects", objects)


def add_asset():
    os.environ["THOT_SCRIPT_ID"] = os.path.join(WORK, "maker.py")
    db = Project("proj/b")
    props = {"name": "made"}
    first = db.add_asset(props)
    again = db.add_asset({"name": "made", "file": "m.csv"})
    by_file = db.add_asset({"file": "f.csv"})
    literal = {"file": "root:/shared/x.csv"}
    db.add_asset(literal, "linked")
    with open(os.path.join(db.root, "linked", "_asset.json")) as fh:
        written = json.load(fh)["file"]
    try:
        db.add_asset({"file": "y"}, "linked", overwrite=False)
        refused = "no error"
    except RuntimeError:
        refused = "RuntimeError"
    return {
        "paths": [rel(first), rel(again), rel(by_file)],
        "callers_dict": sorted(props),
        "folders": sorted(os.listdir(os.path.join(WORK, "proj", "b"))),
        "root_file_written": written,
        "overwrite_false": refused,
    }


probe("add_asset", add_asset)
print(json.dumps(out, sort_keys=True, default=repr))
