"""Tests for thotd.executor.forkserver: a forked run must be indistinguishable from ``python script.py``.

Most tests run the same script through :func:`thotd.executor.process.run_sync` twice -- the exec path
(trampoline + fresh interpreter) and the fork server -- and compare what the script saw and
did.  Every such comparison also checks that the fork path was really taken (the server's
``forked`` counter), so a silent fallback cannot make an equivalence test pass vacuously.

Real processes throughout, no mocks; waits poll a condition against a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from corekit import await_for, group_dead, wait_for

from thotd.executor.forkserver.client import LOST_RETURNCODE, ForkServer, startup_vars
from thotd.executor.process import (
    PGID_SUFFIX,
    ProcResult,
    RunSpec,
    end_leftovers,
    run_async,
    run_sync,
    script_env,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork, process groups, /proc")

DEADLINE_S = 10.0  # generous: only reached when something is broken

#: In the server's start environment, never in a run's: it must vanish from forked runs.
GONE_VAR = "THOTD_TEST_REMOVED_VAR"


def pid_gone(pid: int) -> bool:
    """True once ``pid`` does not exist at all, not even as a zombie."""
    return not Path(f"/proc/{pid}").exists()


def base_env(**extra: str) -> dict[str, str]:
    """The environment every run (and the shared server) starts from."""
    return script_env(os.environ, {"PYTHONUNBUFFERED": "1", **extra})


def run_env(**extra: str) -> dict[str, str]:
    """A run's environment: the base, THOT_* variables, and without :data:`GONE_VAR`."""
    env = base_env(**{"THOT_CONTAINER_ID": "/nowhere/container", "THOT_SCRIPT_ID": "s.py", **extra})
    env.pop(GONE_VAR, None)
    return env


@pytest.fixture(scope="module")
def server() -> Iterator[ForkServer]:
    fs = ForkServer.start(base_env(**{GONE_VAR: "from-the-server"}))
    assert fs.wait_ready(DEADLINE_S), "fork server did not get ready"
    yield fs
    fs.close()


def spec_for(script: Path, log: Path, **kw: object) -> RunSpec:
    fields: dict[str, object] = {
        "script": script,
        "cwd": script.parent,
        "env": run_env(),
        "log_path": log,
        "timeout_s": DEADLINE_S,
        "log_cap_bytes": 1 << 20,
        "grace_s": 0.5,
    }
    fields.update(kw)
    return RunSpec(**fields)  # type: ignore[arg-type]


def log_body(path: Path) -> str:
    """The log without its header line (which holds a timestamp)."""
    text = path.read_text(errors="backslashreplace")
    assert text.startswith("# thotd run: ")
    return text.split("\n", 1)[1]


def run_forked(server: ForkServer, spec: RunSpec) -> ProcResult:
    """``run_sync`` through the server, asserting the fork path was taken."""
    before = server.forked
    res = run_sync(spec, forkserver=server)
    assert server.forked == before + 1, f"not forked: {server.last_refusal}"
    return res


