"""The forked child of the fork server: what turns a fork of the server into ``python script``.

Runs in the child only, between ``fork`` and the script's first line (and at its end).
It mimics ``python /abs/script.py`` where a script can tell: own session (made by the
server's fork), stdin ``/dev/null``, the log as fds 1 and 2 and nothing else open, the
limits, fresh signal dispositions, cwd, ``os.environ`` (and the C environment), new
``sys.std*`` made the way the interpreter makes them, ``sys.argv``/``sys.orig_argv``/
``sys.path[0]``, a fresh ``__main__``, the script compiled under its real file name, and
the interpreter's exit rules (``SystemExit``, tracebacks through ``sys.excepthook`` showing
only the script's frames, threads joined and ``atexit`` run by the real interpreter
shutdown: the child returns from the server loop to the top level of the server's
``__main__`` module and ends there, see :mod:`thotd.executor.forkserver.server`).
What cannot be made the same is listed on :class:`thotd.executor.forkserver.client.ForkServer`.

The server imports this module before it forks (a child must not pay for an import);
stdlib only.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import importlib.machinery
import io
import os
import resource
import signal
import sys
import types
from collections.abc import Mapping
from typing import Any

from thotd.executor.trampoline import apply_limit

__all__ = ["Child", "flush_io", "sys_path0"]

#: The interpreter as it was invoked: ``sys.orig_argv[0]`` of a real run.
_PROGRAM = sys.orig_argv[0] if sys.orig_argv else sys.executable

def sys_path0(script: str) -> str:
    """``sys.path[0]`` for ``python script``: the directory of the script's real path.

    CPython (``_PyPathConfig_ComputeSysPath0``) follows a symlinked script to where it
    really lives (readlink, then ``realpath``), so helpers beside the target are found.
    """
    try:
        real = os.path.realpath(script, strict=True)
    except OSError:
        real = script
    return os.path.dirname(real)



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


def _make_stdio(
    fd: int, write: bool, name: str, encoding: str, errors: str, buffered: bool
) -> io.TextIOWrapper:
    """One standard stream, built like the interpreter's own (CPython's ``create_stdio``)."""
    buffering = 0 if (write and not buffered) else -1
    buf = io.open(fd, "wb" if write else "rb", buffering, None, None, None, False)  # noqa: UP020, SIM115
    raw = buf.raw if isinstance(buf, io.BufferedReader | io.BufferedWriter) else buf
    assert isinstance(raw, io.FileIO)
    raw.name = name
    line_buffering = buffered and (raw.isatty() or fd == 2)
    stream = io.TextIOWrapper(buf, encoding, errors, "\n", line_buffering, not buffered)
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
        data[environ.encodekey(key)] = environ.encodevalue(value)


def flush_io() -> None:
    """CPython's ``flush_io``: stderr then stdout, errors ignored."""
    for name in ("stderr", "stdout"):
        stream = getattr(sys, name, None)
        if stream is None:
            continue
        with contextlib.suppress(Exception):  # the interpreter ignores them too
            stream.flush()


class _BySigint:
    """The process is to die of SIGINT once the interpreter has shut down."""


#: See :meth:`Child.uncaught`.
_BY_SIGINT = _BySigint()

#: How the process ends after the script: normally (None), by ``sys.exit(code)``, or by SIGINT.
ExitPlan = int | str | None | _BySigint


class Child:
    """The forked child, becoming ``python script`` step by step."""

    def __init__(
        self, req: Mapping[str, Any], log_fd: int, delta: Mapping[str, str | None]
    ) -> None:
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
        self.exit: ExitPlan = None

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
        apply_limit("core", 0)
        for name in ("nofile", "cpu", "fsize"):
            if name in self.limits:
                apply_limit(name, self.limits[name])
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
        stdin = _make_stdio(0, False, "<stdin>", encoding, errors, buffered)
        stdout = _make_stdio(1, True, "<stdout>", encoding, errors, buffered)
        stderr = _make_stdio(2, True, "<stderr>", encoding, "backslashreplace", buffered)
        sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
        # The originals too, as at start-up (``Final`` to a type checker, not to the runtime).
        vars(sys).update(__stdin__=stdin, __stdout__=stdout, __stderr__=stderr)

        sys.argv = list(self.argv)
        sys.orig_argv = [_PROGRAM, *self.argv]
        if not sys.flags.safe_path:
            sys.path[0] = sys_path0(self.script)
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
        flush_io()
        self._forget_file()

    def _forget_file(self) -> None:
        # _PyRun_SimpleFileObject removes the __file__/__cached__ it set, once the script
        # has run (atexit handlers see them gone); not when SystemExit ended the run.
        self.globals.pop("__file__", None)
        self.globals.pop("__cached__", None)

    def uncaught(self, exc: BaseException, code: types.CodeType | None) -> ExitPlan:
        """Report an exception that ended the script, as ``PyErr_Print`` does; return how
        the process is to end (see :attr:`exit`).

        The traceback starts at the script's own module frame (the server's frames below it
        are cut).
        """
        flush_io()
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
                flush_io()
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

        The script's namespace is let go first: this object lives to the end (the server's
        ``__main__`` module holds it), and the interpreter's shutdown must find the
        script's objects unreferenced, as it does after ``python script.py`` (``__del__``
        methods run, unclosed files are flushed).
        """
        self.globals = {}
        how, self.exit = self.exit, None
        if isinstance(how, _BySigint):
            raise KeyboardInterrupt
        if how is not None:
            sys.exit(how)

