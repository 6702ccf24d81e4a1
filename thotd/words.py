"""How the commands word what they print: counts with the right plural, names made safe.

One rule each, shared by ``thotd``, ``thotctl`` and the daemon's status line, so "1 project"
and an escaped folder name look the same whichever command prints them. Standard library
only: ``thotctl`` imports it on every call.
"""

from __future__ import annotations

import unicodedata


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 project``, ``2 projects``; ``many`` for words that do not just take an ``s``."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def printable(text: str) -> str:
    """``text`` with control characters escaped as Python would show them (``\\n``, ``\\x1b``).

    A folder name may hold a newline or a terminal escape: printed raw it would forge extra
    lines or repaint the terminal. Only human output goes through here; JSON keeps the name.
    """
    if text.isprintable():  # the usual case, checked in C
        return text
    return "".join(_escape(ch) for ch in text)


def _escape(ch: str) -> str:
    category = unicodedata.category(ch)
    # Surrogates stand for the bytes of a name that is not UTF-8: they go out as those bytes.
    if category == "Cs" or not category.startswith(("C", "Zl", "Zp")):
        return ch
    return repr(ch)[1:-1]
