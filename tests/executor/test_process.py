"""Tests for thotd.executor.process with real scripts in tmp_path.

Nothing here sleeps and hopes: every wait polls a condition against a deadline, and the
timeouts under test are 1 s with a 0.5 s grace so the file runs in a few seconds.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import stat
import sys
import threading
import time
from pathlib import Path

import pytest
from corekit import group_dead, wait_for

from thotd.executor.process import ProcResult, RunSpec, run_async, run_sync, script_env

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process groups, /proc")

DEADLINE_S = 10.0  # generous: only reached when something is broken


def group_gone(pgid: int) -> bool:
    """True once no process of the group exists at all, zombies included.

    The strictest check, but a killed orphan stays a zombie until init reaps it, which
    some inits do only every second or two; so only one test pays for it.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def write_script(path: Path, text: str, executable: bool = False) -> Path:
    """Write a script file, optionally with the executable bit."""
    path.write_text(text)
    if executable:
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def make_spec(tmp_path: Path, script: Path, **kw: object) -> RunSpec:
    """A RunSpec with test-friendly defaults (short grace, log in tmp_path)."""
    fields: dict[str, object] = {
        "script": script,
        "cwd": tmp_path,
        "env": script_env(os.environ, {}),
        "log_path": tmp_path / "logs" / "run.log",
        "timeout_s": 10.0,
        "log_cap_bytes": 1 << 20,
        "grace_s": 0.5,
    }
    fields.update(kw)
    return RunSpec(**fields)  # type: ignore[arg-type]


def read_pid(path: Path) -> int:
    """Wait for a script to publish its pid (= its process group id) and return it."""
    assert wait_for(lambda: path.exists() and path.read_text().strip().isdigit())
    return int(path.read_text().strip())


# -- outcomes ------------------------------------------------------------------------------


def test_ok_writes_header_and_output(tmp_path: Path) -> None:
    script = write_script(
        tmp_path / "ok.py", "import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\n"
    )
    spec = make_spec(tmp_path, script)
    res = run_sync(spec)
    assert (res.status, res.exit_code, res.signal) == ("ok", 0, None)
    assert res.finished >= res.started and res.duration_s >= 0
    log = spec.log_path.read_text()
    assert log.startswith(f"# thotd run: {script} in {tmp_path} at ")
    assert "to stdout" in log and "to stderr" in log


def test_failing_exit_code(tmp_path: Path) -> None:
    script = write_script(tmp_path / "fail.sh", "echo failing\nexit 3\n")
    res = run_sync(make_spec(tmp_path, script))
    assert (res.status, res.exit_code, res.message) == ("failed", 3, "exit code 3")


def test_death_by_signal_is_named(tmp_path: Path) -> None:
    script = write_script(tmp_path / "segv.sh", "kill -SEGV $$\n")
    res = run_sync(make_spec(tmp_path, script))
    assert (res.status, res.exit_code, res.signal) == ("failed", None, signal.SIGSEGV)
    assert "SIGSEGV" in res.message
    assert not list(tmp_path.glob("core*"))  # RLIMIT_CORE=0


def test_sh_runs_with_bash(tmp_path: Path) -> None:
    # No shebang, not executable, bash-only syntax: only `bash file` can run it.
    script = write_script(
        tmp_path / "b.sh", '[[ -n "$BASH_VERSION" ]] && echo "bash=$BASH_VERSION"\n'
    )
    spec = make_spec(tmp_path, script)
    res = run_sync(spec)
    assert res.status == "ok", spec.log_path.read_text()
    assert "bash=" in spec.log_path.read_text()


def test_executable_with_shebang_runs_directly(tmp_path: Path) -> None:
    script = write_script(tmp_path / "tool", "#!/bin/sh\necho direct\n", executable=True)
    spec = make_spec(tmp_path, script)
    assert run_sync(spec).status == "ok"
    assert "direct" in spec.log_path.read_text()


