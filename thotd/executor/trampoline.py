"""Exec trampoline: set resource limits and a clean signal state, then become the script.

Run by :mod:`thotd.executor.process` as ``python -I -S trampoline.py OPTION... -- ARGV...``; it is
never imported by the daemon.  It exists because limits must be set *in the child before
the script starts* and ``preexec_fn`` is unsafe in the daemon, which has threads (a fork
in a threaded process may deadlock in the child on a lock held by another thread).
``resource.prlimit(pid, ...)`` from the parent after spawn would avoid this extra exec, but
it races with the script, which may already be running (and dumping core, or opening
files) before the parent gets to it.

Start-up cost is what matters here, so this file:

* runs with ``-I -S`` (no site, no user site, no PYTHON* variables, script dir not on
  ``sys.path``, so a stray ``resource.py`` in the project cannot hijack it);
* imports only ``os``, ``sys``, ``_signal`` and ``resource`` -- ``signal`` is avoided on
  purpose, it pulls in ``enum`` and ``functools`` and would triple the cost.

Options (each one argv word, before ``--``):

``status=FD``
    A pipe write end.  It is marked close-on-exec, so a successful exec closes it with
    nothing written; if the exec fails the reason is written there (and to stderr, which
    is the run log) and the trampoline exits 127.  The parent can thus tell "the script
    could not be started" (status ``error``) from "the script exited 127".
``core=N`` / ``nofile=N`` / ``cpu=N`` / ``fsize=N``
    Resource limits; see ``apply_limit``.  ``fsize`` also ignores ``SIGXFSZ``.
``parent=PID``
    ``SIGKILL`` the script when its parent (``PID``) dies (``PR_SET_PDEATHSIG``, kept across
    the exec); if the parent is already gone, exit 1 at once.  ``ctypes`` is imported only
    for this option.
``unset=NAME`` / ``setenv=NAME=VALUE``
    Undo what the interpreter's own start-up did to the environment.  CPython's locale
    coercion (PEP 538) adds ``LC_CTYPE=C.UTF-8`` when the locale is C/POSIX, even with
    ``-I``; without this repair the script would see a variable the daemon never had.
"""

import os
import resource
import sys

TYPE_CHECKING = False  # ``typing`` would cost start-up time; type checkers read it as True
if TYPE_CHECKING:
    import signal as _signal  # the same names: ``signal`` re-exports ``_signal``'s
else:
    import _signal


def apply_limit(name: str, value: int) -> None:
    """Set one limit.

    ``core`` and ``nofile`` only lower the *soft* limit, so a user who really wants core
    dumps (``ulimit -c unlimited``) or more files can still raise it inside the script.
    ``fsize`` is a disk guard and sets both; ``cpu`` sets the soft limit (``SIGXCPU``) and
    a hard limit 5 s later (``SIGKILL``) for scripts that catch ``SIGXCPU``.
    """
    kind = {
        "core": resource.RLIMIT_CORE,
        "nofile": resource.RLIMIT_NOFILE,
        "cpu": resource.RLIMIT_CPU,
        "fsize": resource.RLIMIT_FSIZE,
    }[name]
    soft, hard = resource.getrlimit(kind)

    def capped(v: int) -> int:
        return v if hard == resource.RLIM_INFINITY else min(v, hard)

    if name == "fsize":
        resource.setrlimit(kind, (capped(value), capped(value)))
    elif name == "cpu":
        resource.setrlimit(kind, (capped(value), capped(value + 5)))
    else:
        resource.setrlimit(kind, (capped(value), hard))


def _reset_signals(ignore_xfsz: bool) -> None:
    """Give the script default signal dispositions and an empty signal mask.

    Ignored signals survive ``exec``.  The interpreter running this file has just set
    ``SIGPIPE`` and ``SIGXFSZ`` to ignored, and the daemon may ignore others (``SIGCHLD``
    ignored would even make the script's own ``wait()`` fail with ECHILD).  A script must
    behave as in a terminal: ``yes | head`` ends quietly by ``SIGPIPE``.
    """
    for signum in range(1, _signal.NSIG):
        if signum in (_signal.SIGKILL, _signal.SIGSTOP):
            continue
        try:  # noqa: SIM105 -- contextlib would cost more start-up time than this file
            _signal.signal(signum, _signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # real-time signals reserved by libc, and the like
    if ignore_xfsz:
        _signal.signal(_signal.SIGXFSZ, _signal.SIG_IGN)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])


def _die_with_parent(parent: int) -> None:
    """Have the kernel send ``SIGKILL`` when the parent dies; leave if it already has."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, _signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def main(argv: list[str]) -> int:
    """Apply the options, then ``execvp`` the command; return only on failure."""
    sep = argv.index("--")
    options, command = argv[:sep], argv[sep + 1 :]
    status_fd = -1
    ignore_xfsz = False
    for opt in options:
        key, _, value = opt.partition("=")
        if key == "status":
            status_fd = int(value)
            os.set_inheritable(status_fd, False)
        elif key == "parent":
            _die_with_parent(int(value))
        elif key == "unset":
            os.environ.pop(value, None)
        elif key == "setenv":
            name, _, val = value.partition("=")
            os.environ[name] = val
        else:
            apply_limit(key, int(value))
            ignore_xfsz = ignore_xfsz or key == "fsize"
    _reset_signals(ignore_xfsz)
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        reason = f"cannot execute {command[0]!r}: {exc.strerror or exc}"
        msg = f"# thotd: {reason}\n".encode(errors="replace")
        try:  # noqa: SIM105 -- see above: no contextlib here
            os.write(2, msg)
        except OSError:
            pass
        if status_fd >= 0:
            os.write(status_fd, reason.encode(errors="replace"))
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
