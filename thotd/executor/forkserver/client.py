"""The client of a fork server: what the runner and the daemon hold.

:class:`ForkServer` starts a server process (:mod:`thotd.executor.forkserver.server`) and
asks it for runs; it is thread-safe (the runner spawns from worker threads).  Each forked
run is a :class:`ForkedProcess`, ``Popen``-like.  Loaded in the caller's process only.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from thotd.executor.forkserver.protocol import MAX_MSG, close_all, recv, send, startup_vars
from thotd.executor.processgroup import kill_group, pid_alive, signal_process, spawn

if TYPE_CHECKING:
    import subprocess
    import threading

__all__ = ["LOST_RETURNCODE", "SPAWN_REPLY_S", "ForkServer", "ForkedProcess", "startup_vars"]

#: How long a spawn waits for the server's answer before giving the server up as hung (a
#: fork and its reply take ~1-3 ms).
SPAWN_REPLY_S = 10.0

#: What ``ForkedProcess.returncode`` is when the server died before reporting the exit.
LOST_RETURNCODE = 255


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
            if not pid_alive(self.pid):
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
            if self._orphaned and self._gone(left):
                self._lose()
                break
            if left is not None and (left <= 0 or self._orphaned):
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            self._event.wait(left)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the run's main process, unless it is known to have ended."""
        if self.returncode is None:
            signal_process(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


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
    starts are right); three frames (runpy's two and the server module's) sit below the script's
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
                parent.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MSG)
            # cwd: -m puts it on the server's sys.path, so the server imports this very
            # thotd (and thot) whether or not it is installed; each child replaces the
            # entry with its script's folder.
            server._proc = spawn(  # a session of its own: a terminal's Ctrl-C must not reach it
                [sys.executable, "-m", "thotd.executor.forkserver.server", str(child.fileno())],
                env=server.env,
                cwd=_PACKAGE_PARENT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(child.fileno(),),
            )
            server.server_pid = server._proc.pid
            send(parent, {"op": "hello", "env": server.env})
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
        args = [os.fspath(a) for a in argv]
        req = {
            "op": "spawn",
            "id": rid,
            "argv": args,
            "cwd": os.fspath(cwd),
            "env": dict(env),
            "limits": lim,
        }
        try:
            with self._send_lock:
                send(self._sock, req, [log_fd])
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
                kill_group(orphan.pid)
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
                kill_group(orphan.pid)
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
        slot.result.args = args
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
                data, fds, _ = recv(sock, 1 << 16, 2)
                if not data:
                    close_all(fds)
                    return
                try:
                    msg = json.loads(data)
                except ValueError:
                    close_all(fds)
                    continue
                self._dispatch(msg, fds)
        except OSError:
            return
        finally:
            self._mark_dead()

    def _dispatch(self, msg: dict[str, Any], fds: list[int]) -> None:
        if "ready" in msg:
            close_all(fds)
            self._ready.set()
            return
        if "id" in msg:
            with self._lock:
                slot = self._pending.pop(msg["id"], None)
                proc = None
                if "pid" in msg:
                    proc = ForkedProcess(msg["pid"], [], fds[0] if fds else None)
                    close_all(fds[1:])
                    self._procs[proc.pid] = proc
                else:
                    close_all(fds)
                if slot is None:  # nobody asked (any more): nobody would manage it
                    if proc is not None:
                        kill_group(proc.pid)
                    return
                slot.result = proc
                slot.refused = msg.get("refused")
                abandoned = slot.abandoned
            if abandoned and proc is not None:
                kill_group(proc.pid)
            slot.event.set()
            return
        close_all(fds)
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


#: The folder holding the ``thotd`` package (see :meth:`ForkServer.start`).
_PACKAGE_PARENT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
)

