"""What object files are called and how their problems are told: shared by the strict reader
(:mod:`thotd.project.objectfile`) and the models (:mod:`thotd.project.model`), so that neither
imports the other for its vocabulary."""

from __future__ import annotations

import re
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

    def __hash__(self) -> int:  # type: ignore[override]  # Slotted says unhashable; this is not
        return hash(self._values())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[type[ObjectError], tuple[Any, ...]]:
        return (self.__class__, self._values())  # pickle/copy without __setattr__

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


#: How deep an object file's JSON may nest. The models' JSON parser (pydantic-core) refuses
#: about 200 levels anyway, and the standard library's parser recurses once per level on the
#: caller's stack (200,000 ``[`` raised ``RecursionError``: a crash at start, a batch
#: silently dropped). Object files describe data in a few levels; 200 leaves room and makes
#: both readers give the same answer.
MAX_DEPTH = 200

#: A string (brackets in it do not count), a lone quote (a string never closed: everything
#: after it is inside it) or a bracket.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*+"|"|[\[\]{}]')


def check_depth(data: bytes, path: str) -> None:
    """Raise :class:`ObjectFileError` when ``data`` nests deeper than :data:`MAX_DEPTH`,
    before any parser recurses into it. Costs two byte counts for a usual file; brackets
    inside strings do not count, and one pass over the bytes finds the depth."""
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return
    depth = 0
    for token in _TOKENS.finditer(data):
        ch = token.group()
        if ch in (b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH:
                at = token.start()
                line = data.count(b"\n", 0, at) + 1
                column = at - (data.rfind(b"\n", 0, at) + 1) + 1
                raise ObjectFileError([ObjectError(
                    path, None, f"invalid JSON: nested deeper than {MAX_DEPTH} levels",
                    line, column)])
        elif ch in (b"]", b"}"):
            depth -= 1
        elif ch == b'"':
            return  # never closed: the parser stops there, no deeper than counted so far