def both(
    server: ForkServer, folder: Path, source: str, name: str = "s.py", **kw: object
) -> tuple[ProcResult, str, ProcResult, str]:
    """Run ``source`` by exec and by fork; return (result, log body) for each."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / name
    script.write_text(source)
    ex = run_sync(spec_for(script, folder / "exec.log", **kw))
    fk = run_forked(server, spec_for(script, folder / "fork.log", **kw))
    return ex, log_body(folder / "exec.log"), fk, log_body(folder / "fork.log")


def same_outcome(a: ProcResult, b: ProcResult) -> None:
    assert (a.status, a.exit_code, a.signal, a.message) == (b.status, b.exit_code, b.signal, b.message)


# -- the fast path is real ----------------------------------------------------------------


def test_fork_path_is_taken(server: ForkServer, tmp_path: Path) -> None:
    # Printed before importing anything: only a forked run has the library preloaded.
    ex, ex_log, fk, fk_log = both(server, tmp_path, "import sys\nprint('thot.thot' in sys.modules)\n")
    assert ex.status == fk.status == "ok"
    assert ex_log == "False\n"
    assert fk_log == "True\n"


def test_forked_run_is_fast(server: ForkServer, tmp_path: Path) -> None:
    # Not a benchmark: a loose bound that only a fallback to the exec path (or a stall) breaks.
    script = tmp_path / "t.py"
    script.write_text("from thot import ThotProject\n")
    best = min(run_forked(server, spec_for(script, tmp_path / "t.log")).duration_s for _ in range(5))
    assert best < 0.5


# -- exit statuses and what ends up in the log -----------------------------------------------


EXITS = {
    "ok": ("print('hi')\n", "ok", 0),
    "exit3": ("import sys\nsys.exit(3)\n", "failed", 3),
    "exit_none": ("import sys\nsys.exit()\n", "ok", 0),
    "exit_msg": ("import sys\nprint('before')\nsys.exit('goodbye, cruel world')\n", "failed", 1),
    "exit_true": ("raise SystemExit(True)\n", "failed", 1),
    "exit_256": ("import sys\nsys.exit(256)\n", "ok", 0),
    "exception": (
        "def inner():\n    raise ValueError('boom')\n\ndef outer():\n    inner()\n\nouter()\n",
        "failed",
        1,
    ),
    "chained": (
        "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    raise KeyError('k') from e\n",
        "failed",
        1,
    ),
    "syntax_error": ("x = 1\ndef (:\n", "failed", 1),
    "excepthook": (
        "import sys\nsys.excepthook = lambda t, v, tb: print('hooked', t.__name__, v)\n"
        "raise RuntimeError('r')\n",
        "failed",
        1,
    ),
}


@pytest.mark.parametrize("case", sorted(EXITS))
def test_exit_status_and_output_match(server: ForkServer, tmp_path: Path, case: str) -> None:
    source, status, code = EXITS[case]
    ex, ex_log, fk, fk_log = both(server, tmp_path, source)
    assert (ex.status, ex.exit_code) == (status, code), ex_log
    same_outcome(ex, fk)
    assert fk_log == ex_log
    assert "forkserver" not in fk_log and "runpy" not in fk_log


def test_exit_message_and_traceback_are_the_scripts(server: ForkServer, tmp_path: Path) -> None:
    _, _, _, msg_log = both(server, tmp_path / "m", EXITS["exit_msg"][0])
    assert msg_log == "before\ngoodbye, cruel world\n"
    _, _, _, tb_log = both(server, tmp_path / "t", EXITS["exception"][0])
    frames = [line for line in tb_log.splitlines() if line.startswith("  File ")]
    script = tmp_path / "t" / "s.py"
    assert frames == [
        f'  File "{script}", line 7, in <module>',
        f'  File "{script}", line 5, in outer',
        f'  File "{script}", line 2, in inner',
    ]
    assert tb_log.startswith("Traceback (most recent call last):\n")


def test_keyboard_interrupt_ends_by_sigint(server: ForkServer, tmp_path: Path) -> None:
    source = "import atexit\natexit.register(print, 'atexit ran')\nraise KeyboardInterrupt\n"
    ex, ex_log, fk, fk_log = both(server, tmp_path, source)
    assert (ex.status, ex.signal) == ("failed", signal.SIGINT)
    same_outcome(ex, fk)
    assert fk_log == ex_log and "atexit ran" in fk_log


def test_stdout_stderr_interleave(server: ForkServer, tmp_path: Path) -> None:
    source = (
        "import sys\n"
        "for i in range(5):\n"
        "    print('out', i)\n"
        "    print('err', i, file=sys.stderr)\n"
        "sys.stdout.write('no newline')\n"
        "sys.stderr.write('|then err\\n')\n"
        "print('\\u00e9t\\u00e9 \\u2603')\n"
        "print('\\udcff', file=sys.stderr)\n"  # a lone surrogate: backslashreplace on stderr
    )
    ex, ex_log, fk, fk_log = both(server, tmp_path, source)
    assert ex.status == fk.status == "ok"
    assert fk_log == ex_log
    assert "out 4\nerr 4\nno newline|then err\n" in fk_log


SHUTDOWN = """\
import atexit, sys, threading

def worker():
    threading.main_thread().join()  # returns when the interpreter starts shutting down
    print('thread saw the main thread end')

class Noisy:
    def __del__(self):
        print('finalized at shutdown')

threading.Thread(target=worker).start()
atexit.register(lambda: print('atexit; __file__ is', globals().get('__file__', 'gone')))
keep = Noisy()
unclosed = open('unclosed.txt', 'w')  # never closed: shutdown must flush it
unclosed.write('flushed by finalization')
print('main done')
"""

ENDINGS = {
    "normal": "",
    "sys_exit": "sys.exit(5)\n",
    "exception": "raise ValueError('v')\n",
    "keyboard_interrupt": "raise KeyboardInterrupt\n",
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_shutdown_joins_threads_runs_atexit_and_finalizes(
    server: ForkServer, tmp_path: Path, ending: str
) -> None:
    ex, ex_log, fk, fk_log = both(server, tmp_path, SHUTDOWN + ENDINGS[ending])
    same_outcome(ex, fk)
    assert fk_log == ex_log
    assert fk_log.startswith("main done\n")
    assert fk_log.endswith(
        "thread saw the main thread end\natexit; __file__ is "
        + ("gone" if ending != "sys_exit" else str(tmp_path / "s.py"))
        + "\nfinalized at shutdown\n"
    )
    assert (tmp_path / "unclosed.txt").read_text() == "flushed by finalization"


def test_exit_from_thread_and_atexit_with_sys_exit(server: ForkServer, tmp_path: Path) -> None:
    source = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('atexit; __file__ is', globals().get('__file__', 'gone')))\n"
        "sys.exit(7)\n"
    )
    ex, ex_log, fk, fk_log = both(server, tmp_path, source)
    assert ex.exit_code == 7
    same_outcome(ex, fk)
    assert fk_log == ex_log  # SystemExit does not remove __file__ before atexit


# -- what the script sees ------------------------------------------------------------------

INTROSPECT = """\
import json, os, pickle, resource, signal, subprocess, sys

class Thing:
    pass

def masks():
    wanted = ('SigBlk', 'SigIgn', 'SigCgt')
    with open('/proc/self/status') as fh:
        return [line.strip() for line in fh if line.startswith(wanted)]

