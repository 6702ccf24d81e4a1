"""A run's log, after the script: how the run ended, and the last lines worth showing.

The executor writes a log's first line (what ran, where, when); the last is written here,
once, by :meth:`thotd.engine.staleness.Engine.complete` -- the one place every run of both
runners (the daemon and ``thot run``) passes when it is over. It says how the run ended, how
long it took and what it made, so a log read on its own tells the whole story.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable

__all__ = ["FOOTER", "ending", "tail", "write_footer"]

#: How the footer line starts: like the header (``# thotd run: ...``), told apart from a
#: script's own output.
FOOTER = "# thotd: "

#: Outputs named in the footer; more are counted.
_SHOWN_OUTPUTS = 20


def ending(status: str, exit_code: int | None, seconds: float, outputs: Iterable[str]) -> str:
    """The footer line: ``# thotd: exit 0 (ok) after 0.42 s; outputs: a, b``."""
    how = f"exit {exit_code} ({status})" if exit_code is not None else status
    made = list(outputs)
    shown = ", ".join(made[:_SHOWN_OUTPUTS])
    if len(made) > _SHOWN_OUTPUTS:
        shown += f" and {len(made) - _SHOWN_OUTPUTS} more"
    return f"{FOOTER}{how} after {max(seconds, 0.0):.2f} s; outputs: {shown or 'none'}"


def write_footer(log: str, status: str, exit_code: int | None, seconds: float,
                 outputs: Iterable[str], rel: Callable[[str], str] = str) -> None:
    """Append :func:`ending` to ``log`` on a line of its own (best effort: a log that cannot
    be written is not a reason for the run's record to be lost)."""
    line = ending(status, exit_code, seconds, sorted(rel(o) for o in outputs))
    with contextlib.suppress(OSError), open(log, "a+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        newline = b""
        if size:
            fh.seek(size - 1)
            newline = b"" if fh.read(1) == b"\n" else b"\n"
        fh.write(newline + line.encode(errors="replace") + b"\n")


def tail(log: str | None, lines: int) -> list[str]:
    """The last ``lines`` lines the script wrote (the header and footer left out)."""
    if not log:
        return []
    try:
        with open(log, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - 8192))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    kept = [line for line in text.splitlines() if not line.startswith(("# thotd run: ", FOOTER))]
    return kept[-lines:]
