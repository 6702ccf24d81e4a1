"""Reading object files: the well-formed common case without pydantic, the rest with it.

Importing pydantic and building the models costs ~0.15 s, paid by every ``thot`` command and
every locally run script. Most object files are plainly well-formed, so :func:`load` checks
them with a strict, stdlib-only reader whose result equals the models' output; anything it is
not sure of (a wrong type, lax coercions like ``"priority": "1"``, broken JSON) goes to the
pydantic models in :mod:`thotd.project.model`, which give the error messages. A property test holds
the two to the same answers.

The properties returned hold the keys the file has, and only those: a search tells a key the
file leaves out from one it sets, as the original Thot did (defaults are the script API's
business, :class:`thotd.project.objects.ThotObject`). ``null`` in ``tags`` or ``metadata``
still reads as empty.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from thotd.project.vocabulary import (
    ASSET_FILE,
    CONTAINER_FILE,
    KNOWN_EXTRAS,
    NOTES_DIR,
    OBJECT_FILES,
    SCRIPTS_FILE,
    ObjectError,
    ObjectFileError,
    check_depth,
    format_loc,
)

__all__ = [  # the vocabulary, re-exported: callers read object files through this module
    "ASSET_FILE", "CONTAINER_FILE", "KNOWN_EXTRAS", "NOTES_DIR", "OBJECT_FILES", "SCRIPTS_FILE",
    "TOLERATED", "ObjectError", "ObjectFileError", "fast_load", "format_loc", "load",
    "load_tolerant", "plain",
]

class _Defer(Exception):
    """The strict reader is not sure: let the models decide."""


def _reject_constant(name: str) -> Any:
    raise _Defer(name)  # NaN / Infinity: the models' JSON parser decides


def _opt_str(obj: dict[str, Any], key: str) -> None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise _Defer(key)


# Built once: json.loads with any keyword builds a new decoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_STRINGS = ("name", "type", "description", "creator", "creator_type", "$schema")


#: Values worth sharing between objects: few distinct ones across a project.
_SHARED_VALUES = ("type", "creator", "creator_type", "file")
#: Shorter strings in metadata and tags are shared too (instrument names, dates, units).
_SHORT = 32


def _interned(mapping: dict[str, Any]) -> dict[str, Any]:
    """``mapping`` with its keys, and its short string values, interned.

    The JSON parser makes a new string for every key of every file: in an index of 30,000
    objects ``"metadata"`` alone was 30,000 strings. Interned, each distinct key and value
    exists once (interned strings are still freed when nothing uses them)."""
    intern = sys.intern
    return {intern(k): intern(v) if type(v) is str and len(v) <= _SHORT else v
            for k, v in mapping.items()}


def _object(raw: Any, asset: bool) -> dict[str, Any]:
    if not isinstance(raw, dict) or "schema_" in raw:
        raise _Defer("shape")
    for key in _STRINGS:
        _opt_str(raw, key)
    intern = sys.intern
    props = {intern(k): v for k, v in raw.items()}
    props.pop("$schema", None)
    for key in _SHARED_VALUES:
        value = props.get(key)
        if type(value) is str:
            props[key] = intern(value)
    if "tags" in raw:
        tags = raw["tags"]
        if tags is None:
            props["tags"] = []
        elif not (isinstance(tags, list) and all(type(t) is str for t in tags)):
            raise _Defer("tags")
        else:
            props["tags"] = [intern(t) if len(t) <= _SHORT else t for t in tags]
    if "metadata" in raw:
        metadata = raw["metadata"]
        if metadata is None:
            props["metadata"] = {}
        elif not isinstance(metadata, dict):
            raise _Defer("metadata")
        else:
            props["metadata"] = _interned(metadata)
    if asset:
        file = raw.get("file")
        if not isinstance(file, str) or not file:
            raise _Defer("file")
    return props


def _association(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _Defer("shape")
    script = raw.get("script")
    if not isinstance(script, str) or not script:
        raise _Defer("script")
    priority = raw.get("priority")
    if priority is None:
        priority = 0
    elif type(priority) not in (int, float):
        raise _Defer("priority")  # as written: 1 stays an int, 1.5 a float
    autorun = raw.get("autorun")
    if autorun is None:
        autorun = True
    elif type(autorun) is not bool:
        raise _Defer("autorun")
    _opt_str(raw, "schedule")
    if raw.get("executor") not in (None, "local", "dask"):
        raise _Defer("executor")
    resources = raw.get("resources")
    if resources is not None and not (isinstance(resources, dict) and all(
            type(v) in (int, float, str) for v in resources.values())):
        raise _Defer("resources")
    item: dict[str, Any] = {"script": script, "priority": priority, "autorun": autorun,
                            "schedule": raw.get("schedule"), "resources": resources,
                            "executor": raw.get("executor")}
    for key, value in raw.items():
        if key not in item:
            item[key] = value
    return item


def fast_load(filename: str, data: bytes) -> Any:
    """The strict reader alone: a props dict (a list of them for ``_scripts.json``), or
    ``None`` when the models must decide."""
    try:
        raw = _DECODER.decode(data.decode("utf-8"))
        if filename == SCRIPTS_FILE:
            if not isinstance(raw, list):
                return None
            return [_association(item) for item in raw]
        return _object(raw, filename == ASSET_FILE)
    except (_Defer, ValueError, RecursionError, OverflowError):
        return None


def plain(parsed: Any) -> Any:
    """A validated model (or list of them) as the plain dicts the index keeps: an object's
    fields the file sets (see the module's docstring), every field of a script entry."""
    if isinstance(parsed, list):
        return [{**item.__dict__, **(item.__pydantic_extra__ or {})} for item in parsed]
    given = parsed.model_fields_set
    props = {k: v for k, v in parsed.__dict__.items() if k in given}
    props.update(parsed.__pydantic_extra__ or {})
    props.pop("schema_", None)
    return props


def load(filename: str, data: bytes, path: str = "") -> Any:
    """Validate one object file: plain dicts, or :class:`ObjectFileError` naming the file,
    the JSON path of each bad field and the reason (line and column for broken JSON)."""
    check_depth(data, path or filename)
    fast = fast_load(filename, data)
    if fast is not None:
        return fast
    from thotd.project import model  # the definition: error messages and every lax case
    return plain(model.parse(filename, data, path))


#: Fields the original Thot never checked: a wrong type there is read as written, with a
#: warning, instead of holding every run that would see the object (docs/decisions.md).
TOLERATED = frozenset({"name", "type", "description", "tags", "creator", "creator_type"})
_TOP = re.compile(r"[^.\[]+")


def load_tolerant(filename: str, data: bytes, path: str = "") -> tuple[Any, list[str]]:
    """:func:`load`, except that wrong types in :data:`TOLERATED` fields of a container or
    asset are kept as written; returns the properties and a warning for each such field.
    Anything else wrong still raises :class:`ObjectFileError`."""
    try:
        return load(filename, data, path), []
    except ObjectFileError as exc:
        tops = {_top(e.field) for e in exc.errors}
        if filename == SCRIPTS_FILE or not tops or not tops <= TOLERATED:
            raise
        raw = json.loads(data)
        rest = {k: v for k, v in raw.items() if k not in tops}
        props = load(filename, json.dumps(rest).encode(), path)
        props.update((k, raw[k]) for k in tops)
        warnings = [f"{e.path}: {e.field}: {e.reason}; kept as written (the original Thot "
                    "accepts it)" for e in exc.errors]
        return props, warnings


def _top(field: str | None) -> str:
    """The top-level key of a JSON path (``tags[0]`` -> ``tags``); empty for the whole file."""
    found = _TOP.match(field or "")
    return found.group(0) if found and field != "(top level)" else ""