child_env = subprocess.run(['env', '-0'], capture_output=True, check=True).stdout
g = {k: v for k, v in globals().items() if k.startswith('__')}
report = {
    'argv': sys.argv,
    'orig_argv': sys.orig_argv,
    'path0': sys.path[0],
    'path': sys.path,
    'name': __name__,
    'file': __file__,
    'globals': [(k, type(v).__name__) for k, v in g.items()],
    'loader': [type(__loader__).__name__, __loader__.name, __loader__.path],
    'spec': repr(__spec__),
    'main_is_us': sys.modules['__main__'].__dict__ is globals(),
    'pickle': type(pickle.loads(pickle.dumps(Thing()))).__qualname__,
    'cwd': os.getcwd(),
    'environ': list(os.environ.items()),  # in order: the order is the exec'd one too
    'c_environ': [e for e in child_env.decode('utf-8', 'surrogateescape').split('\\0') if e],
    'stdin': [repr(sys.stdin), sys.stdin.read(), sys.stdin.encoding, sys.stdin.errors,
              sys.stdin.line_buffering, sys.stdin.write_through, type(sys.stdin.buffer).__name__],
    'stdout': [repr(sys.stdout), sys.stdout.encoding, sys.stdout.errors, sys.stdout.line_buffering,
               sys.stdout.write_through, type(sys.stdout.buffer).__name__],
    'stderr': [repr(sys.stderr), sys.stderr.encoding, sys.stderr.errors,
               sys.stderr.line_buffering, sys.stderr.write_through],
    'dunder_std': [sys.stdin is sys.__stdin__, sys.stdout is sys.__stdout__,
                   sys.stderr is sys.__stderr__],
    'fds': sorted(os.listdir('/proc/self/fd')),
    'fd0': os.readlink('/proc/self/fd/0'),
    'fd1_is_fd2': os.path.samestat(os.fstat(1), os.fstat(2)),
    'handlers': {s.name: str(signal.getsignal(s)) for s in signal.Signals},
    'masks': masks(),
    'pgid_is_pid': os.getpgid(0) == os.getpid(),
    'sid_is_pid': os.getsid(0) == os.getpid(),
    'core': resource.getrlimit(resource.RLIMIT_CORE)[0],
    'flags': repr(sys.flags),
    'executable': sys.executable,
    'exc_info': repr(sys.exc_info()),
    'last': [hasattr(sys, 'last_type'), hasattr(sys, 'last_value')],
    'umask': os.umask(0o22),
}
print('REPORT ' + json.dumps(report))
"""


def report(log: str) -> dict[str, object]:
    (line,) = (line for line in log.splitlines() if line.startswith("REPORT "))
    return json.loads(line[len("REPORT ") :])  # type: ignore[no-any-return]


def compare_reports(ex_log: str, fk_log: str) -> dict[str, object]:
    ex, fk = report(ex_log), report(fk_log)
    for key in ex:
        assert fk[key] == ex[key], key
    assert fk == ex
    return fk


def test_script_sees_what_python_script_py_gives(server: ForkServer, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    ex, ex_log, fk, fk_log = both(server, tmp_path / "scripts", INTROSPECT, cwd=work)
    assert ex.status == fk.status == "ok", (ex_log, fk_log)
    seen = compare_reports(ex_log, fk_log)
    script = str(tmp_path / "scripts" / "s.py")
    assert seen["argv"] == [script] and seen["file"] == script and seen["name"] == "__main__"
    assert seen["path0"] == str(tmp_path / "scripts") and seen["cwd"] == str(work)
    environ = dict(seen["environ"])  # type: ignore[call-overload]
    assert environ["THOT_CONTAINER_ID"] == "/nowhere/container"
    assert GONE_VAR not in environ
    assert f"{GONE_VAR}=from-the-server" not in seen["c_environ"]  # type: ignore[operator]
    assert seen["fds"] == ["0", "1", "2", "3"]  # 3: the listing's own
    assert seen["fd0"] == "/dev/null"
    assert seen["pgid_is_pid"] and seen["sid_is_pid"] and seen["core"] == 0


def test_env_per_run_and_unbuffered_off(server: ForkServer, tmp_path: Path) -> None:
    # PYTHONUNBUFFERED may differ from the server's: the child builds its streams itself.
    env = run_env(THOT_RECORD="/tmp/record-x", EXTRA="é ü")
    env.pop("PYTHONUNBUFFERED")
    ex, ex_log, fk, fk_log = both(server, tmp_path, INTROSPECT, env=env)
    assert ex.status == fk.status == "ok"
    seen = compare_reports(ex_log, fk_log)
    environ = dict(seen["environ"])  # type: ignore[call-overload]
    assert environ["THOT_RECORD"] == "/tmp/record-x" and environ["EXTRA"] == "é ü"
    assert "PYTHONUNBUFFERED" not in environ


def test_symlinked_script_path0_is_the_target_folder(server: ForkServer, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "helper.py").write_text("WHERE = 'real'\n")
    (real / "s.py").write_text(
        "import sys, helper\nprint(sys.argv[0], __file__, sys.path[0], helper.WHERE)\n"
    )
    links = tmp_path / "links"
    links.mkdir()
    (links / "s.py").symlink_to(real / "s.py")
    ex = run_sync(spec_for(links / "s.py", tmp_path / "exec.log"))
    fk = run_forked(server, spec_for(links / "s.py", tmp_path / "fork.log"))
    assert ex.status == fk.status == "ok"
    assert log_body(tmp_path / "fork.log") == log_body(tmp_path / "exec.log")
    assert log_body(tmp_path / "fork.log") == f"{links / 's.py'} {links / 's.py'} {real} real\n"


def test_random_differs_between_runs(server: ForkServer, tmp_path: Path) -> None:
    script = tmp_path / "r.py"
    script.write_text(
        "import random, tempfile, uuid\n"
        "print(random.random(), uuid.uuid4(), tempfile.mktemp())\n"
    )
    logs = []
    for i in range(3):
        log = tmp_path / f"r{i}.log"
        assert run_forked(server, spec_for(script, log)).status == "ok"
        logs.append(log_body(log))
    assert len(set(logs)) == 3


def test_locale_coercion_matches(tmp_path: Path) -> None:
    # Under the C locale the interpreter adds LC_CTYPE=C.UTF-8 to its own environ at start
    # (PEP 538); a forked run must show exactly what a fresh interpreter shows.
    env = {k: v for k, v in base_env().items() if not k.startswith(("LC_", "LANG"))}
    env["LANG"] = "C"
    fs = ForkServer.start(env)
    try:
        assert fs.wait_ready(DEADLINE_S)
        source = "import os, sys\nprint(os.environ.get('LC_CTYPE'), sys.stdout.encoding, sys.stdout.errors)\n"
        script = tmp_path / "loc.py"
        script.write_text(source)
        ex = run_sync(spec_for(script, tmp_path / "exec.log", env=env))
        fk = run_forked(fs, spec_for(script, tmp_path / "fork.log", env=env))
        assert ex.status == fk.status == "ok"
        assert log_body(tmp_path / "fork.log") == log_body(tmp_path / "exec.log")
    finally:
        fs.close()


# -- limits ---------------------------------------------------------------------------------


def test_limits_applied(server: ForkServer, tmp_path: Path) -> None:
    source = (
        "import resource\n"
        "for name in ('RLIMIT_NOFILE', 'RLIMIT_CPU', 'RLIMIT_CORE', 'RLIMIT_FSIZE'):\n"
        "    print(name, resource.getrlimit(getattr(resource, name)))\n"
    )
    ex, ex_log, fk, fk_log = both(
        server, tmp_path, source, max_open_files=64, cpu_limit_s=30, max_file_bytes=1 << 30
    )
    assert ex.status == fk.status == "ok"
    assert fk_log == ex_log
    assert "RLIMIT_NOFILE (64," in fk_log and "RLIMIT_CPU (30, 35)" in fk_log
    assert f"RLIMIT_FSIZE ({1 << 30}, {1 << 30})" in fk_log


def test_core_dumps_off_even_if_the_server_may_dump(tmp_path: Path) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard == 0:
        pytest.skip("core dumps are off for good here: nothing to switch off")
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))
    try:
        fs = ForkServer.start(base_env())  # inherits the raised limit
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))
    try:
        assert fs.wait_ready(DEADLINE_S)
        script = tmp_path / "core.py"
        script.write_text("import resource\nprint(resource.getrlimit(resource.RLIMIT_CORE))\n")
        assert run_forked(fs, spec_for(script, tmp_path / "core.log")).status == "ok"
        assert log_body(tmp_path / "core.log") == f"(0, {hard if hard != resource.RLIM_INFINITY else -1})\n"
    finally:
        fs.close()


def test_signals_ignored_by_the_caller_are_not_inherited(tmp_path: Path) -> None:
    # Under nohup the runner ignores SIGHUP; ignored dispositions survive fork and exec, so
    # the server must reset them as the trampoline does for the exec path.
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        fs = ForkServer.start(base_env())
    finally:
        signal.signal(signal.SIGHUP, previous)
    try:
        assert fs.wait_ready(DEADLINE_S)
        script = tmp_path / "sig.py"
        script.write_text(
            "print([l.strip() for l in open('/proc/self/status') if l.startswith(('SigIgn', 'SigBlk'))])\n"
        )
        previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            ex = run_sync(spec_for(script, tmp_path / "exec.log"))
        finally:
            signal.signal(signal.SIGHUP, previous)
        fk = run_forked(fs, spec_for(script, tmp_path / "fork.log"))
        assert ex.status == fk.status == "ok"
        assert log_body(tmp_path / "fork.log") == log_body(tmp_path / "exec.log")
        assert "'SigIgn:\\t0000000001001000'" in log_body(tmp_path / "fork.log")  # PIPE and XFSZ only
    finally:
        fs.close()


def test_fsize_gives_efbig(server: ForkServer, tmp_path: Path) -> None:
    source = (
        "import sys\ntry:\n    open('out.bin', 'wb').write(b'0' * (2 << 20))\n"
        "except OSError as e:\n    print('errno', e.errno)\n    sys.exit(4)\n"
    )
    ex, ex_log, fk, fk_log = both(server, tmp_path, source, max_file_bytes=1 << 20)
    assert (fk.status, fk.exit_code) == ("failed", 4), fk_log
    same_outcome(ex, fk)
    assert fk_log == ex_log == "errno 27\n"  # EFBIG, not death by SIGXFSZ


def test_too_many_open_files(server: ForkServer, tmp_path: Path) -> None:
    source = (
        "import sys\nfiles = []\ntry:\n    while True:\n        files.append(open(__file__))\n"
        "except OSError as e:\n    print(len(files), e.errno)\n"
    )
    ex, ex_log, fk, fk_log = both(server, tmp_path, source, max_open_files=20)
    assert ex.status == fk.status == "ok"
    assert fk_log == ex_log == "17 24\n"  # fds 0-2 are taken; EMFILE


# -- process groups: timeout, leftovers, cancel ---------------------------------------------

GROUP_SCRIPT = """\
import os, subprocess, time
open('pid', 'w').write(str(os.getpid()))
subprocess.Popen(['sleep', '1000'])
subprocess.Popen(['sleep', '1000'])
open('started', 'w').close()
time.sleep(1000)
"""


def read_pid(path: Path) -> int:
    assert wait_for(lambda: path.exists() and path.read_text().strip().isdigit())
    return int(path.read_text().strip())


@pytest.fixture(params=["sync", "async"])
def forked_runner(request: pytest.FixtureRequest) -> Callable[[ForkServer, RunSpec], ProcResult]:
    """The same run through run_sync and through run_async (the daemon's path)."""
    return run_forked if request.param == "sync" else run_async_forked


def test_timeout_kills_the_group(
    server: ForkServer, tmp_path: Path, forked_runner: Callable[[ForkServer, RunSpec], ProcResult]
) -> None:
    script = tmp_path / "hang.py"
    script.write_text(GROUP_SCRIPT)
    t0 = time.monotonic()
    res = forked_runner(server, spec_for(script, tmp_path / "hang.log", timeout_s=1.0))
    assert time.monotonic() - t0 < 1.0 + 0.5 + 2.0
    assert (res.status, res.signal) == ("timeout", signal.SIGTERM), res
    assert (tmp_path / "started").exists()
    pgid = read_pid(tmp_path / "pid")
    assert wait_for(lambda: group_dead(pgid)), "processes of the run are left"


def test_leftover_is_ended(
    server: ForkServer, tmp_path: Path, forked_runner: Callable[[ForkServer, RunSpec], ProcResult]
) -> None:
    script = tmp_path / "bg.py"
    script.write_text(
        "import os, subprocess\nopen('pid', 'w').write(str(os.getpid()))\n"
        "subprocess.Popen(['sleep', '100'])\n"
    )
    t0 = time.monotonic()
    res = forked_runner(server, spec_for(script, tmp_path / "bg.log", grace_s=5.0))
    assert res.status == "ok"
    assert time.monotonic() - t0 < 1.5  # neither the sleep's 100 s nor the 5 s grace
    pgid = read_pid(tmp_path / "pid")
    assert wait_for(lambda: group_dead(pgid)), "leftover child was not killed"


def test_cancel_from_another_thread(server: ForkServer, tmp_path: Path) -> None:
    script = tmp_path / "hang.py"
    script.write_text(GROUP_SCRIPT)
    cancel = threading.Event()
    results: list[ProcResult] = []
    spec = spec_for(script, tmp_path / "hang.log", timeout_s=None)
    before = server.forked
    worker = threading.Thread(
        target=lambda: results.append(run_sync(spec, cancel, forkserver=server))
    )
    worker.start()
    assert wait_for(lambda: (tmp_path / "started").exists())
    cancel.set()
    worker.join(DEADLINE_S)
    assert not worker.is_alive()
    assert (results[0].status, results[0].signal) == ("killed", signal.SIGTERM)
    assert server.forked == before + 1
    assert wait_for(lambda: group_dead(read_pid(tmp_path / "pid")))


def test_log_cap_in_fork_mode(server: ForkServer, tmp_path: Path) -> None:
    cap = 64 * 1024
    script = tmp_path / "chatty.py"
    script.write_text(
        "import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range(20_000):\n    sys.stdout.write(line)\n"
    )
    res = run_forked(server, spec_for(script, tmp_path / "c.log", log_cap_bytes=cap))
    assert res.status == "ok" and res.log_truncated
    data = (tmp_path / "c.log").read_bytes()
    assert len(data) <= cap + 200
    assert data.rstrip().endswith(b"further output was discarded")


# -- concurrency ------------------------------------------------------------------------------


def test_parallel_spawns_get_their_own_results(server: ForkServer, tmp_path: Path) -> None:
    script = tmp_path / "par.py"
    script.write_text(
        "import os, sys\nn = int(os.environ['THOT_CONTAINER_ID'])\n"
        "print('run', n, os.getcwd())\nsys.exit(n)\n"
    )
    n_runs = 8
    barrier = threading.Barrier(n_runs, timeout=DEADLINE_S)
    results: dict[int, ProcResult] = {}
    before = server.forked

    def one(i: int) -> None:
        work = tmp_path / f"w{i}"
        work.mkdir()
        spec = spec_for(script, tmp_path / f"par{i}.log", cwd=work,
                        env=run_env(THOT_CONTAINER_ID=str(i)))
        barrier.wait()
        results[i] = run_sync(spec, forkserver=server)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n_runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S * 2)
    assert len(results) == n_runs
    assert server.forked == before + n_runs
    for i, res in results.items():
        assert res.exit_code == i, res
        assert log_body(tmp_path / f"par{i}.log") == f"run {i} {tmp_path / f'w{i}'}\n"


