"""Fork server ("zygote"): Python script runs without paying for interpreter start-up.

Why: a ``.py`` run through the exec path costs 70-90 ms before the script does anything --
the trampoline's own ``python -I -S``, then the script interpreter's ``site`` (~27 ms), then
``from thot import ThotProject`` (~11 ms).  Analyses are often small, and a ``thot run`` over
a big project runs hundreds of them.  The fork server is one long-lived interpreter per
``thot run`` that has done all of that once; each run is a ``fork`` of it that then turns
itself into ``python /abs/script.py``.  Measured on a 2-vCPU VM, a trivial script takes
~11 ms through ``run_sync`` forked against ~50-60 ms exec'd: ~3-4 ms until the script's
first line (fork, then the set-up below), the rest is the interpreter shutdown every run
pays anyway (a fresh interpreter that imported ``thot`` spends longer in it).

Both sides live here; stdlib only, and the server side imports as little as it can (every
module the server loads is in every run's ``sys.modules``).

**Server** (``python -m thotd.executor.forkserver FD``, started by :meth:`ForkServer.start` with the
runs' common environment, site enabled so user scripts see site-packages).  ``FD`` is its end
of a ``SOCK_SEQPACKET`` socketpair (one message = one JSON object; fds travel with
``SCM_RIGHTS``).  It reads a ``hello`` (the exact environment it was started with, so it can
tell what its own start-up changed, e.g. PEP 538's ``LC_CTYPE``), preimports :data:`PREIMPORTS`,
resets its signal dispositions to what a fresh interpreter has, and says ``ready``.  Then, for
each ``spawn`` request (argv, cwd, complete env, limits; the run's log fd attached) it either
refuses (the caller falls back to the exec path) or forks, replies ``{"id", "pid"}`` (with a
pidfd attached where the kernel has them) and, when the child exits, ``{"pid", "status"}``.
It stays single-threaded (``fork`` in a threaded process can deadlock the child) and learns
about exits through ``SIGCHLD`` -> ``signal.set_wakeup_fd`` -> ``select``.  On EOF it exits;
running children are left to the parent, which kills their process groups.

**Child** (the run) mimics ``python /abs/script.py`` where a script can tell: own session,
stdin ``/dev/null``, the log as fds 1 and 2 and nothing else open, the limits, fresh signal
dispositions, cwd, ``os.environ`` (and the C environment), new ``sys.std*`` made the way the
interpreter makes them, ``sys.argv``/``sys.orig_argv``/``sys.path[0]``, a fresh ``__main__``,
the script compiled under its real file name, and the interpreter's exit rules (``SystemExit``,
tracebacks through ``sys.excepthook`` showing only the script's frames, threads joined and
``atexit`` run by the real interpreter shutdown: the child returns from the server loop to this
module's top level and ends there).  Differences that cannot be removed: see :class:`ForkServer`.

**Refusals**: when the run's environment differs from the server's in a variable the
interpreter reads only at start-up (:func:`startup_vars`), or when the script's directory holds
a module that a real run would import instead of one the server has already loaded (``thot.py``,
``thot/``, ``thotd/``, ``json.py``...).  Falling back is always correct; forking is an
optimisation that must not change what the script sees.

**Client**: :class:`ForkServer` (thread-safe: the runner spawns from worker threads) and
:class:`ForkedProcess` (``Popen``-like).
"""

from __future__ import annotations

import sys

#: Modules already loaded before this file ran: a real run has them too, loaded at start-up
#: before the script's directory was put on ``sys.path``, so a file beside the script cannot
#: shadow them.  Everything loaded after this point can be (see :func:`_shadows`).
_AT_START = frozenset(sys.modules)

import builtins  # noqa: E402 -- after _AT_START on purpose
import contextlib  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import importlib.machinery  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402 -- loaded here so that no child loads it
import select  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import stat  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

# The trampoline's own rules for limits (it is importable: nothing runs unless __main__).
from thotd.executor.trampoline import _apply_limit  # noqa: E402

if TYPE_CHECKING:
    import subprocess
    import threading

__all__ = ["PREIMPORTS", "ForkServer", "ForkedProcess", "startup_vars"]

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

#: How long a spawn waits for the server's answer before giving the server up as hung (a
#: fork and its reply take ~1-3 ms).
SPAWN_REPLY_S = 10.0

