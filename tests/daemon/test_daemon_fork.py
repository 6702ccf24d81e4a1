"""The daemon forks Python scripts from its fork server (``[pool] fork``), and a forked run
left behind by a crashed daemon is ended at the next start like an exec'd one."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from corekit import wait_for
from daemonkit import Daemon

#: Writes whether the library was loaded before the script imported anything: only a
#: forked run has it (the server preimported it), then its pid.
PROBE = (
    "import sys\nforked = 'thot.thot' in sys.modules\nimport os, time\n"
    "open(os.environ['MARK'], 'a').write(f'{os.getpid()} {forked}\\n')\n"
)


def _probe_project(daemon: Daemon, gs: Path, body: str = "") -> Path:
    (gs.parent / "analysis" / "probe.py").write_text(PROBE + body)
    (gs / "_scripts.json").write_text(json.dumps([{"script": "root:/../analysis/probe.py"}]))
    marker = gs.parent / "marker"
    daemon.env["MARK"] = str(marker)
    return marker


def _lines(marker: Path) -> list[tuple[int, str]]:
    if not marker.exists():
        return []
    return [(int(p), f) for p, f in (line.split() for line in marker.read_text().splitlines())]


def _alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie waiting for init to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] not in (b"Z", b"X")


def test_daemon_forks_python_scripts(daemon: Daemon, gs: Path) -> None:
    marker = _probe_project(daemon, gs)
    daemon.start()
    # The server boots while the daemon starts; the first runs may be exec'd meanwhile.
    wait_for(lambda: daemon.ctl_json("status")["fork"]["ready"], 60, "the fork server")
    assert daemon.ctl("add", str(gs)).returncode == 0
    daemon.wait_quiet()
    assert [f for _, f in _lines(marker)] == ["True"]
    fork = daemon.ctl_json("status")["fork"]
    assert fork["enabled"] and fork["forked"] >= 1
    assert fork["refused"] == 0, fork["last_refusal"]  # the server's env is the runs' base
    assert {r["status"] for r in daemon.runs()} == {"ok"}


def test_a_forked_script_is_known_as_the_daemons_own_by_the_control_socket(
        daemon: Daemon, gs: Path) -> None:
    """The socket keeps a script's idle connection (it may compute for hours between two
    queries) when the peer's /proc environ names the socket; a forked script's shows the
    fork server's start environment, which must name it too."""
    marker = _probe_project(daemon, gs, (
        "from thotd.service.control import _is_script_of\n"
        "open(os.environ['MARK'], 'a').write(\n"
        "    f\"{os.getpid()} {_is_script_of(os.getpid(), os.environ['THOTD_QUERY_SOCKET'])}\\n\")\n"))
    daemon.start()
    wait_for(lambda: daemon.ctl_json("status")["fork"]["ready"], 60, "the fork server")
    assert daemon.ctl("add", str(gs)).returncode == 0
    daemon.wait_quiet()
    assert [f for _, f in _lines(marker)] == ["True", "True"]  # forked, and known as ours


def test_fork_false_execs_every_script(daemon: Daemon, gs: Path) -> None:
    marker = _probe_project(daemon, gs)
    daemon.config.write_text("[daemon]\nsettle_ms = 50\n[pool]\nworkers = 2\nfork = false\n")
    daemon.start()
    assert daemon.ctl("add", str(gs)).returncode == 0
    daemon.wait_quiet()
    assert [f for _, f in _lines(marker)] == ["False"]
    fork = daemon.ctl_json("status")["fork"]
    assert (fork["enabled"], fork["ready"], fork["forked"]) == (False, False, 0)


def test_kill9_during_a_forked_run_ends_it_and_runs_it_again(daemon: Daemon, gs: Path) -> None:
    marker = _probe_project(daemon, gs, "time.sleep(60)\n")
    daemon.start()
    wait_for(lambda: daemon.ctl_json("status")["fork"]["ready"], 60, "the fork server")
    assert daemon.ctl("add", str(gs)).returncode == 0
    ((old_pid, forked),) = wait_for(lambda: _lines(marker), 60, "the slow script to start")
    assert forked == "True"  # its /proc environ is the server's: no THOT_RECORD to find
    daemon.kill9()
    assert _alive(old_pid)  # the script outlives its daemon ...
    daemon.config.write_text("[daemon]\nsettle_ms = 50\n[pool]\nworkers = 2\ntimeout_s = 2\n")
    daemon.start()
    wait_for(lambda: not _alive(old_pid), 30, "the cut-off run's process to be ended")
    wait_for(lambda: len(_lines(marker)) == 2, 60, "the interrupted run to start again")
    daemon.wait_quiet()
    (new_pid, _) = _lines(marker)[1]
    assert new_pid != old_pid
    slow = sorted(daemon.runs(), key=lambda r: r["id"])
    assert slow[-1]["status"] == "timeout"
    assert any("interrupted" in " ".join(r["reasons"]) for r in slow)


def _change(script: Path) -> None:
    script.write_text(script.read_text() + "# changed\n")


def test_a_dead_fork_server_is_replaced(daemon: Daemon, gs: Path) -> None:
    marker = _probe_project(daemon, gs)
    probe = gs.parent / "analysis" / "probe.py"
    daemon.start()
    wait_for(lambda: daemon.ctl_json("status")["fork"]["ready"], 60, "the fork server")
    assert daemon.ctl("add", str(gs)).returncode == 0
    daemon.wait_quiet()
    old = daemon.ctl_json("status")["fork"]["server_pid"]
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not daemon.ctl_json("status")["fork"]["ready"], 30, "the server's death")
    _change(probe)  # this run finds it dead: a new one starts, the run is exec'd meanwhile
    wait_for(lambda: len(_lines(marker)) == 2, 60, "the run after the crash")
    daemon.wait_quiet()
    fork = wait_for(lambda: (f := daemon.ctl_json("status")["fork"])["ready"] and f, 60,
                    "a new fork server")
    assert fork["server_pid"] != old
    _change(probe)
    wait_for(lambda: len(_lines(marker)) == 3, 60, "the next run")
    daemon.wait_quiet()
    assert [f for _, f in _lines(marker)] == ["True", "False", "True"]
    assert {r["status"] for r in daemon.runs()} == {"ok"}


def test_reload_with_fork_false_stops_the_server(daemon: Daemon, gs: Path) -> None:
    marker = _probe_project(daemon, gs)
    probe = gs.parent / "analysis" / "probe.py"
    daemon.start()
    server = wait_for(lambda: daemon.ctl_json("status")["fork"]["server_pid"], 60, "a server")
    daemon.config.write_text("[daemon]\nsettle_ms = 50\n[pool]\nworkers = 2\nfork = false\n")
    assert daemon.ctl_json("reload")["reloaded"]
    fork = daemon.ctl_json("status")["fork"]
    assert (fork["enabled"], fork["server_pid"]) == (False, None)
    wait_for(lambda: not _alive(server), 30, "the fork server to exit")
    assert daemon.ctl("add", str(gs)).returncode == 0
    daemon.wait_quiet()
    _change(probe)
    wait_for(lambda: len(_lines(marker)) == 2, 60, "the second run")
    daemon.wait_quiet()
    assert [f for _, f in _lines(marker)] == ["False", "False"]
