"""Where a JSON path is in a file's text: the line and column a schema error points at.

The validator names a bad field by its path (``("scripts", 1, "priority")``); a person
fixing the file wants the line. :func:`position` walks the text along that path only,
skipping every other value with the ``json`` module's own scanner, so the answer is found in
one pass without a second parser. Stdlib only: loaded just when an error is being worded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

__all__ = ["position"]

_DECODER = json.JSONDecoder()
_SPACE = " \t\n\r"


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in _SPACE:
        i += 1
    return i


def _member(text: str, i: int, want: str) -> tuple[int, int] | None:
    """In the object starting at ``text[i] == "{"``: (where key ``want`` starts, where its
    value starts) for its last occurrence (the one a JSON reader keeps), or None."""
    found = None
    i = _skip_space(text, i + 1)
    while i < len(text) and text[i] == '"':
        key, end = _DECODER.raw_decode(text, i)
        value = _skip_space(text, _skip_space(text, end) + 1)  # past the ':'
        if key == want:
            found = (i, value)
        _, end = _DECODER.raw_decode(text, value)
        i = _skip_space(text, end)
        if i < len(text) and text[i] == ",":
            i = _skip_space(text, i + 1)
    return found


def _item(text: str, i: int, want: int) -> int | None:
    """In the array starting at ``text[i] == "["``: where item ``want`` starts, or None."""
    i = _skip_space(text, i + 1)
    n = 0
    while i < len(text) and text[i] != "]":
        if n == want:
            return i
        _, end = _DECODER.raw_decode(text, i)
        i = _skip_space(text, end)
        if i < len(text) and text[i] == ",":
            i = _skip_space(text, i + 1)
        n += 1
    return None


def _offset(text: str, loc: Sequence[int | str]) -> int:
    """The offset of the deepest part of ``loc`` found in ``text``: a field's key, an
    item's value; a part that is not there (a missing field) stops at its object."""
    at = value = _skip_space(text, 0)
    for part in loc:
        if value >= len(text):
            break
        if isinstance(part, str) and text[value] == "{":
            found = _member(text, value, part)
            if found is None:
                break
            at, value = found
        elif isinstance(part, int) and text[value] == "[":
            item = _item(text, value, part)
            if item is None:
                break
            at = value = item
        else:  # a validator's own step (a union's branch name): the value is the place
            continue
    return at


def position(data: bytes | str, loc: Sequence[int | str]) -> tuple[int, int] | None:
    """Line and column (both from 1, as ``json`` reports syntax errors) of the JSON path
    ``loc`` in ``data``; None when ``data`` is not JSON text this can read."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        offset = _offset(text, loc)
    except (ValueError, RecursionError):
        return None
    line = text.count("\n", 0, offset) + 1
    return line, offset - text.rfind("\n", 0, offset)