# -- refusals fall back to the exec path -----------------------------------------------------


def test_local_thot_module_is_refused(server: ForkServer, tmp_path: Path) -> None:
    (tmp_path / "thot.py").write_text("print('the local thot')\n")
    script = tmp_path / "s.py"
    script.write_text("import sys\nprint('thot.thot' in sys.modules)\nimport thot\n")
    before = (server.forked, server.refused)
    res = run_sync(spec_for(script, tmp_path / "s.log"), forkserver=server)
    assert res.status == "ok"
    assert (server.forked, server.refused) == (before[0], before[1] + 1)
    assert "thot" in (server.last_refusal or "")
    assert log_body(tmp_path / "s.log") == "False\nthe local thot\n"


def thot_found_on_sys_path(cwd: Path) -> bool:
    """Whether a run finds ``thot`` by searching ``sys.path`` (PYTHONPATH, site-packages), as
    opposed to through an editable install's finder, which comes after every path entry."""
    probe = ("import importlib.machinery as m, sys\n"
             "spec = m.PathFinder.find_spec('thot', sys.path[1:])\n"
             "print(spec is not None and spec.origin is not None)\n")
    import subprocess

    out = subprocess.run([sys.executable, "-c", probe], env=base_env(), cwd=cwd,
                         capture_output=True, text=True, check=True).stdout
    return out.strip() == "True"