#: Largest request the server accepts; the environment dominates it.  A bigger one cannot be
#: sent (``EMSGSIZE``) and the run takes the exec path.
_MAX_MSG = 1 << 20

#: Environments an ``execve`` would reject with E2BIG must not run when forked: one string of
#: 128 KiB (MAX_ARG_STRLEN), or, conservatively, half of ARG_MAX for the whole.
_ARG_STRLEN = 32 * 4096
_ARG_TOTAL = (os.sysconf("SC_ARG_MAX") if "SC_ARG_MAX" in os.sysconf_names else 1 << 21) // 2

#: Limits a request may ask for; ``core`` is always 0 (see ``thotd.executor.trampoline``).
_LIMITS = frozenset({"nofile", "cpu", "fsize"})

#: What ``ForkedProcess.returncode`` is when the server died before reporting the exit.
LOST_RETURNCODE = 255

_PROGRAM = sys.orig_argv[0] if sys.orig_argv else sys.executable


def startup_vars(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``env`` that the interpreter reads only while starting up.

    A forked run inherits the server's start-up, so these must be equal in the run's
    environment and the server's: ``PYTHON*`` (hash seed, path, flags, I/O encoding...),
    the locale (``LC_*``, ``LANG``, ``LANGUAGE``: LC_CTYPE is set from them at start and
    stdio encodings follow), and ``HOME`` (``site`` puts the user site-packages on
    ``sys.path`` from it).  ``PYTHONUNBUFFERED`` is the exception: it only decides how the
    standard streams are made, and the child makes them itself from the run's value.
    """
    return {
        k: v
        for k, v in env.items()
        if (k.startswith(("PYTHON", "LC_")) or k in ("LANG", "LANGUAGE", "HOME"))
        and k != "PYTHONUNBUFFERED"
    }


# --------------------------------------------------------------------------------------
# messages
# --------------------------------------------------------------------------------------


def _send(sock: socket.socket, obj: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
    """Send one JSON message (one SEQPACKET record), with ``fds`` attached."""
    data = json.dumps(obj, separators=(",", ":")).encode()
    if fds:
        anc = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, anc)])
    else:
        sock.send(data)


def _recv(sock: socket.socket, bufsize: int, maxfds: int) -> tuple[bytes, list[int], bool]:
    """Receive one message: ``(data, fds, truncated)``; ``data == b""`` means EOF.

    Received fds are close-on-exec from the start (``MSG_CMSG_CLOEXEC``): the client's
    process has threads that spawn programs, and an fd inherited by one of them would keep
    a log or a pidfd open in a stranger.
    """
    data, anc, flags, _ = sock.recvmsg(
        bufsize, socket.CMSG_SPACE(maxfds * 4), socket.MSG_CMSG_CLOEXEC
    )
    fds: list[int] = []
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(
                int.from_bytes(payload[i : i + 4], sys.byteorder, signed=True)
                for i in range(0, usable, 4)
            )
    truncated = bool(flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC))
    return data, fds, truncated


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# --------------------------------------------------------------------------------------
# server
# --------------------------------------------------------------------------------------


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


def _sys_path0(script: str) -> str:
    """``sys.path[0]`` for ``python script``: the directory of the script's real path.

    CPython (``_PyPathConfig_ComputeSysPath0``) follows a symlinked script to where it
    really lives (readlink, then ``realpath``), so helpers beside the target are found.
    """
    try:
        real = os.path.realpath(script, strict=True)
    except OSError:
        real = script
    return os.path.dirname(real)


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
        data, fds, _ = _recv(self.sock, _MAX_MSG, 0)
        _close_all(fds)
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
        _send(self.sock, {"ready": os.getpid()})
        return True

    def serve(self) -> _Child | None:
        """Serve until EOF (returns None) or, in a forked child, return its :class:`_Child`."""
        try:
            return self._loop()
        except (BrokenPipeError, ConnectionResetError):
            return None  # the client is gone: so are we (its runs are its business)

    def _loop(self) -> _Child | None:
        while True:
            readable, _, _ = select.select([self.sock, self.wake_r], [], [])
            if self.wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self.wake_r, 512):
                        pass
                self.reap()
            if self.sock in readable:
                data, fds, truncated = _recv(self.sock, _MAX_MSG, 4)
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
            _send(self.sock, {"pid": pid, "status": status})

    def refusal(self, req: Mapping[str, Any], fds: Sequence[int]) -> str | None:
        """Why this request must take the exec path, or None when a fork is equivalent."""
        if req.get("op") != "spawn":
            return f"unknown op {req.get('op')!r}"
        argv, cwd, env, limits = req.get("argv"), req.get("cwd"), req.get("env"), req.get("limits")
        if len(fds) != 1:
            return "no log fd"
        if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
            return "bad argv"
        if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
            return "bad env"
        if any(not k or "=" in k or "\0" in k or "\0" in v for k, v in env.items()):
            return "env the exec path must judge"  # Popen rejects it with the right message
        sizes = [len(os.fsencode(k)) + len(os.fsencode(v)) + 2 for k, v in env.items()]
        if max(sizes, default=0) >= _ARG_STRLEN or sum(sizes) + 8 * len(sizes) >= _ARG_TOTAL:
            return "env too big for an exec"  # execve fails (E2BIG): let it, on that path
        if not isinstance(limits, dict) or any(
            k not in _LIMITS or type(v) is not int or v < 0 for k, v in limits.items()
        ):
            return "bad limits"
        script = argv[0]
        if not isinstance(cwd, str) or not os.path.isabs(cwd) or not os.path.isabs(script):
            return "relative path"
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
            shadows = _shadows(_sys_path0(script), self.shadowable, self.bare_dirs)
            if shadows:
                return f"script folder shadows {', '.join(sorted(shadows))}"
        return None

    def handle(self, data: bytes, fds: list[int], truncated: bool) -> _Child | None:
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
            _close_all(fds)
            _send(self.sock, {"id": rid, "refused": reason})
            return None
        sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = os.fork()
        except OSError as exc:  # EAGAIN/ENOMEM: the exec path may still manage
            _close_all([sync_r, sync_w, *fds])
            _send(self.sock, {"id": rid, "refused": f"fork failed: {exc}"})
            return None
        if pid == 0:
            # In the child: leave the server's objects without closing what they own (fds
            # are swept wholesale in _Child.become; a socket object closing "its" number
            # later would close whatever the script has opened there by then).
            self.sock.detach()
            os.setsid()
            os.write(sync_w, b"\0")  # our group exists: the parent may now killpg it
            return _Child(req, fds[0], self.delta)
        os.close(sync_w)
        _close_all(fds)
        os.read(sync_r, 1)  # EOF too if the child died first; either way setsid is past
        os.close(sync_r)
        self.children.add(pid)
        pidfd = _pidfd_open(pid)  # the child is not reaped yet: this is the right process
        try:
            _send(self.sock, {"id": rid, "pid": pid}, [pidfd] if pidfd is not None else ())
        finally:
            if pidfd is not None:
                os.close(pidfd)
        return None


def _on_sigchld(signum: int, frame: object) -> None:
    """Nothing to do here: the wakeup fd already woke the loop, which reaps."""


def _pidfd_open(pid: int) -> int | None:
    """A pidfd for ``pid`` (Linux >= 5.3), or None."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        fd: int = opener(pid)
    except OSError:
        return None
    os.set_inheritable(fd, False)
    return fd


# --------------------------------------------------------------------------------------
# child
# --------------------------------------------------------------------------------------


def _close_fds_above_2() -> None:
    """Close every fd but 0, 1 and 2, as ``Popen(close_fds=True)`` leaves a new process."""
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: close them all, the slow way
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        os.closerange(3, limit if limit != resource.RLIM_INFINITY else 1 << 20)
        return
    for fd in fds:
        if fd > 2:
            with contextlib.suppress(OSError):  # the listing's own fd, closed already
                os.close(fd)


def _make_stdio(fd: int, write: bool, name: str, encoding: str, errors: str, buffered: bool) -> io.TextIOWrapper:
    """One standard stream, built like CPython's ``create_stdio`` (pylifecycle.c)."""
    buffering = 0 if (write and not buffered) else -1
    buf = io.open(fd, "wb" if write else "rb", buffering, None, None, None, False)  # noqa: UP020, SIM115
    raw = buf.raw if buffering else buf  # type: ignore[union-attr]
    raw.name = name
    line_buffering = buffered and (raw.isatty() or fd == 2)
    stream = io.TextIOWrapper(buf, encoding, errors, "\n", line_buffering, not buffered)  # type: ignore[arg-type]
    stream.mode = "w" if write else "r"  # type: ignore[misc]
    return stream


def _stdio_config() -> tuple[str, str]:
    """The interpreter's stdio encoding and errors handler (stderr's is always backslashreplace)."""
    for stream in (sys.__stdout__, sys.__stdin__):
        if stream is not None:
            return stream.encoding, stream.errors or "strict"
    return sys.getfilesystemencoding(), "strict"


_STDIO = _stdio_config()


def _replace_environ(env: Mapping[str, str]) -> None:
    """Make ``os.environ`` and the C ``environ`` (what ``getenv`` in C libraries and
    programs the script starts see) exactly ``env``, in ``env``'s order, as an exec would."""
    environ = os.environ
    data = environ._data  # type: ignore[attr-defined]  # encoded key -> encoded value
    for key in list(data):
        os.unsetenv(key)
    data.clear()
    for key, value in env.items():
        os.putenv(key, value)  # appends: the C order is the order given, as after exec
        data[environ.encodekey(key)] = environ.encodevalue(value)  # type: ignore[attr-defined]


def _flush_io() -> None:
    """CPython's ``flush_io``: stderr then stdout, errors ignored."""
    for name in ("stderr", "stdout"):
        stream = getattr(sys, name, None)
        if stream is None:
            continue
        with contextlib.suppress(Exception):  # the interpreter ignores them too
            stream.flush()


class _Child:
    """The forked child, becoming ``python script`` step by step."""

    def __init__(self, req: Mapping[str, Any], log_fd: int, delta: Mapping[str, str | None]) -> None:
        self.argv: list[str] = list(req["argv"])
        self.script = self.argv[0]
        self.cwd: str = req["cwd"]
        self.env: dict[str, str] = dict(req["env"])
        self.limits: dict[str, int] = dict(req["limits"])
        self.log_fd = log_fd
        self.delta = delta
        self.globals: dict[str, Any] = {}
        #: How the process is to end once the script is over: None (normally), an exit
        #: code for ``sys.exit``, or :data:`_BY_SIGINT`.
        self.exit: object = None

    def become(self) -> types.CodeType | None:
        """Turn this process into the run; return the script's code (None: see :meth:`leave`)."""
        try:
            self._process()
        except BaseException as exc:  # noqa: BLE001 -- nothing can be reported but this
            try:
                os.write(2, f"# thotd: fork server: cannot start the script: {exc!r}\n".encode())
            finally:
                os._exit(127)
        self._interpreter()
        try:
            with open(self.script, "rb") as fh:
                source = fh.read()
        except OSError as exc:
            sys.stderr.write(
                f"{_PROGRAM}: can't open file {self.script!r}: [Errno {exc.errno}] {exc.strerror}\n"
            )
            self.exit = 2
            return None
        try:
            # dont_inherit: this module's ``from __future__`` must not leak into the script.
            return compile(source, self.script, "exec", dont_inherit=True)
        except Exception as exc:  # noqa: BLE001 -- SyntaxError, ValueError, MemoryError
            self.exit = self.uncaught(exc, None)
            return None

    def _process(self) -> None:
        """The OS side: signals, fds, limits, cwd (``setsid`` happened right after fork)."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        null = os.open(os.devnull, os.O_RDWR)  # what Popen(stdin=DEVNULL) opens
        os.dup2(null, 0)
        os.dup2(self.log_fd, 1)
        os.dup2(1, 2)
        _close_fds_above_2()
        _apply_limit("core", 0)
        for name in ("nofile", "cpu", "fsize"):
            if name in self.limits:
                _apply_limit(name, self.limits[name])
        os.chdir(self.cwd)

    def _interpreter(self) -> None:
        """The interpreter side: environ, stdio, sys attributes, ``__main__``."""
        env = dict(self.env)
        for k, v in self.delta.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        _replace_environ(env)
        time_mod = sys.modules.get("time")
        if time_mod is not None:
            time_mod.tzset()  # time.timezone & co. as a fresh import would compute them

        encoding, errors = _STDIO
        buffered = not env.get("PYTHONUNBUFFERED")
        sys.stdin = sys.__stdin__ = _make_stdio(0, False, "<stdin>", encoding, errors, buffered)
        sys.stdout = sys.__stdout__ = _make_stdio(1, True, "<stdout>", encoding, errors, buffered)
        sys.stderr = sys.__stderr__ = _make_stdio(
            2, True, "<stderr>", encoding, "backslashreplace", buffered
        )

        sys.argv = list(self.argv)
        sys.orig_argv = [_PROGRAM, *self.argv]
        if not sys.flags.safe_path:
            sys.path[0] = _sys_path0(self.script)
        importlib.invalidate_caches()
        random_mod = sys.modules.get("random")
        if random_mod is not None:
            random_mod.seed()  # also done by random's at-fork hook; cheap insurance

        main = types.ModuleType("__main__")
        g = main.__dict__
        g["__annotations__"] = {}
        g["__builtins__"] = builtins
        g["__file__"] = self.script
        g["__cached__"] = None
        g["__loader__"] = importlib.machinery.SourceFileLoader("__main__", self.script)
        sys.modules["__main__"] = main
        self.globals = g

    def finished(self) -> None:
        """The script returned: what CPython does before shutting down."""
        _flush_io()
        self._forget_file()

    def _forget_file(self) -> None:
        # _PyRun_SimpleFileObject removes the __file__/__cached__ it set, once the script
        # has run (atexit handlers see them gone); not when SystemExit ended the run.
        self.globals.pop("__file__", None)
        self.globals.pop("__cached__", None)

    def uncaught(self, exc: BaseException, code: types.CodeType | None) -> object:
        """Report an exception that ended the script, as ``PyErr_Print`` does; return how
        the process is to end (see :attr:`exit`).

        The traceback starts at the script's own module frame (the server's frames below it
        are cut).
        """
        _flush_io()
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code is not code:
            tb = tb.tb_next
        exc.__traceback__ = tb
        sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, tb
        if sys.version_info >= (3, 12):
            sys.last_exc = exc
        hook = getattr(sys, "excepthook", None)
        sys.audit("sys.excepthook", hook, type(exc), exc, tb)
        if hook is None:
            sys.stderr.write("sys.excepthook is missing\n")
            sys.__excepthook__(type(exc), exc, tb)
        else:
            try:
                hook(type(exc), exc, tb)
            except SystemExit as hook_exit:
                return hook_exit.code  # handle_system_exit: exit at once with its code
            except BaseException as exc2:  # noqa: BLE001
                tb2 = exc2.__traceback__.tb_next if exc2.__traceback__ is not None else None
                _flush_io()
                sys.stderr.write("Error in sys.excepthook:\n")
                sys.__excepthook__(type(exc2), exc2, tb2)
                sys.stderr.write("\nOriginal exception was:\n")
                sys.__excepthook__(type(exc), exc, tb)
        self._forget_file()
        if type(exc) is not KeyboardInterrupt:
            return 1
        # CPython shuts down, then dies of SIGINT so a calling shell knows (bpo-1054041).
        # The interpreter does exactly that for a KeyboardInterrupt escaping ``-m``; it is
        # re-raised for it in leave(), and this hook keeps the report from repeating.
        original = sys.excepthook

        def already_reported(*_args: object) -> None:
            sys.excepthook = original
            sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, tb

        sys.excepthook = already_reported
        return _BY_SIGINT

    def leave(self) -> None:
        """End the process the way the script ended; return for a normal end.

        The script's namespace is let go first: this module's globals are frozen
        (``gc.freeze``) and live to the end, and the interpreter's shutdown must find the
        script's objects unreferenced, as it does after ``python script.py`` (``__del__``
        methods run, unclosed files are flushed).
        """
        self.globals = {}
        how, self.exit = self.exit, None
        if how is _BY_SIGINT:
            raise KeyboardInterrupt
        if how is not None:
            sys.exit(how)


#: See :meth:`_Child.uncaught`.
_BY_SIGINT = object()


def _server_main(fd: int) -> _Child | None:
    """Run the server on inherited socket ``fd``; return in a forked child only."""
    sock = socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    server = _Server(sock)
    if not server.setup():
        return None
    return server.serve()


# --------------------------------------------------------------------------------------
# client
# --------------------------------------------------------------------------------------


class ForkedProcess:
    """A run forked by the server; ``Popen``-like (``pid``, ``returncode``, ``poll``, ``wait``).

    ``returncode`` follows ``Popen``: the exit code, or ``-N`` after death by signal ``N``.
    The exit status comes from the server (the run is its child, not ours).  If the server
    dies first, the pid is watched through a pidfd (or ``/proc``) and, once it is gone,
    ``returncode`` is :data:`LOST_RETURNCODE` and ``lost`` says why.
    """

    def __init__(self, pid: int, args: Sequence[str], pidfd: int | None) -> None:
        import threading

        self.pid = pid
        self.args = list(args)
        self.returncode: int | None = None
        self.lost: str | None = None
        self._pidfd = pidfd
        self._event = threading.Event()
        self._orphaned = False

    def __repr__(self) -> str:
        return f"<ForkedProcess pid={self.pid} returncode={self.returncode}>"

    def _set_status(self, status: int) -> None:
        """The server reported the exit (reader thread)."""
        try:
            code = os.waitstatus_to_exitcode(status)
        except ValueError:
            code = LOST_RETURNCODE
        self.returncode = code
        self._close_pidfd()
        self._event.set()

    def _orphan(self) -> None:
        """The server is gone without reporting this pid: waits watch the pid themselves."""
        self._orphaned = True
        self._event.set()

    def _close_pidfd(self) -> None:
        fd, self._pidfd = self._pidfd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:
        self._close_pidfd()

    def _gone(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` for the orphaned pid to end; True once it has."""
        fd = self._pidfd
        if fd is not None:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            ms = None if timeout is None else max(int(timeout * 1000), 0)
            try:
                events = poller.poll(ms)
            except OSError:
                events = [(fd, select.POLLNVAL)]
            return bool(events)
        end = None if timeout is None else time.monotonic() + timeout
        while True:  # no pidfd: poll /proc (the pid is not ours to wait for)
            if not _pid_running(self.pid):
                return True
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return False
            time.sleep(0.05 if left is None else min(0.05, left))

    def _lose(self) -> None:
        if self.returncode is None:
            self.lost = (
                "exit status unknown: the fork server died while the script ran "
                f"(pid {self.pid} has ended)"
            )
            self.returncode = LOST_RETURNCODE

    def poll(self) -> int | None:
        """The return code if the run has ended, else None (never blocks)."""
        if self.returncode is None and self._orphaned and self._gone(0):
            self._lose()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the run to end; ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
        import subprocess

        end = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if end is None else end - time.monotonic()
            if self._orphaned:
                if self._gone(left):
                    self._lose()
                    break
                raise subprocess.TimeoutExpired(self.args, timeout)  # type: ignore[arg-type]
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)  # type: ignore[arg-type]
            self._event.wait(left)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the run's main process, unless it is known to have ended."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _pid_running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (``/proc``; ``kill(0)`` elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = data[data.rfind(b")") + 2 :].split()
    return bool(fields) and fields[0] not in (b"Z", b"X")


