"""Which files the page may serve, and as what.

Only regular files inside a watched project, judged after resolving every symlink and
``..`` (``os.path.realpath``): ``root/../../etc/passwd`` and a link leading out of the
project are both outside. Content types come from a short list by extension, never from
sniffing: images (PNG, JPEG, GIF) inline, text as ``text/plain``, SVG as an attachment
with a sandboxing CSP (an SVG can carry script), everything else as a download.
"""

from __future__ import annotations

import os
import stat

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".gif": "image/gif", ".svg": "image/svg+xml"}
TEXT_TYPES = {".txt", ".csv", ".tsv", ".log", ".json", ".md", ".dat"}
TABLE_TYPES = {".csv": ",", ".tsv": "\t"}


class Refused(Exception):
    """The path is not one the page serves; the message says why."""


def inside(path: str, roots: list[str]) -> str:
    """The real path of ``path`` if it is a regular file inside one of ``roots`` (compared
    real path to real path); :class:`Refused` otherwise."""
    if not os.path.isabs(path) or "\0" in path:
        raise Refused("not an absolute path")
    real = os.path.realpath(path)
    if not any(real == r or real.startswith(r.rstrip(os.sep) + os.sep)
               for r in (os.path.realpath(root) for root in roots)):
        raise Refused("outside the watched projects")
    try:
        st = os.stat(real)
    except OSError:
        raise Refused("no such file") from None
    if not stat.S_ISREG(st.st_mode):
        raise Refused("not a regular file")
    return real


def kind(path: str) -> str:
    """``image``, ``table``, ``text`` or ``file``: how the container page shows it."""
    ext = os.path.splitext(path)[1].lower()
    if ext in IMAGE_TYPES:
        return "image"
    if ext in TABLE_TYPES:
        return "table"
    return "text" if ext in TEXT_TYPES else "file"


def headers(path: str) -> dict[str, str]:
    """Content type and disposition of a served file (see the module docstring)."""
    ext = os.path.splitext(path)[1].lower()
    name = os.path.basename(path).replace('"', "")
    out = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; "
           "style-src 'unsafe-inline'; sandbox", "Cache-Control": "private, max-age=3600"}
    if ext == ".svg":
        out.update({"Content-Type": "image/svg+xml",
                    "Content-Disposition": f'attachment; filename="{name}"'})
    elif ext in IMAGE_TYPES:
        out.update({"Content-Type": IMAGE_TYPES[ext], "Content-Disposition": "inline"})
    elif ext in TEXT_TYPES:
        out.update({"Content-Type": "text/plain; charset=utf-8", "Content-Disposition": "inline"})
    else:
        out.update({"Content-Type": "application/octet-stream",
                    "Content-Disposition": f'attachment; filename="{name}"'})
    return out


def first_rows(path: str, sep: str, rows: int = 8, cap: int = 64 * 1024) -> list[list[str]]:
    """The first ``rows`` lines of a CSV/TSV file (at most ``cap`` bytes read)."""
    import csv
    import io

    with open(path, "rb") as fh:
        head = fh.read(cap).decode("utf-8", errors="replace")
    reader = csv.reader(io.StringIO(head), delimiter=sep)
    out = []
    for row in reader:
        out.append(row[:20])
        if len(out) >= rows:
            break
    return out
