"""The fork server process: preimports once, then forks a child per run.

Started by :meth:`thotd.executor.forkserver.client.ForkServer.start` as ``python -m
thotd.executor.forkserver.server FD`` with the runs' common environment, site enabled so
user scripts see site-packages.  ``FD`` is its end of the socketpair
(:mod:`thotd.executor.forkserver.protocol`).  It reads the ``hello``, preimports
:data:`PREIMPORTS`, resets its signal dispositions to what a fresh interpreter has, and
says ``ready``.  Then, for each ``spawn`` request it either refuses (the caller falls back
to the exec path) or forks a child in a session of its own, replies with its pid (and a
pidfd) and, when the child exits, with its status.  It stays single-threaded (``fork`` in
a threaded process can deadlock the child) and learns about exits through ``SIGCHLD`` ->
``signal.set_wakeup_fd`` -> ``select``.  On EOF it exits; running children are left to the
client, which kills their process groups.

**Refusals**: when the run's environment differs from the server's in a variable the
interpreter reads only at start-up (:func:`~thotd.executor.forkserver.protocol.startup_vars`),
or when the script's directory holds a module that a real run would import instead of one
the server has already loaded (``thot.py``, ``thot/``, ``thotd/``, ``json.py``...).  Falling
back is always correct; forking is an optimisation that must not change what the script
sees.

**The child** returns from :meth:`_Server.serve` with a
:class:`~thotd.executor.forkserver.child.Child`, and the script runs in the ``if __name__ ==
"__main__"`` block at the end of this file: at the top level of the ``__main__`` module,
so that the interpreter's own shutdown follows as after ``python script.py``.

Every module this one loads is in every run's ``sys.modules``: stdlib only, and as little
of it as it can.
"""

from __future__ import annotations

import sys

#: Modules already loaded before this file ran: a real run has them too, loaded at start-up
#: before the script's directory was put on ``sys.path``, so a file beside the script cannot
#: shadow them.  Everything loaded after this point can be (see :func:`_shadows`).
_AT_START = frozenset(sys.modules)

import contextlib  # noqa: E402 -- after _AT_START on purpose
import gc  # noqa: E402
import importlib  # noqa: E402
import importlib.machinery  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import stat  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from typing import Any  # noqa: E402

from thotd.executor.forkserver.child import Child, flush_io, sys_path0  # noqa: E402
from thotd.executor.forkserver.protocol import (  # noqa: E402
    MAX_MSG,
    close_all,
    recv,
    send,
    startup_vars,
)
from thotd.executor.leftovers import write_pgid_file  # noqa: E402
from thotd.executor.processgroup import fork_in_new_session, pidfd_open  # noqa: E402

__all__ = ["PREIMPORTS"]

#: What the server imports once so that no run pays for it: the script library and what it
#: uses.  Nothing here may start a thread or import pydantic (``thotd.project.objectfile`` loads
#: ``thotd.project.model`` only to word an error).
PREIMPORTS: tuple[str, ...] = (
    "thot",
    "thot.thot",
    "thotd.engine.record",
    "thotd.project.objects",
    "thotd.project.search",
    "thotd.service.rpc",
    "thotd.project.objectfile",
    "thotd.project.locate",
)

#: Environments an ``execve`` would reject with E2BIG must not run when forked: one string of
#: 128 KiB (MAX_ARG_STRLEN), or, conservatively, half of ARG_MAX for the whole.
_ARG_STRLEN = 32 * 4096
_ARG_TOTAL = (os.sysconf("SC_ARG_MAX") if "SC_ARG_MAX" in os.sysconf_names else 1 << 21) // 2

#: Limits a request may ask for; ``core`` is always 0 (see ``thotd.executor.trampoline``).
_LIMITS = frozenset({"nofile", "cpu", "fsize"})

#: What the socket raises once the client is gone (closed, or its process ended).
_CLIENT_GONE = (BrokenPipeError, ConnectionResetError, EOFError)



def _fresh_signals() -> None:
    """Give this process the dispositions of an interpreter started by the trampoline.

    The trampoline resets everything to ``SIG_DFL`` before exec, and the interpreter then
    sets ``SIGINT`` to ``default_int_handler`` and ignores ``SIGPIPE`` and ``SIGXFSZ``.  The
    server itself was started by ``Popen`` from a process that may ignore more (``nohup``);
    children inherit what is set here.
    """
    keep = {signal.SIGKILL, signal.SIGSTOP, signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ}
    for signum in signal.valid_signals():
        if signum in keep:
            continue
        with contextlib.suppress(OSError, ValueError):  # real-time signals reserved by libc
            signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _shadows(folder: str, names: frozenset[str], bare_dirs: frozenset[str]) -> set[str]:
    """Which of ``names`` a real run would import from ``folder`` (the script's).

    A module file (``json.py``, ``thot.cpython-311-x86_64-linux-gnu.so``...) or a package
    (a folder with an ``__init__``) always wins, ``sys.path[0]`` being searched first.  A
    folder without ``__init__`` is only a namespace portion, which loses to a real module
    later on ``sys.path`` -- unless the name is not on ``sys.path`` at all (``bare_dirs``:
    e.g. ``thot`` under an editable install, found by a meta path finder that comes last).
    """
    suffixes = sorted(importlib.machinery.all_suffixes(), key=len, reverse=True)
    found: set[str] = set()
    try:
        entries = os.scandir(folder)
    except OSError:
        return found
    with entries:
        for entry in entries:
            name = entry.name
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if name in names and (
                    name in bare_dirs
                    or any(
                        os.path.isfile(os.path.join(folder, name, "__init__" + suffix))
                        for suffix in suffixes
                    )
                ):
                    found.add(name)
                continue
            for suffix in suffixes:
                if name.endswith(suffix):
                    if name[: -len(suffix)] in names:
                        found.add(name[: -len(suffix)])
                    break
    return found