class _Slot:
    """One spawn request waiting for its reply."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event
        self.result: ForkedProcess | None = None
        self.refused: str | None = None
        self.abandoned = False


class ForkServer:
    """Client of one fork server process.

    Use :meth:`start`; :meth:`spawn` returns None whenever the run must take the exec path
    (not ready yet, refused, server gone), so callers always have a fallback.  Safe to use
    from several threads: one reader thread dispatches the server's replies to the waiting
    spawns and exit statuses to the :class:`ForkedProcess` objects.

    A forked run is ``python script.py`` as far as ordinary scripts can tell.  What differs
    and cannot be helped: the hash seed (``PYTHONHASHSEED`` unset means one random seed per
    server, not per run: string hashes and set order repeat across runs); ``sys.modules``
    holds what the server preimported; ``os.getppid()`` is the server;
    ``/proc/PID/cmdline`` and ``/proc/PID/environ`` of the script's own process show the
    server's command line and start environment (``os.environ`` and children the script
    starts are right); three frames (runpy's two and this module's) sit below the script's
    module frame (``traceback.print_stack()``, ``sys._getframe(n)``); CPU time before the
    script starts is not counted against ``cpu``.
    """

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._ready = threading.Event()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._pending: dict[int, _Slot] = {}
        self._procs: dict[int, ForkedProcess] = {}
        self._next_id = 0
        self._dead = False
        self._closed = False
        self.server_pid: int | None = None
        self.env: dict[str, str] = {}
        #: Spawns forked, and spawns sent but refused (diagnostics: how often the fast
        #: path is taken, and the server's last reason for declining).
        self.forked = 0
        self.refused = 0
        self.last_refusal: str | None = None

    @classmethod
    def start(cls, env: Mapping[str, str]) -> ForkServer:
        """Spawn a server with environment ``env`` and return at once (it gets ready later).

        ``env`` should be what every run's environment has in common, e.g. the runner's
        base script environment (``script_env(os.environ, {})``): runs whose start-up
        variables (:func:`startup_vars`) differ from it are refused, everything else may
        differ per run.  Never raises: a server that cannot start is a server that is
        never ready (and every spawn takes the exec path).
        """
        import atexit
        import subprocess
        import threading

        server = cls()
        server.env = dict(env)
        try:
            parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError:
            server._mark_dead()
            return server
        try:
            with contextlib.suppress(OSError):
                parent.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _MAX_MSG)
            # cwd: -m puts it on the server's sys.path, so the server imports this very
            # thotd (and thot) whether or not it is installed; each child replaces the
            # entry with its script's folder.
            server._proc = subprocess.Popen(
                [sys.executable, "-m", "thotd.executor.forkserver", str(child.fileno())],
                env=server.env,
                cwd=_PACKAGE_PARENT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(child.fileno(),),
                start_new_session=True,  # a terminal's Ctrl-C must not reach it
            )
            server.server_pid = server._proc.pid
            _send(parent, {"op": "hello", "env": server.env})
        except (OSError, ValueError, subprocess.SubprocessError):
            parent.close()
            server._mark_dead()
            if server._proc is not None:
                server._proc.kill()
                server._proc.wait()
            return server
        finally:
            child.close()
        server._sock = parent
        server._reader = threading.Thread(
            target=server._read_loop, name="thotd-forkserver", daemon=True
        )
        server._reader.start()
        atexit.register(server.close)
        return server

    def ready(self) -> bool:
        """True when spawns can be forked (the server has preimported and is alive)."""
        return self._ready.is_set() and not self._dead

    def gone(self) -> bool:
        """True once the server is gone for good (crashed, hung and given up, closed, or it
        never started), as opposed to still booting."""
        return self._dead

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until :meth:`ready` or the server is gone; return :meth:`ready`."""
        self._ready.wait(timeout)
        return self.ready()

    def spawn(
        self,
        argv: Sequence[str],
        cwd: str | os.PathLike[str],
        env: Mapping[str, str],
        log_fd: int,
        limits: Mapping[str, int | None] | None = None,
    ) -> ForkedProcess | None:
        """Fork ``python argv[0] argv[1:]`` in ``cwd`` with ``env``, output to ``log_fd``.

        ``argv[0]`` and ``cwd`` must be absolute.  ``limits`` may hold ``nofile``, ``cpu``
        (seconds) and ``fsize`` (bytes), as for the trampoline; ``RLIMIT_CORE`` is always 0.
        Returns None when the run must take the exec path instead; when the server
        declined, :attr:`refused` counts it and :attr:`last_refusal` says why.
        """
        import threading

        if not self.ready():
            return None
        lim = {k: int(v) for k, v in (limits or {}).items() if v is not None}
        slot = _Slot(threading.Event())
        with self._lock:
            if self._dead or self._sock is None:
                return None
            self._next_id += 1
            rid = self._next_id
            self._pending[rid] = slot
        req = {
            "op": "spawn",
            "id": rid,
            "argv": [os.fspath(a) for a in argv],
            "cwd": os.fspath(cwd),
            "env": dict(env),
            "limits": lim,
        }
        try:
            with self._send_lock:
                _send(self._sock, req, [log_fd])
        except (OSError, ValueError, TypeError):  # EMSGSIZE, EPIPE, closed, bad fd
            with self._lock:
                self._pending.pop(rid, None)
            return None
        try:
            answered = slot.event.wait(SPAWN_REPLY_S)
        except BaseException:
            with self._lock:
                slot.abandoned = True
                orphan = slot.result
            if orphan is not None:  # forked after all, and nobody will manage it
                _kill_group(orphan.pid)
            raise
        if not answered:
            # A server that does not answer a fork within seconds is hung (stopped, stuck):
            # give it up -- this run is exec'd, later ones too until a new server is
            # started -- and kill whatever it forks late, which nobody would manage.
            with self._lock:
                slot.abandoned = True
                orphan = slot.result
                self.refused += 1
                self.last_refusal = f"fork server did not answer in {SPAWN_REPLY_S:g} s"
            if orphan is not None:
                _kill_group(orphan.pid)
            if self._proc is not None:
                with contextlib.suppress(OSError):
                    self._proc.kill()  # the reader then sees EOF and marks it dead
            self._mark_dead()
            return None
        with self._lock:
            if slot.result is None:
                self.refused += 1
                self.last_refusal = slot.refused or "fork server gone"
                return None
            self.forked += 1
        slot.result.args = list(req["argv"])
        return slot.result

    def close(self, wait: bool = True) -> None:
        """Stop the server and reap it; safe twice, and run at interpreter exit.

        Runs still going are not touched (their groups are the caller's to end); their
        waits report :data:`LOST_RETURNCODE` once they end, as after a server crash.
        ``wait=False`` only tells the server to go, for a caller about to exit with no run
        in flight: it ends on its own (~5 ms later) and nobody waits for that.
        """
        import atexit
        import subprocess
        import threading

        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        sock = self._sock
        if sock is not None:
            # The server sees EOF after the requests already sent, answers them, and exits;
            # the reader takes every reply up to the server's own EOF, so no run it forked
            # is left without its caller knowing.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        if not wait:
            return
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(5.0)
            if reader.is_alive() and sock is not None:  # a server that does not answer
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RD)
                reader.join(5.0)
        self._mark_dead()
        if sock is not None:
            sock.close()
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reader thread ---------------------------------------------------------------------

    def _read_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        try:
            while True:
                data, fds, _ = _recv(sock, 1 << 16, 2)
                if not data:
                    _close_all(fds)
                    return
                try:
                    msg = json.loads(data)
                except ValueError:
                    _close_all(fds)
                    continue
                self._dispatch(msg, fds)
        except OSError:
            return
        finally:
            self._mark_dead()

    def _dispatch(self, msg: dict[str, Any], fds: list[int]) -> None:
        if "ready" in msg:
            _close_all(fds)
            self._ready.set()
            return
        if "id" in msg:
            with self._lock:
                slot = self._pending.pop(msg["id"], None)
                proc = None
                if "pid" in msg:
                    proc = ForkedProcess(msg["pid"], [], fds[0] if fds else None)
                    _close_all(fds[1:])
                    self._procs[proc.pid] = proc
                else:
                    _close_all(fds)
                if slot is None:  # nobody asked (any more): nobody would manage it
                    if proc is not None:
                        _kill_group(proc.pid)
                    return
                slot.result = proc
                slot.refused = msg.get("refused")
                abandoned = slot.abandoned
            if abandoned and proc is not None:
                _kill_group(proc.pid)
            slot.event.set()
            return
        _close_all(fds)
        if "status" in msg:
            with self._lock:
                proc = self._procs.pop(msg["pid"], None)
            if proc is not None:
                proc._set_status(msg["status"])

    def _mark_dead(self) -> None:
        """The server is gone (or closed): release every waiter."""
        with self._lock:
            self._dead = True
            pending, self._pending = self._pending, {}
            procs, self._procs = self._procs, {}
        self._ready.set()  # wake wait_ready(); ready() is False from now on
        for slot in pending.values():
            slot.event.set()
        for proc in procs.values():
            proc._orphan()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


#: The folder holding the ``thotd`` package (see :meth:`ForkServer.start`).
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
                _flush_io()  # as _PyRun_SimpleFileObject does before reporting it
                _child.globals = {}  # see _Child.leave
                raise  # the interpreter reports it (code, or message + 1) as for a real run
            except BaseException as _exc:  # noqa: BLE001
                _child.exit = _child.uncaught(_exc, _code)
            else:
                _child.finished()
        del _code
        _child.leave()