@pytest.mark.parametrize("shadow", ["json.py", "thotd/__init__.py", "thot/data.csv"])
def test_other_shadowing_files_are_refused(server: ForkServer, tmp_path: Path, shadow: str) -> None:
    # A plain folder (no __init__) named thot loses to a thot found later on sys.path, and
    # only captures ``import thot`` when thot is not on sys.path at all (editable install).
    shadows = shadow != "thot/data.csv" or not thot_found_on_sys_path(tmp_path)
    (tmp_path / shadow).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / shadow).write_text("")
    script = tmp_path / "s.py"
    script.write_text("pass\n")
    before = (server.forked, server.refused)
    assert run_sync(spec_for(script, tmp_path / "s.log"), forkserver=server).status == "ok"
    if shadows:
        assert (server.forked, server.refused) == (before[0], before[1] + 1)
    else:
        assert (server.forked, server.refused) == (before[0] + 1, before[1])


def test_plain_data_folder_is_not_a_shadow(server: ForkServer, tmp_path: Path) -> None:
    # A folder without __init__ loses to the stdlib module of that name: forking is fine.
    (tmp_path / "json").mkdir()
    _, ex_log, _, fk_log = both(server, tmp_path, "import json\nprint(json.dumps([1]))\n")
    assert fk_log == ex_log == "[1]\n"


