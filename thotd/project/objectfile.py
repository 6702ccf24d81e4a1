"""Reading object files: the well-formed common case without pydantic, the rest with it.

Importing pydantic and building the models costs ~0.15 s, paid by every ``thot`` command and
every locally run script. Most object files are plainly well-formed, so :func:`load` checks
them with a strict, stdlib-only reader whose result equals the models' output; anything it is
not sure of (a wrong type, lax coercions like ``"priority": "1"``, broken JSON) goes to the
pydantic models in :mod:`thotd.project.model`, which give the error messages. A property test holds
the two to the same answers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from thotd.slotted import Slotted

CONTAINER_FILE = "_container.json"
ASSET_FILE = "_asset.json"
SCRIPTS_FILE = "_scripts.json"
NOTES_DIR = "_notes"
OBJECT_FILES = (CONTAINER_FILE, ASSET_FILE, SCRIPTS_FILE)

#: Top-level keys Thot itself writes or tolerates: not reported as likely typos.
KNOWN_EXTRAS = frozenset(
    {"$schema", "_id", "id", "created", "modified", "roles", "parent", "children", "assets",
     "scripts", "notes", "_notes", "permissions"}
)


class ObjectError(Slotted):
    """Why an object file could not be used: enough to find and fix it.

    Immutable, compared and hashed by its fields (a plain class, not a frozen dataclass:
    ``dataclasses`` costs every ``thot`` command and script ~5 ms to import).
    """

    __slots__ = ("path", "field", "reason", "line", "column")

    path: str  # the object file
    field: str | None  # JSON path such as ``scripts[1].priority``; None for the whole file
    reason: str
    line: int | None
    column: int | None

    def __init__(
        self,
        path: str,
        field: str | None,
        reason: str,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        init = object.__setattr__
        init(self, "path", path)
        init(self, "field", field)
        init(self, "reason", reason)
        init(self, "line", line)
        init(self, "column", column)

    def __hash__(self) -> int:
        return hash(self._values())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[type[ObjectError], tuple[Any, ...]]:
        return (self.__class__, self._key())  # pickle/copy without __setattr__

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}:{self.column}"
        if self.field:
            where += f": {self.field}"
        return f"{where}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.path, "field": self.field, "reason": self.reason,
            "line": self.line, "column": self.column,
        }


class ObjectFileError(Exception):
    """Raised by :func:`parse` with every problem found in one file."""

    def __init__(self, errors: list[ObjectError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


def format_loc(loc: Sequence[int | str]) -> str:
    """``("scripts", 1, "priority")`` -> ``scripts[1].priority``: a JSON path a person can follow."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


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
_COMMON = ("name", "type", "description")
_ASSET_ONLY = ("file", "creator", "creator_type")


def _object(raw: Any, asset: bool) -> dict[str, Any]:
    if not isinstance(raw, dict) or "schema_" in raw:
        raise _Defer("shape")
    for key in (*_COMMON, "$schema", "creator"):
        _opt_str(raw, key)
    tags = raw.get("tags")
    if tags is None:
        tags = []
    elif not (isinstance(tags, list) and all(type(t) is str for t in tags)):
        raise _Defer("tags")
    metadata = raw.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise _Defer("metadata")
    props: dict[str, Any] = {k: raw.get(k) for k in _COMMON}
    props["tags"] = tags
    props["metadata"] = metadata
    known = {*_COMMON, "tags", "metadata", "$schema"}
    if asset:
        file = raw.get("file")
        if not isinstance(file, str) or not file:
            raise _Defer("file")
        creator_type = raw.get("creator_type")
        if creator_type is None:
            creator_type = "user"
        elif not isinstance(creator_type, str):
            raise _Defer("creator_type")
        props["file"] = file
        props["creator"] = raw.get("creator")
        props["creator_type"] = creator_type
        known.update(_ASSET_ONLY)
    for key, value in raw.items():
        if key not in known:
            props[key] = value
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
        raise _Defer("priority")
    autorun = raw.get("autorun")
    if autorun is None:
        autorun = True
    elif type(autorun) is not bool:
        raise _Defer("autorun")
    _opt_str(raw, "schedule")
    item: dict[str, Any] = {"script": script, "priority": float(priority), "autorun": autorun,
                            "schedule": raw.get("schedule")}
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
    """A validated model (or list of them) as the plain dicts the index keeps."""
    if isinstance(parsed, list):
        return [{**item.__dict__, **(item.__pydantic_extra__ or {})} for item in parsed]
    props = {**parsed.__dict__, **(parsed.__pydantic_extra__ or {})}
    props.pop("schema_", None)
    return props


def load(filename: str, data: bytes, path: str = "") -> Any:
    """Validate one object file: plain dicts, or :class:`ObjectFileError` naming the file,
    the JSON path of each bad field and the reason (line and column for broken JSON)."""
    fast = fast_load(filename, data)
    if fast is not None:
        return fast
    from thotd.project import model  # the definition: error messages and every lax case
    return plain(model.parse(filename, data, path))
