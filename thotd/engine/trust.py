"""Whose files may make thotd run code: the ownership check before every run.

thotd runs scripts on its own when files change, as the user who started it. A script, the
``_scripts.json`` that names it, or the configuration that another account can write would
let that account run code as this user: in a shared folder (1777, or writable by a lab
group) another user could drop a ``_scripts.json`` pointing at their own script. So, like
``sshd`` with ``StrictModes`` and ``git`` with ``safe.directory``, a run starts only when
each of these files, and every folder above it, is

- owned by this user or root, and
- not writable by group or others,

unless the user trusts the other account in the configuration (``[trust] allow`` for
everything, ``[[trust.projects]]`` tables per project root). Two things are never a problem:

- a folder with the sticky bit (``/tmp``, a 1777 drop folder) *above* the run's folders:
  others can add files there but cannot replace or rename ours. Not the folder of the
  script or of its ``_scripts.json`` (the run's working folder): what others add there,
  a ``numpy.py`` beside a Python script or a helper an R script sources, would run too;
- a group that is the owner's private group (the "user private group" scheme: the group
  bears only the owner, as its primary group, and lists no other member), so a user with
  ``umask 002`` is not refused for their own files.

Folders are checked up to ``/`` along the path as written and along the resolved path, so a
symlink placed by someone else is caught as well. The daemon's own run check and ``thot
run`` use :func:`check_run`; ``load_config`` uses :func:`check_config_file`, which trusts no
one else (the configuration cannot vouch for itself).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shlex
import stat
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Literal, NamedTuple

#: The ``thot run`` option that skips this check for one run (the lead wires the flag).
OVERRIDE_FLAG = "--trust-anyone"

Kind = Literal["user", "group"]


class TrustEntryError(ValueError):
    """A ``trust`` entry that is not ``user:NAME``/``group:NAME`` or names nobody."""


# Immutable records as NamedTuples, not dataclasses: ``thot run`` loads this module for
# every run, and ``dataclasses`` alone costs it ~5 ms.


class Entry(NamedTuple):
    """One trusted account: ``user:alice`` or ``group:lab`` (names or numeric ids)."""

    kind: Kind
    id: int
    text: str  # as written, for messages

    def __str__(self) -> str:
        return self.text


def parse_entry(text: str) -> Entry:
    """``user:NAME|UID`` or ``group:NAME|GID``; the account must exist on this machine.

    Resolved when the configuration loads, so a typo is a configuration error at once and
    not a silently useless line.
    """
    kind, sep, name = text.partition(":")
    if not sep or kind not in ("user", "group") or not name:
        raise TrustEntryError(
            f"{text!r} is not a trust entry: write \"user:NAME\" or \"group:NAME\" "
            "(a numeric id works too)"
        )
    try:
        if kind == "user":
            ident = int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid
        else:
            ident = int(name) if name.isdigit() else grp.getgrnam(name).gr_gid
    except KeyError:
        raise TrustEntryError(f"{text!r}: no {kind} named {name!r} on this machine") from None
    return Entry("user" if kind == "user" else "group", ident, text)


class TrustPolicy(NamedTuple):
    """Who besides the daemon's user and root may own or write the files of a run.

    ``allow`` applies everywhere, ``projects`` maps a project root (absolute) to the entries
    that apply below it. ``anyone`` turns the check off (the one-run override of ``thot
    run``). ``config_path`` is named in refusals, as the file to add a line to.
    """

    allow: tuple[Entry, ...] = ()
    projects: Mapping[str, tuple[Entry, ...]] = MappingProxyType({})
    anyone: bool = False
    config_path: str | None = None

    @classmethod
    def from_entries(
        cls,
        allow: Iterable[str] = (),
        projects: Mapping[str, Iterable[str]] | None = None,
        *,
        anyone: bool = False,
        config_path: str | os.PathLike[str] | None = None,
    ) -> TrustPolicy:
        """Build from the configuration's strings (``TrustEntryError`` on a bad one)."""
        return cls(
            allow=tuple(parse_entry(e) for e in allow),
            projects={os.path.abspath(root): tuple(parse_entry(e) for e in entries)
                      for root, entries in (projects or {}).items()},
            anyone=anyone,
            config_path=os.fspath(config_path) if config_path is not None else None,
        )

    def entries_for(self, path: str) -> tuple[Entry, ...]:
        """The entries that apply to a file at ``path``: global ones, then its projects'."""
        out = list(self.allow)
        for root, entries in self.projects.items():
            if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
                out.extend(entries)
        return tuple(out)

    def project_of(self, path: str) -> str | None:
        """The deepest configured project root holding ``path``, if any."""
        best = None
        for root in self.projects:
            if (path == root or path.startswith(root.rstrip(os.sep) + os.sep)) and (
                best is None or len(root) > len(best)
            ):
                best = root
        return best