def test_different_pythonpath_is_refused(server: ForkServer, tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "mylib.py").write_text("VALUE = 42\n")
    script = tmp_path / "s.py"
    script.write_text("import sys, mylib\nprint('thot.thot' in sys.modules, mylib.VALUE)\n")
    before = server.refused
    res = run_sync(
        spec_for(script, tmp_path / "s.log", env=run_env(PYTHONPATH=str(lib))), forkserver=server
    )
    assert res.status == "ok", log_body(tmp_path / "s.log")
    assert server.refused == before + 1 and "PYTHONPATH" in (server.last_refusal or "")
    assert log_body(tmp_path / "s.log") == "False 42\n"


def test_env_too_big_for_exec_is_not_forked(server: ForkServer, tmp_path: Path) -> None:
    # execve refuses one environment string of 128 KiB (E2BIG); a fork would not notice.
    script = tmp_path / "s.py"
    script.write_text("print('ran')\n")
    env = run_env(HUGE="x" * (200 * 1024))
    before = server.forked
    ex = run_sync(spec_for(script, tmp_path / "exec.log", env=env))
    fk = run_sync(spec_for(script, tmp_path / "fork.log", env=env), forkserver=server)
    assert ex.status == "error" and "Argument list too long" in ex.message
    same_outcome(ex, fk)
    assert server.forked == before


def test_startup_vars() -> None:
    env = {"PYTHONPATH": "x", "PYTHONUNBUFFERED": "1", "LC_ALL": "C", "LANG": "C", "HOME": "/h",
           "PATH": "/bin", "THOT_RECORD": "r"}
    assert startup_vars(env) == {"PYTHONPATH": "x", "LC_ALL": "C", "LANG": "C", "HOME": "/h"}


def test_not_ready_and_non_python_take_the_exec_path(server: ForkServer, tmp_path: Path) -> None:
    script = tmp_path / "s.sh"
    script.write_text("echo shell\n")
    before = (server.forked, server.refused)
    assert run_sync(spec_for(script, tmp_path / "s.log"), forkserver=server).status == "ok"
    assert (server.forked, server.refused) == before
    assert log_body(tmp_path / "s.log") == "shell\n"


def test_forked_process_is_popen_like(server: ForkServer, tmp_path: Path) -> None:
    import subprocess

    script = tmp_path / "w.py"
    script.write_text("import time\nopen('started', 'w').close()\ntime.sleep(100)\n")
    fd = os.open(tmp_path / "w.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC)
    try:
        proc = server.spawn([str(script)], str(tmp_path), run_env(), fd, {"nofile": 100})
    finally:
        os.close(fd)  # the run has its own copy
    assert proc is not None and proc.args == [str(script)]
    assert wait_for(lambda: (tmp_path / "started").exists())
    assert proc.poll() is None and proc.returncode is None
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.05)
    assert os.getpgid(proc.pid) == proc.pid  # its own group, ready to be killpg'd
    proc.terminate()
    assert proc.wait(timeout=DEADLINE_S) == -signal.SIGTERM
    assert proc.poll() == -signal.SIGTERM and proc.lost is None