def test_cwd_is_honoured(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    script = write_script(
        tmp_path / "cwd.py", "import os\nopen('here.txt', 'w').write(os.getcwd())\n"
    )
    res = run_sync(make_spec(tmp_path, script, cwd=work))
    assert res.status == "ok"
    assert (work / "here.txt").read_text() == str(work)


def run_env_dump(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """Run a shell script that dumps its environment; return it as a dict.

    A shell, not Python: a Python script's own start-up would coerce the C locale and add
    ``LC_CTYPE`` itself, hiding whether the trampoline leaked it.
    """
    script = write_script(tmp_path / "env.sh", "env > env.txt\n")
    spec = make_spec(tmp_path, script, env=env)
    assert run_sync(spec).status == "ok", spec.log_path.read_text()
    lines = (tmp_path / "env.txt").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_env_has_thot_vars_and_no_notify_socket(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    base |= {"NOTIFY_SOCKET": "/run/user/0/systemd/notify", "WATCHDOG_USEC": "5000", "LANG": "C"}
    seen = run_env_dump(tmp_path, script_env(base, {"THOT_PROJECT": str(tmp_path)}))
    assert seen["THOT_PROJECT"] == str(tmp_path)
    assert "NOTIFY_SOCKET" not in seen and "WATCHDOG_USEC" not in seen
    # The trampoline's interpreter coerces the C locale (PEP 538); that must not leak.
    assert "LC_CTYPE" not in seen


def test_env_keeps_explicit_lc_ctype(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    seen = run_env_dump(tmp_path, script_env(base, {"LC_CTYPE": "C"}))
    assert seen["LC_CTYPE"] == "C"


def test_no_signals_ignored_in_script(tmp_path: Path) -> None:
    # Python ignores SIGPIPE/SIGXFSZ at start-up; ignored dispositions survive exec, so the
    # trampoline must reset them or `yes | head` would fail with "Broken pipe" errors.
    script = write_script(tmp_path / "sig.sh", "grep SigIgn /proc/self/status\nyes | head -n1\n")
    spec = make_spec(tmp_path, script)
    assert run_sync(spec).status == "ok"
    log = spec.log_path.read_text()
    assert "SigIgn:\t0000000000000000" in log
    assert "Broken pipe" not in log


# -- errors ------------------------------------------------------------------------------


def test_non_executable_unknown_extension_is_error(tmp_path: Path) -> None:
    script = write_script(tmp_path / "job.txt", "echo hi\n")
    spec = make_spec(tmp_path, script)
    res = run_sync(spec)
    assert res.status == "error" and res.exit_code is None
    assert "is not executable; chmod +x it" in res.message
    assert "is not executable" in spec.log_path.read_text()  # users look in the log


def test_missing_script_is_error(tmp_path: Path) -> None:
    res = run_sync(make_spec(tmp_path, tmp_path / "gone.py"))
    assert res.status == "error" and "gone.py" in res.message


def test_missing_cwd_is_error(tmp_path: Path) -> None:
    script = write_script(tmp_path / "ok.py", "")
    res = run_sync(make_spec(tmp_path, script, cwd=tmp_path / "nowhere"))
    assert res.status == "error" and "nowhere" in res.message


def test_unopenable_log_is_error(tmp_path: Path) -> None:
    script = write_script(tmp_path / "ok.py", "")
    (tmp_path / "file").write_text("")
    res = run_sync(make_spec(tmp_path, script, log_path=tmp_path / "file" / "run.log"))
    assert res.status == "error" and "cannot open log" in res.message


def test_exec_failure_is_error_not_exit_127(tmp_path: Path) -> None:
    # Executable, but its interpreter does not exist: execve fails inside the trampoline.
    script = write_script(tmp_path / "tool", "#!/nonexistent/interp\n", executable=True)
    spec = make_spec(tmp_path, script)
    res = run_sync(spec)
    assert res.status == "error", res
    assert "cannot execute" in res.message and "No such file" in res.message
    assert "cannot execute" in spec.log_path.read_text()


# -- timeouts, leftovers, cancel -------------------------------------------------------

GROUP_SCRIPT = """\
{trap}
echo $$ > pid
sleep 1000 &
sleep 1000 &
echo started > started
wait
"""


def test_timeout_kills_whole_group(tmp_path: Path) -> None:
    script = write_script(tmp_path / "hang.sh", GROUP_SCRIPT.format(trap=""))
    t0 = time.monotonic()
    res = run_sync(make_spec(tmp_path, script, timeout_s=1.0))
    assert time.monotonic() - t0 < 1.0 + 0.5 + 2.0
    assert res.status == "timeout" and "timed out" in res.message
    assert (tmp_path / "started").exists()  # the grandchildren had been started
    pgid = read_pid(tmp_path / "pid")
    assert wait_for(lambda: group_gone(pgid)), "processes of the run are left"


def test_timeout_escalates_to_sigkill(tmp_path: Path) -> None:
    # The script and its sleeps ignore SIGTERM: only the SIGKILL after grace_s stops them.
    script = write_script(tmp_path / "stubborn.sh", GROUP_SCRIPT.format(trap="trap '' TERM"))
    res = run_sync(make_spec(tmp_path, script, timeout_s=1.0, grace_s=0.5))
    assert res.status == "timeout" and res.signal == signal.SIGKILL
    pgid = read_pid(tmp_path / "pid")
    assert wait_for(lambda: group_dead(pgid))


def test_fork_and_exit_returns_promptly(tmp_path: Path) -> None:
    script = write_script(tmp_path / "bg.sh", "echo $$ > pid\nsleep 100 &\nexit 0\n")
    t0 = time.monotonic()
    res = run_sync(make_spec(tmp_path, script, timeout_s=None, grace_s=5.0))
    assert res.status == "ok"
    # Neither the leftover's 100 s, nor the 5 s grace, nor init's lazy reaping of zombies.
    assert time.monotonic() - t0 < 1.5
    pgid = read_pid(tmp_path / "pid")
    assert wait_for(lambda: group_dead(pgid)), "leftover child was not killed"


def test_leftover_ignoring_term_is_killed_after_grace(tmp_path: Path) -> None:
    script = write_script(
        tmp_path / "bg.sh", "echo $$ > pid\n(trap '' TERM; sleep 100) &\nexit 0\n"
    )
    t0 = time.monotonic()
    res = run_sync(make_spec(tmp_path, script, timeout_s=None, grace_s=0.5))
    assert res.status == "ok" and res.duration_s < 2.0
    assert time.monotonic() - t0 < 0.5 + 3.0
    pgid = read_pid(tmp_path / "pid")
    assert wait_for(lambda: group_dead(pgid))


def test_sync_cancel_from_other_thread(tmp_path: Path) -> None:
    script = write_script(tmp_path / "hang.sh", GROUP_SCRIPT.format(trap=""))
    cancel = threading.Event()
    results: list[ProcResult] = []
    worker = threading.Thread(
        target=lambda: results.append(run_sync(make_spec(tmp_path, script, timeout_s=None), cancel))
    )
    worker.start()
    assert wait_for(lambda: (tmp_path / "started").exists())
    cancel.set()
    worker.join(DEADLINE_S)
    assert not worker.is_alive()
    assert results[0].status == "killed"
    assert wait_for(lambda: group_dead(read_pid(tmp_path / "pid")))


# -- log cap -----------------------------------------------------------------------------


def test_log_is_capped_and_noted(tmp_path: Path) -> None:
    cap = 64 * 1024
    script = write_script(
        tmp_path / "chatty.py",
        "import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range(20_000):\n    sys.stdout.write(line)\n",
    )
    spec = make_spec(tmp_path, script, log_cap_bytes=cap)
    res = run_sync(spec)
    assert res.status == "ok"  # a chatty script is not punished for its log
    assert res.log_truncated and "log truncated" in res.message
    data = spec.log_path.read_bytes()
    assert len(data) <= cap + 200
    assert data.startswith(b"# thotd run:")
    assert data.rstrip().endswith(b"further output was discarded")


def test_log_cap_does_not_limit_other_files(tmp_path: Path) -> None:
    # Why the cap is not RLIMIT_FSIZE: a result file may legitimately be big.
    script = write_script(tmp_path / "big.py", "open('out.bin', 'wb').write(b'0' * (2 << 20))\n")
    res = run_sync(make_spec(tmp_path, script, log_cap_bytes=4096))
    assert res.status == "ok"
    assert (tmp_path / "out.bin").stat().st_size == 2 << 20


def test_max_file_bytes_gives_efbig_not_a_signal(tmp_path: Path) -> None:
    script = write_script(
        tmp_path / "big.py",
        "import sys\ntry:\n    open('out.bin', 'wb').write(b'0' * (2 << 20))\n"
        "except OSError as e:\n    print('errno', e.errno)\n    sys.exit(4)\n",
    )
    spec = make_spec(tmp_path, script, max_file_bytes=1 << 20)
    res = run_sync(spec)
    assert (res.status, res.exit_code) == ("failed", 4), spec.log_path.read_text()
    assert f"errno {errno.EFBIG}" in spec.log_path.read_text()


def test_max_open_files(tmp_path: Path) -> None:
    script = write_script(
        tmp_path / "nofile.py",
        "import resource\nprint('nofile', resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n",
    )
    spec = make_spec(tmp_path, script, max_open_files=64)
    assert run_sync(spec).status == "ok"
    assert "nofile 64" in spec.log_path.read_text()


# -- async -------------------------------------------------------------------------------


def test_async_ok_and_failed(tmp_path: Path) -> None:
    ok = write_script(tmp_path / "ok.sh", "echo fine\n")
    bad = write_script(tmp_path / "bad.sh", "exit 5\n")

    async def main() -> tuple[ProcResult, ProcResult]:
        return await asyncio.gather(
            run_async(make_spec(tmp_path, ok, log_path=tmp_path / "ok.log")),
            run_async(make_spec(tmp_path, bad, log_path=tmp_path / "bad.log")),
        )

    r_ok, r_bad = asyncio.run(main())
    assert r_ok.status == "ok" and "fine" in (tmp_path / "ok.log").read_text()
    assert (r_bad.status, r_bad.exit_code) == ("failed", 5)


def test_async_timeout(tmp_path: Path) -> None:
    script = write_script(tmp_path / "hang.sh", GROUP_SCRIPT.format(trap=""))
    res = asyncio.run(run_async(make_spec(tmp_path, script, timeout_s=1.0)))
    assert res.status == "timeout"
    assert wait_for(lambda: group_dead(read_pid(tmp_path / "pid")))


def test_async_cancel_kills_group(tmp_path: Path) -> None:
    script = write_script(tmp_path / "hang.sh", GROUP_SCRIPT.format(trap=""))

    async def main() -> ProcResult:
        cancel = asyncio.Event()
        task = asyncio.create_task(run_async(make_spec(tmp_path, script, timeout_s=None), cancel))
        end = time.monotonic() + DEADLINE_S
        while not (tmp_path / "started").exists():
            assert time.monotonic() < end, "script did not start"
            await asyncio.sleep(0.02)
        cancel.set()
        return await asyncio.wait_for(task, DEADLINE_S)

    res = asyncio.run(main())
    assert res.status == "killed" and res.signal == signal.SIGTERM
    assert wait_for(lambda: group_dead(read_pid(tmp_path / "pid")))


def test_async_task_cancellation_stops_group(tmp_path: Path) -> None:
    script = write_script(tmp_path / "hang.sh", GROUP_SCRIPT.format(trap=""))

    async def main() -> None:
        task = asyncio.create_task(run_async(make_spec(tmp_path, script, timeout_s=None)))
        end = time.monotonic() + DEADLINE_S
        while not (tmp_path / "started").exists():
            assert time.monotonic() < end, "script did not start"
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert wait_for(lambda: group_dead(read_pid(tmp_path / "pid")))


def test_cancelling_a_run_during_its_timeout_grace_kills_at_once(tmp_path: Path) -> None:
    """A stop under way (timeout, long grace, TERM ignored) that is interrupted goes
    straight to SIGKILL: the caller is not held for the rest of the grace."""
    script = write_script(
        tmp_path / "stubborn.py",
        "import os, signal, time\n"
        "def noted(*_):\n"
        "    open('got-term', 'w').close()\n"
        "signal.signal(signal.SIGTERM, noted)\n"
        "open('pid', 'w').write(str(os.getpid()))\n"
        "time.sleep(100)\n"
        "time.sleep(100)\n",
    )
    grace = 60.0

    async def main() -> float:
        # The timeout must come after the script's handler is in place: 0.2 s was less than
        # a loaded machine takes to start Python, and SIGTERM then ended it outright.
        spec = make_spec(tmp_path, script, timeout_s=3.0, grace_s=grace)
        task = asyncio.create_task(run_async(spec))
        end = time.monotonic() + DEADLINE_S
        while not (tmp_path / "got-term").exists():  # timed out: the grace has begun
            assert time.monotonic() < end, "the timeout's SIGTERM never came"
            await asyncio.sleep(0.02)
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - t0

    assert asyncio.run(main()) < DEADLINE_S < grace
    assert wait_for(lambda: group_dead(read_pid(tmp_path / "pid")))