class Refusal(NamedTuple):
    """Why a file may not make thotd run code: which file, its owner and mode, and the way
    out (a config line, or a ``chmod``). ``str()`` is the one-line reason shown as
    *blocked* in status and in ``thot run``."""

    path: str
    role: str  # "script", "_scripts.json", "folder above the script", "config file"...
    owner: str  # "alice (uid 1001)"
    group: str  # "lab (gid 2000)"
    mode: str  # "0664 (-rw-rw-r--)"
    problem: str  # "owned by alice (uid 1001)", "writable by group lab"...
    fix: str

    def __str__(self) -> str:
        return (f"untrusted {self.role} {self.path}: {self.problem} (owner {self.owner}, "
                f"group {self.group}, mode {self.mode}); {self.fix}")


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


class _Judge:
    """Decides, for one set of entries, whether an inode's possible writers are trusted."""

    def __init__(self, entries: tuple[Entry, ...]) -> None:
        self.me = os.geteuid()
        self.users = {self.me, 0} | {e.id for e in entries if e.kind == "user"}
        self.groups = {e.id for e in entries if e.kind == "group"}

    def user_ok(self, uid: int) -> bool:
        """This user, root, a trusted user, or a member of a trusted group."""
        if uid in self.users:
            return True
        if not self.groups:
            return False
        try:
            account = pwd.getpwuid(uid)
        except KeyError:
            return False
        if account.pw_gid in self.groups:
            return True
        return any(account.pw_name in _members(gid) for gid in self.groups)

    def group_ok(self, gid: int, owner: int) -> bool:
        """A trusted group, or the owner's private group."""
        if gid in self.groups:
            return True
        try:
            account = pwd.getpwuid(owner)
        except KeyError:
            return False
        return account.pw_gid == gid and set(_members(gid)) <= {account.pw_name}