def test_server_writes_the_pgid_file_before_it_answers(server: ForkServer, tmp_path: Path) -> None:
    # A daemon killed -9 right after the answer has written nothing: the next daemon must
    # still find the run, by the file the server wrote between its fork and its answer.
    from thotd.executor.leftovers import PGID_SUFFIX, end_leftovers

    record = tmp_path / "run.record"
    script = tmp_path / "w.py"
    script.write_text("import time\ntime.sleep(100)\n")
    fd = os.open(tmp_path / "w.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC)
    try:
        proc = server.spawn([str(script)], str(tmp_path), run_env(THOT_RECORD=str(record)), fd)
    finally:
        os.close(fd)
    assert proc is not None
    pgid_file = Path(str(record) + PGID_SUFFIX)
    assert pgid_file.read_text().split()[0] == str(proc.pid)
    assert pgid_file.stat().st_mode & 0o777 == 0o600
    assert end_leftovers([str(record)], grace_s=2.0) == 1
    assert proc.wait(timeout=DEADLINE_S) == -signal.SIGTERM


# -- the server's own life ---------------------------------------------------------------------


def test_server_killed_mid_run_does_not_hang_the_waiter(tmp_path: Path) -> None:
    fs = ForkServer.start(base_env())
    try:
        assert fs.wait_ready(DEADLINE_S)
        script = tmp_path / "wait.py"
        script.write_text(
            "import os, time\nopen('started', 'w').close()\n"
            "end = time.monotonic() + 20\n"
            "while not os.path.exists('go') and time.monotonic() < end:\n"
            "    time.sleep(0.01)\n"
        )
        results: list[ProcResult] = []
        spec = spec_for(script, tmp_path / "w.log", timeout_s=None)
        worker = threading.Thread(target=lambda: results.append(run_forked(fs, spec)))
        worker.start()
        assert wait_for(lambda: (tmp_path / "started").exists())
        assert fs.server_pid is not None
        os.kill(fs.server_pid, signal.SIGKILL)
        assert wait_for(lambda: not fs.ready())
        (tmp_path / "go").touch()
        worker.join(DEADLINE_S)
        assert not worker.is_alive(), "the run's waiter hangs"
        (res,) = results
        assert (res.status, res.exit_code) == ("failed", LOST_RETURNCODE)
        assert "fork server died" in res.message
        # A dead server means the exec path from now on.
        ok = tmp_path / "ok.py"
        ok.write_text("print('exec')\n")
        assert run_sync(spec_for(ok, tmp_path / "ok.log"), forkserver=fs).status == "ok"
        assert log_body(tmp_path / "ok.log") == "exec\n"
    finally:
        fs.close()
    assert fs.server_pid is not None and pid_gone(fs.server_pid)


def test_a_hung_server_is_given_up_and_the_run_is_execed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that stops answering (here SIGSTOP) must not hang a run forever: after
    SPAWN_REPLY_S the run takes the exec path and the server is killed."""
    import thotd.executor.forkserver.client as forkserver

    monkeypatch.setattr(forkserver, "SPAWN_REPLY_S", 0.5)
    fs = ForkServer.start(base_env())
    try:
        assert fs.wait_ready(DEADLINE_S)
        assert fs.server_pid is not None
        os.kill(fs.server_pid, signal.SIGSTOP)
        script = tmp_path / "ok.py"
        script.write_text("import sys\nprint('thot.thot' in sys.modules)\n")
        res = run_sync(spec_for(script, tmp_path / "ok.log"), forkserver=fs)
        assert res.status == "ok"
        assert log_body(tmp_path / "ok.log") == "False\n"  # exec'd, not forked
        assert not fs.ready() and "did not answer" in (fs.last_refusal or "")
        pid = fs.server_pid

        def dead() -> bool:  # killed: a zombie until close() reaps it, or gone
            try:
                stat = Path(f"/proc/{pid}/stat").read_bytes()
            except OSError:
                return True
            return stat[stat.rfind(b")") + 2:].split()[0] == b"Z"

        assert wait_for(dead), "the hung server was not killed"
        fs.close()
        assert pid_gone(pid)
    finally:
        if fs.server_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(fs.server_pid, signal.SIGCONT)
        fs.close()


def test_close_leaves_no_process(tmp_path: Path) -> None:
    fs = ForkServer.start(base_env())
    assert fs.wait_ready(DEADLINE_S)
    script = tmp_path / "p.py"
    script.write_text("import os\nprint(os.getpid())\n")
    assert run_forked(fs, spec_for(script, tmp_path / "p.log")).status == "ok"
    child = int(log_body(tmp_path / "p.log"))
    server_pid = fs.server_pid
    assert server_pid is not None
    reader = fs._reader
    fs.close()
    fs.close()  # safe twice
    assert pid_gone(server_pid), "the server is left (or a zombie)"
    assert pid_gone(child), "the run is left as a zombie"
    assert reader is not None and not reader.is_alive()
    assert not fs.ready()
    assert fs.spawn([str(script)], str(tmp_path), base_env(), 1) is None


def test_start_failure_is_never_ready(tmp_path: Path) -> None:
    broken = ForkServer.start({"PATH": "/nonexistent", "PYTHONHOME": str(tmp_path / "none")})
    try:
        assert not broken.wait_ready(DEADLINE_S)  # the interpreter cannot even start
    finally:
        broken.close()


# -- the daemon's way: run_async ---------------------------------------------------------------


def run_async_forked(
    server: ForkServer | None, spec: RunSpec, cancel: asyncio.Event | None = None
) -> ProcResult:
    """``run_async`` through the server on a fresh loop, asserting the fork path was taken."""
    before = server.forked if server is not None else 0
    res = asyncio.run(run_async(spec, cancel, forkserver=server))
    if server is not None:
        assert server.forked == before + 1, f"not forked: {server.last_refusal}"
    return res


def test_async_fork_path_is_taken(server: ForkServer, tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("import sys\nprint('thot.thot' in sys.modules)\n")
    fk = run_async_forked(server, spec_for(script, tmp_path / "fork.log"))
    ex = asyncio.run(run_async(spec_for(script, tmp_path / "exec.log")))
    assert ex.status == fk.status == "ok"
    assert log_body(tmp_path / "fork.log") == "True\n"
    assert log_body(tmp_path / "exec.log") == "False\n"


@pytest.mark.parametrize("case", sorted(EXITS))
def test_async_exit_status_and_output_match(server: ForkServer, tmp_path: Path, case: str) -> None:
    source, status, code = EXITS[case]
    script = tmp_path / "s.py"
    script.write_text(source)
    ex = asyncio.run(run_async(spec_for(script, tmp_path / "exec.log")))
    fk = run_async_forked(server, spec_for(script, tmp_path / "fork.log"))
    assert (ex.status, ex.exit_code) == (status, code)
    same_outcome(ex, fk)
    assert log_body(tmp_path / "fork.log") == log_body(tmp_path / "exec.log")


def test_async_cancel_event_gives_killed(server: ForkServer, tmp_path: Path) -> None:
    script = tmp_path / "hang.py"
    script.write_text(GROUP_SCRIPT)
    spec = spec_for(script, tmp_path / "hang.log", timeout_s=None)

    async def main() -> ProcResult:
        cancel = asyncio.Event()
        task = asyncio.create_task(run_async(spec, cancel, forkserver=server))
        await await_for((tmp_path / "started").exists)
        cancel.set()
        return await asyncio.wait_for(task, DEADLINE_S)

    before = server.forked
    res = asyncio.run(main())
    assert (res.status, res.signal) == ("killed", signal.SIGTERM)
    assert server.forked == before + 1
    assert wait_for(lambda: group_dead(read_pid(tmp_path / "pid")))


def test_async_task_cancellation_stops_the_group(server: ForkServer, tmp_path: Path) -> None:
    script = tmp_path / "hang.py"
    script.write_text(GROUP_SCRIPT)
    spec = spec_for(script, tmp_path / "hang.log", timeout_s=None)

    async def main() -> None:
        task = asyncio.create_task(run_async(spec, forkserver=server))
        await await_for((tmp_path / "started").exists)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, DEADLINE_S)

    before = server.forked
    asyncio.run(main())
    assert server.forked == before + 1
    assert wait_for(lambda: group_dead(read_pid(tmp_path / "pid")))


def test_async_pgid_file_lets_end_leftovers_find_a_forked_run(
    server: ForkServer, tmp_path: Path
) -> None:
    """After a daemon crash a forked main process is found by ``<record>.pgid``: its /proc
    environ is the server's, without the run's THOT_RECORD."""
    record = str(tmp_path / "run.log.record")
    script = tmp_path / "hang.py"
    script.write_text("import os, time\nopen('started', 'w').close()\ntime.sleep(100)\n")
    spec = spec_for(script, tmp_path / "hang.log", timeout_s=None, env=run_env(THOT_RECORD=record))
    pgid_file = Path(record + PGID_SUFFIX)

    async def main() -> tuple[ProcResult, int, int]:
        task = asyncio.create_task(run_async(spec, forkserver=server))
        await await_for((tmp_path / "started").exists)
        pgid = int(pgid_file.read_text().split()[0])
        assert f"THOT_RECORD={record}".encode() not in Path(f"/proc/{pgid}/environ").read_bytes()
        ended = await asyncio.to_thread(end_leftovers, [record], 5.0)
        return await asyncio.wait_for(task, DEADLINE_S), pgid, ended

    before = server.forked
    res, pgid, ended = asyncio.run(main())
    assert server.forked == before + 1
    assert ended == 1
    assert (res.status, res.signal) == ("failed", signal.SIGTERM)
    assert wait_for(lambda: group_dead(pgid))
    assert not pgid_file.exists()


def test_async_pgid_file_removed_after_a_normal_run(server: ForkServer, tmp_path: Path) -> None:
    record = str(tmp_path / "run.log.record")
    script = tmp_path / "s.py"
    # The daemon writes the file right after the fork, while the script may already run.
    script.write_text(
        "import os, time\npath = os.environ['THOT_RECORD'] + '.pgid'\n"
        "end = time.monotonic() + 10\n"
        "while not os.path.exists(path) and time.monotonic() < end:\n"
        "    time.sleep(0.005)\n"
        "print(open(path).read().split()[0] == str(os.getpid()))\n"
    )
    res = run_async_forked(
        server, spec_for(script, tmp_path / "s.log", env=run_env(THOT_RECORD=record))
    )
    assert res.status == "ok", log_body(tmp_path / "s.log")
    assert log_body(tmp_path / "s.log") == "True\n"  # the main process's own group
    assert not Path(record + PGID_SUFFIX).exists()


def test_async_server_not_ready_takes_the_exec_path(tmp_path: Path) -> None:
    fs = ForkServer.start(base_env())
    try:
        script = tmp_path / "s.py"
        script.write_text("import sys\nprint('thot.thot' in sys.modules)\n")
        assert not fs.ready()  # still booting: not waited for on the loop
        res = asyncio.run(run_async(spec_for(script, tmp_path / "s.log"), forkserver=fs))
        assert res.status == "ok"
        assert log_body(tmp_path / "s.log") == "False\n"
        assert fs.forked == 0
    finally:
        fs.close()