def _bare_dir_shadowable(names: frozenset[str]) -> frozenset[str]:
    """The names a plain folder beside the script would capture (see :func:`_shadows`)."""
    rest = sys.path[1:] if not sys.flags.safe_path else sys.path
    bare = set()
    for name in names:
        try:
            spec = importlib.machinery.PathFinder.find_spec(name, rest)
        except (ImportError, ValueError):
            spec = None
        if spec is None or spec.origin is None:  # not on sys.path, or a namespace there
            bare.add(name)
    return frozenset(bare)


class _Server:
    """The server loop: requests in, children out, exits reported."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock_fd = sock.fileno()
        self.start_env: dict[str, str] = {}
        self.start_vars: dict[str, str] = {}
        self.delta: dict[str, str | None] = {}
        self.shadowable: frozenset[str] = frozenset()
        self.bare_dirs: frozenset[str] = frozenset()
        self.wake_r = -1
        self.wake_w = -1
        self.children: set[int] = set()

    def setup(self) -> bool:
        """Read the hello, preimport, arm SIGCHLD; False when the client is already gone."""
        data, fds, _ = recv(self.sock, MAX_MSG, 0)
        close_all(fds)
        if not data:
            return False
        hello = json.loads(data)
        self.start_env = dict(hello["env"])
        self.start_vars = startup_vars(self.start_env)
        # What this interpreter's own start-up did to the environment (PEP 538 adds
        # LC_CTYPE under the C locale).  A real run's interpreter does the same to the same
        # start-up variables, so children apply the same change to the run's env.
        now = dict(os.environ)
        self.delta = {
            k: now.get(k)
            for k in set(now) | set(self.start_env)
            if now.get(k) != self.start_env.get(k)
        }
        for name in PREIMPORTS:
            importlib.import_module(name)
        loaded = {name.partition(".")[0] for name in sys.modules if name not in _AT_START}
        self.shadowable = frozenset(
            (loaded | {"thot", "thotd"}) - set(sys.builtin_module_names)
        )
        self.bare_dirs = _bare_dir_shadowable(self.shadowable)
        if "threading" in sys.modules and sys.modules["threading"].active_count() != 1:
            raise RuntimeError("thotd.executor.forkserver: a thread was started; forking is unsafe")
        _fresh_signals()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, _on_sigchld)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        # Everything loaded so far is shared with every child; keep the collector from
        # touching (and so copying) those pages in each of them.
        gc.collect()
        gc.freeze()
        send(self.sock, {"ready": os.getpid()})
        return True

    def serve(self) -> Child | None:
        """Serve until EOF (returns None) or, in a forked child, return its
        :class:`~thotd.executor.forkserver.child.Child`."""
        try:
            return self._loop()
        except _CLIENT_GONE:
            return None  # the client is gone: so are we (its runs are its business)

    def _loop(self) -> Child | None:
        while True:
            readable, _, _ = select.select([self.sock_fd, self.wake_r], [], [])
            if self.wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self.wake_r, 512):
                        pass
                self.reap()
            if self.sock_fd in readable:
                data, fds, truncated = recv(self.sock, MAX_MSG, 4)
                if not data and not fds:
                    return None  # the client closed its end: we are done
                child = self.handle(data, fds, truncated)
                if child is not None:
                    return child

    def reap(self) -> None:
        """Collect every exited child and report it."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            send(self.sock, {"pid": pid, "status": status})

    def refusal(self, req: Mapping[str, Any], fds: Sequence[int]) -> str | None:
        """Why this request must take the exec path, or None when a fork is equivalent."""
        return _malformed(req, fds) or _exec_must_judge(req["env"]) or self._differs(
            req["argv"][0], req["cwd"], req["env"]
        )

    def _differs(self, script: str, cwd: str, env: Mapping[str, str]) -> str | None:
        """How a fork of this server would differ from ``python script`` with ``env``."""
        if startup_vars(env) != self.start_vars:
            changed = sorted(
                k for k in set(startup_vars(env)) | set(self.start_vars)
                if env.get(k) != self.start_env.get(k)
            )
            return f"start-up variables differ: {', '.join(changed)}"
        try:
            if not stat.S_ISREG(os.stat(script).st_mode):
                return "script is not a regular file"
            if not os.path.isdir(cwd):
                return "cwd is not a directory"
        except (OSError, ValueError) as exc:
            return f"cannot stat: {exc}"
        if not sys.flags.safe_path:
            shadows = _shadows(sys_path0(script), self.shadowable, self.bare_dirs)
            if shadows:
                return f"script folder shadows {', '.join(sorted(shadows))}"
        return None

    def handle(self, data: bytes, fds: list[int], truncated: bool) -> Child | None:
        """Answer one request; in the forked child, return what it needs to become the run."""
        try:
            req = json.loads(data)
        except ValueError:
            req = None
        rid = req.get("id") if isinstance(req, dict) else None
        if truncated or not isinstance(req, dict):
            reason: str | None = "malformed request"
        else:
            reason = self.refusal(req, fds)
        if reason is not None:
            close_all(fds)
            send(self.sock, {"id": rid, "refused": reason})
            return None
        try:
            pid = fork_in_new_session()
        except OSError as exc:  # EAGAIN/ENOMEM: the exec path may still manage
            close_all(fds)
            send(self.sock, {"id": rid, "refused": f"fork failed: {exc}"})
            return None
        if pid == 0:
            # In the child, in a session of its own: leave the server's objects without
            # closing what they own (fds are swept wholesale in Child.become; a socket
            # object closing "its" number later would close whatever the script has
            # opened there by then).
            self.sock.detach()
            return Child(req, fds[0], self.delta)
        close_all(fds)
        self.children.add(pid)
        # Before the answer: a client killed from here on (kill -9) leaves the file, and
        # the next daemon ends this run by it (thotd.executor.leftovers).
        write_pgid_file(req["env"].get("THOT_RECORD"), pid)
        pidfd = pidfd_open(pid)  # the child is not reaped yet: this is the right process
        try:
            send(self.sock, {"id": rid, "pid": pid}, [pidfd] if pidfd is not None else ())
        finally:
            if pidfd is not None:
                os.close(pidfd)
        return None