def _members(gid: int) -> list[str]:
    try:
        return list(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return []


def _problem(st: os.stat_result, judge: _Judge, is_dir: bool,
             sticky_counts: bool) -> tuple[str, str] | None:
    """(what is wrong, which kind of fix) for one inode, or ``None`` when it is fine."""
    mode = stat.S_IMODE(st.st_mode)
    sticky = sticky_counts and is_dir and bool(mode & stat.S_ISVTX)
    if not judge.user_ok(st.st_uid):
        return f"owned by {_user_name(st.st_uid)} (uid {st.st_uid}), not by you", "user"
    if mode & stat.S_IWOTH and not sticky:
        return "writable by everyone", "others"
    if mode & stat.S_IWGRP and not sticky and not judge.group_ok(st.st_gid, st.st_uid):
        return f"writable by group {_group_name(st.st_gid)}", "group"
    return None


def _chain(path: str) -> list[tuple[str, bool]]:
    """``path`` and every folder above it, as written, then along the resolved path; each
    with whether it is the file or its own folder (where a sticky bit does not help)."""
    seen: dict[str, bool] = {}
    for start in (os.path.abspath(path), os.path.realpath(path)):
        current = start
        near = 2  # the file, then its folder
        while True:
            seen[current] = seen.get(current, False) or near > 0
            near -= 1
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent
    return list(seen.items())


def _fix(kind: str, path: str, st: os.stat_result, is_dir: bool, policy: TrustPolicy | None,
         scope: str | None) -> str:
    """The way out of one problem, as precise as we can say it."""
    if kind != "user" and policy is None:  # the config file: nobody else may write it
        return f"fix: chmod go-w {_quote(path)}"
    if kind == "others":
        extra = " (or chmod +t, for a shared folder above the project)" if is_dir else ""
        return f"fix: chmod o-w {_quote(path)}{extra}"
    if policy is None:
        return "fix: use a config file you own (copy it, then point THOTD_CONFIG or --config at it)"
    if kind == "group":
        entry = f"group:{_group_name(st.st_gid)}"
        other = f"chmod g-w {_quote(path)}"
    else:
        entry = f"user:{_user_name(st.st_uid)}"
        other = "make it yours (a copy you own)"
    where = f" ({policy.config_path})" if policy.config_path else ""
    if scope is not None:
        line = (f'a [[trust.projects]] table with root = {json.dumps(scope)} and '
                f'allow = ["{entry}"]')
    else:
        line = f'allow = ["{entry}"] under [trust]'
    return f"to trust it, add {line} to the config{where}; or {other}"


def _quote(path: str) -> str:
    return shlex.quote(path)


def _check_file(path: str, role: str, entries: tuple[Entry, ...], policy: TrustPolicy | None,
                scope: str | None) -> Refusal | None:
    judge = _Judge(entries)
    for current, near in _chain(path):
        try:
            st = os.lstat(current)
        except OSError:
            continue  # a missing file is the runner's error to report, not a trust question
        if stat.S_ISLNK(st.st_mode):
            continue  # its target is on the resolved path; its folder decides who may swap it
        is_dir = stat.S_ISDIR(st.st_mode)
        found = _problem(st, judge, is_dir, sticky_counts=not near)
        if found is None:
            continue
        problem, kind = found
        what = role if current in (os.path.abspath(path), os.path.realpath(path)) else (
            f"folder above the {role}")
        return Refusal(
            path=current, role=what,
            owner=f"{_user_name(st.st_uid)} (uid {st.st_uid})",
            group=f"{_group_name(st.st_gid)} (gid {st.st_gid})",
            mode=f"{stat.S_IMODE(st.st_mode):04o} ({stat.filemode(st.st_mode)})",
            problem=problem, fix=_fix(kind, current, st, is_dir and not near, policy, scope),
        )
    return None


def check_run(script: str | os.PathLike[str], scripts_file: str | os.PathLike[str],
              policy: TrustPolicy, *, project: str | None = None) -> Refusal | None:
    """Why this run must not start, or ``None`` when its files are trusted.

    ``script`` is the file that would run, ``scripts_file`` the ``_scripts.json`` naming it,
    ``project`` the project root (for the per-project line a refusal suggests; by default
    the configured root that holds ``scripts_file``). Cheap: a few ``lstat`` per folder
    level, no file is opened, so it can run on the daemon's loop before every start.
    """
    if policy.anyone:
        return None
    scripts_file = os.fspath(scripts_file)
    where = os.path.abspath(scripts_file)
    entries = policy.entries_for(where)
    # The line a refusal suggests is scoped to the project (or, unknown, to the container).
    scope = project or policy.project_of(where) or os.path.dirname(where)
    for path, role in ((scripts_file, "_scripts.json"), (os.fspath(script), "script")):
        refusal = _check_file(path, role, entries, policy, scope)
        if refusal is not None:
            return refusal
    return None


def check_config_file(path: str | os.PathLike[str]) -> Refusal | None:
    """Why the configuration file must not be used (``None`` when it is fine).

    It names what to run, so it gets the strict rule with no exceptions from ``[trust]``:
    only this user or root may own or write it and the folders above it.
    """
    return _check_file(os.fspath(path), "config file", (), None, None)