def _on_sigchld(signum: int, frame: object) -> None:
    """Nothing to do here: the wakeup fd already woke the loop, which reaps."""


def _malformed(req: Mapping[str, Any], fds: Sequence[int]) -> str | None:
    """What makes ``req`` no spawn request this server can read, if anything."""
    if req.get("op") != "spawn":
        return f"unknown op {req.get('op')!r}"
    argv, cwd, env, limits = req.get("argv"), req.get("cwd"), req.get("env"), req.get("limits")
    if len(fds) != 1:
        return "no log fd"
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        return "bad argv"
    if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        return "bad env"
    if not isinstance(limits, dict) or any(
        k not in _LIMITS or type(v) is not int or v < 0 for k, v in limits.items()
    ):
        return "bad limits"
    if not isinstance(cwd, str) or not os.path.isabs(cwd) or not os.path.isabs(argv[0]):
        return "relative path"
    return None


def _exec_must_judge(env: Mapping[str, str]) -> str | None:
    """Why an exec of ``env`` would fail, if it would: then the exec path must fail it,
    with its own message (``Popen`` for a bad name, ``execve``'s E2BIG for a big one)."""
    if any(not k or "=" in k or "\0" in k or "\0" in v for k, v in env.items()):
        return "env the exec path must judge"
    sizes = [len(os.fsencode(k)) + len(os.fsencode(v)) + 2 for k, v in env.items()]
    if max(sizes, default=0) >= _ARG_STRLEN or sum(sizes) + 8 * len(sizes) >= _ARG_TOTAL:
        return "env too big for an exec"
    return None


def _server_main(fd: int) -> Child | None:
    """Run the server on inherited socket ``fd``; return in a forked child only.

    A client gone at any point -- before the hello, while the server preimports (``thot
    run`` with nothing to run exits within milliseconds), or later -- ends the server
    silently: its stderr is the client's terminal, where a traceback would be stray output
    long after the command returned."""
    sock = socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    server = _Server(sock)
    try:
        if not server.setup():
            return None
    except _CLIENT_GONE:
        return None
    return server.serve()


# --------------------------------------------------------------------------------------
# entry point: the server, and -- after a fork -- the run itself
# --------------------------------------------------------------------------------------

if __name__ == "__main__":
    _child = _server_main(int(sys.argv[1]))
    if _child is not None:
        # From here on this process is the run.  The script executes right here, at the
        # module's top level, so that when it ends the interpreter's own shutdown follows
        # (threads joined, atexit, stdio flushed) exactly as after ``python script.py``.
        _code = _child.become()
        if _code is not None:
            try:
                exec(_code, _child.globals)
            except SystemExit:
                flush_io()  # as _PyRun_SimpleFileObject does before reporting it
                _child.globals = {}  # see Child.leave
                raise  # the interpreter reports it (code, or message + 1) as for a real run
            except BaseException as _exc:  # noqa: BLE001
                _child.exit = _child.uncaught(_exc, _code)
            else:
                _child.finished()
        del _code
        _child.leave()
