"""End to end: a real thotd process, real folders, real watchdog events, a real socket."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

from corekit import add_sample, wait_for
from daemonkit import Daemon


def _runs_by_script(runs: list[dict]) -> list[tuple[str, str]]:
    return sorted((os.path.basename(r["script"]), os.path.basename(r["container"])) for r in runs)


def _register(daemon: Daemon, project: Path) -> None:
    res = daemon.ctl("add", str(project))
    assert res.returncode == 0, res.stderr
    res = daemon.ctl("wait", "--timeout", "120", timeout=150)
    assert res.returncode == 0, f"not quiet: {res.stdout} {res.stderr}\n{daemon.output()[-3000:]}"


def test_not_running_exit_code_3(daemon: Daemon) -> None:
    res = daemon.ctl("status")
    assert res.returncode == 3
    assert "thotd start" in res.stderr


def test_register_runs_everything_once_then_nothing(daemon: Daemon, gs: Path) -> None:
    daemon.start()
    _register(daemon, gs)
    runs = daemon.runs()
    assert len(runs) == 4 + 2 + 1
    assert {r["status"] for r in runs} == {"ok"}
    summary = gs / "summary" / "summary.txt"
    assert summary.exists()
    # Quiet again: nothing stale, so a reconcile queues nothing and nothing runs.
    daemon.ctl_json("reconcile")
    daemon.wait_quiet()
    assert len(daemon.runs()) == 7


def test_new_sample_runs_exactly_its_chain(daemon: Daemon, gs: Path) -> None:
    daemon.start()
    _register(daemon, gs)
    before = {r["id"] for r in daemon.runs()}
    summary = gs / "summary" / "summary.txt"
    old = summary.read_text()
    add_sample(gs, "group-0", "sample-009", pause=0.02)
    daemon.wait_quiet()
    new = [r for r in daemon.runs() if r["id"] not in before]
    assert _runs_by_script(new) == [
        ("group.py", "group-0"), ("sample.py", "sample-009"), ("summary.py", "project"),
    ]
    assert all(r["status"] == "ok" for r in new)
    assert summary.read_text() != old
    # Producer before consumer: sample, then group, then summary.
    order = [os.path.basename(r["script"]) for r in sorted(new, key=lambda r: r["id"])]
    assert order == ["sample.py", "group.py", "summary.py"]


def test_touch_and_identical_rewrite_run_nothing(daemon: Daemon, gs: Path) -> None:
    daemon.start()
    _register(daemon, gs)
    n = len(daemon.runs())
    data = gs / "group-1" / "sample-001" / "raw" / "data.csv"
    data.touch()
    data.write_bytes(data.read_bytes())
    daemon.wait_quiet()
    assert len(daemon.runs()) == n


def test_changed_data_reruns_chain(daemon: Daemon, gs: Path) -> None:
    daemon.start()
    _register(daemon, gs)
    before = {r["id"] for r in daemon.runs()}
    data = gs / "group-1" / "sample-001" / "raw" / "data.csv"
    data.write_text(data.read_text() + "42.0\n")
    daemon.wait_quiet()
    new = [r for r in daemon.runs() if r["id"] not in before]
    assert _runs_by_script(new) == [
        ("group.py", "group-1"), ("sample.py", "sample-001"), ("summary.py", "project"),
    ]


def test_broken_object_file_blocks_then_fix_resumes(daemon: Daemon, gs: Path) -> None:
    daemon.start()
    _register(daemon, gs)
    n = len(daemon.runs())
    asset = gs / "group-0" / "sample-000" / "raw" / "_asset.json"
    good = asset.read_text()
    asset.write_text('{"type": "raw", "file": ')
    wait_for(lambda: daemon.ctl_json("status")["projects"][0]["invalid"], 30, "invalid file in status")
    daemon.wait_quiet()
    st = daemon.ctl_json("status")["projects"][0]
    assert st["invalid"][0]["file"] == str(asset)
    assert st["invalid"][0]["line"] == 1
    blocked = {os.path.basename(b["container"]) for b in st["blocked"]}
    assert blocked == {"sample-000", "group-0", "project"}
    assert len(daemon.runs()) == n  # nothing ran on garbage
    asset.write_text(good.replace('"raw"', '"raw", "note": "fixed"', 1))
    wait_for(lambda: not daemon.ctl_json("status")["projects"][0]["invalid"], 30, "fix noticed")
    daemon.wait_quiet()
    assert not daemon.ctl_json("status")["projects"][0]["blocked"]
    new = daemon.runs()[: len(daemon.runs()) - n]
    assert ("sample.py", "sample-000") in _runs_by_script(new)


def test_failing_script_shows_in_status_with_log(daemon: Daemon, gs: Path) -> None:
    analysis = gs.parent / "analysis"
    (analysis / "broken.py").write_text("import sys\nprint('about to fail')\nsys.exit(3)\n")
    scripts = gs / "group-1" / "_scripts.json"
    scripts.write_text(json.dumps([{"script": "root:/../analysis/group.py"},
                                   {"script": "root:/../analysis/broken.py", "priority": 5}]))
    daemon.start()
    _register(daemon, gs)
    st = daemon.ctl_json("status")["projects"][0]
    fail = [f for f in st["failures"] if f["script"].endswith("broken.py")]
    assert fail and fail[0]["exit_code"] == 3
    assert "about to fail" in "\n".join(fail[0]["tail"])
    run = next(r for r in daemon.runs() if r["script"].endswith("broken.py"))
    log = daemon.ctl("logs", str(run["id"]))
    assert log.returncode == 0 and "about to fail" in log.stdout
    # The rest of the project still ran.
    assert (gs / "summary" / "summary.txt").exists()


def test_restart_runs_only_what_went_stale(daemon: Daemon, gs: Path) -> None:
    daemon.start()
    _register(daemon, gs)
    assert daemon.stop() == 0
    data = gs / "group-0" / "sample-001" / "raw" / "data.csv"
    data.write_text(data.read_text() + "7.5\n")
    daemon.start()
    daemon.wait_quiet()
    runs = daemon.runs()
    newest = sorted(runs, key=lambda r: r["id"])[-3:]
    assert _runs_by_script(newest) == [
        ("group.py", "group-0"), ("sample.py", "sample-001"), ("summary.py", "project"),
    ]
    assert len(runs) == 10


def test_kill9_leaves_stale_socket_that_next_start_replaces(daemon: Daemon, gs: Path) -> None:
    daemon.start()
    _register(daemon, gs)
    daemon.kill9()
    assert daemon.socket.exists()  # left behind by the killed daemon
    daemon.start()
    assert daemon.ctl("status").returncode == 0
    assert oct(daemon.socket.stat().st_mode & 0o777) == "0o600"


def test_second_instance_refused(daemon: Daemon) -> None:
    daemon.start()
    second = daemon.start(check=False)
    assert second.wait(60) == 1
    assert "already running" in daemon.output().lower()


def test_pause_holds_runs_and_resume_releases(daemon: Daemon, gs: Path) -> None:
    daemon.start()
    _register(daemon, gs)
    n = len(daemon.runs())
    assert daemon.ctl("pause").returncode == 0
    data = gs / "group-1" / "sample-000" / "raw" / "data.csv"
    data.write_text(data.read_text() + "1.0\n")
    wait_for(lambda: daemon.ctl_json("status")["projects"][0]["queued"], 30, "queued while paused")
    assert len(daemon.runs()) == n
    assert daemon.ctl("resume").returncode == 0
    daemon.wait_quiet()
    assert len(daemon.runs()) == n + 3


def test_daemon_queries_equal_local_queries(daemon: Daemon, gs: Path) -> None:
    """A script run by the daemon gets the same objects as when it walks the disk."""
    analysis = gs.parent / "analysis"
    (analysis / "dump.py").write_text(
        "import json, os\nfrom thot import ThotProject\n"
        "db = ThotProject()\n"
        "out = {'assets': db.find_assets({'type': 'raw'}),"
        " 'containers': db.find_containers({'metadata.group': {'$gte': 0}}),"
        " 'mode': bool(os.environ.get('THOTD_QUERY_SOCKET'))}\n"
        "open(os.environ['DUMP'], 'w').write(json.dumps(out, sort_keys=True))\n"
    )
    group = gs / "group-0"
    (group / "_scripts.json").write_text(json.dumps(
        [{"script": "root:/../analysis/group.py"}, {"script": "root:/../analysis/dump.py", "priority": 9}]))
    daemon.env["DUMP"] = str(gs.parent / "daemon.json")
    daemon.start()
    _register(daemon, gs)
    remote = json.loads((gs.parent / "daemon.json").read_text())
    assert remote.pop("mode") is True
    env = {**os.environ, "THOT_CONTAINER_ID": str(group), "DUMP": str(gs.parent / "local.json")}
    env.pop("THOTD_QUERY_SOCKET", None)
    subprocess.run([sys.executable, str(analysis / "dump.py")], env=env, check=True, cwd=group)
    local = json.loads((gs.parent / "local.json").read_text())
    assert local.pop("mode") is False
    assert remote == local
    assert len(remote["assets"]) == 2


def test_moved_and_deleted_samples(daemon: Daemon, gs: Path) -> None:
    daemon.start()
    _register(daemon, gs)
    def runs_since(before: set[str]) -> list[tuple[str, str]]:
        return _runs_by_script([r for r in daemon.runs() if r["id"] not in before])

    # "quiet" alone could be seen before a loaded machine delivers the events: wait for the
    # summary's run first (it comes last), then for quiet, then look at everything that ran.
    before = {r["id"] for r in daemon.runs()}
    shutil.move(str(gs / "group-0" / "sample-001"), str(gs / "group-1" / "sample-001b"))
    wait_for(lambda: ("summary.py", "project") in runs_since(before), 60, "the summary to rerun")
    daemon.wait_quiet()
    ran = runs_since(before)
    assert ("group.py", "group-0") in ran and ("group.py", "group-1") in ran
    assert ("sample.py", "sample-001b") in ran
    summary = (gs / "summary" / "summary.txt").read_text()
    before = {r["id"] for r in daemon.runs()}
    shutil.rmtree(gs / "group-1" / "sample-001b")
    wait_for(lambda: ("summary.py", "project") in runs_since(before), 60, "the summary to rerun")
    daemon.wait_quiet()
    new = [r for r in daemon.runs() if r["id"] not in before]
    assert _runs_by_script(new) == [("group.py", "group-1"), ("summary.py", "project")]
    assert (gs / "summary" / "summary.txt").read_text() != summary


def test_systemd_notify_ready_after_socket(daemon: Daemon, gs: Path, tmp_path: Path) -> None:
    path = Path(daemon.env["XDG_RUNTIME_DIR"]) / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(60)
    daemon.env["NOTIFY_SOCKET"] = str(path)
    try:
        daemon.start(check=False)
        messages = []
        while not any(b"READY=1" in m for m in messages):
            messages.append(sock.recv(4096))
        # READY is sent only once the socket answers.
        assert daemon.ctl("status").returncode == 0
        assert any(b"STATUS=" in m for m in messages)
    finally:
        sock.close()
    assert daemon.stop() == 0


def test_reload_with_bad_config_keeps_old_and_a_good_one_applies(daemon: Daemon) -> None:
    daemon.start()
    daemon.config.write_text("[pool]\nworkerz = 3\n")
    res = daemon.ctl("reload", "--wait")
    assert res.returncode == 1 and "workerz" in (res.stdout + res.stderr)
    assert daemon.ctl_json("status")["workers"] == 2
    daemon.config.write_text("[pool]\nworkers = 1\n[daemon]\nsettle_ms = 250\n")
    assert daemon.ctl_json("status")["settle_ms"] == 50
    assert daemon.ctl("reload", "--wait").returncode == 0
    status = daemon.ctl_json("status")
    assert status["workers"] == 1
    assert status["settle_ms"] == 250  # read back from the running watcher, not the config


def test_remove_during_a_run_stops_it_and_ends_its_history(daemon: Daemon, gs: Path) -> None:
    analysis = gs.parent / "analysis"
    marker = gs.parent / "started"
    (analysis / "slow.py").write_text(
        "import os, time\nopen(os.environ['MARK'], 'a').write('x')\ntime.sleep(60)\n")
    (gs / "_scripts.json").write_text(json.dumps([{"script": "root:/../analysis/slow.py"}]))
    daemon.env["MARK"] = str(marker)
    daemon.config.write_text("[daemon]\nsettle_ms = 50\n[pool]\nworkers = 2\n")
    daemon.start()
    daemon.ctl("add", str(gs))
    wait_for(marker.exists, 60, "the slow script to start")
    assert daemon.ctl("remove", str(gs)).returncode == 0
    state = daemon.ctl_json("status")["state"]

    def slow_history() -> list[str]:
        with sqlite3.connect(state) as db:
            return [r[0] for r in db.execute(
                "SELECT status FROM history WHERE script LIKE '%slow.py' ORDER BY id")]

    # the run is cancelled (TERM, then KILL after the grace) and its history row says so
    wait_for(lambda: slow_history() == ["killed"], 60, "the removed project's run to end")


def test_sigterm_during_a_run_reruns_it_after_restart(daemon: Daemon, gs: Path) -> None:
    analysis = gs.parent / "analysis"
    marker = gs.parent / "started"
    (analysis / "slow.py").write_text(
        "import os, time\nopen(os.environ['MARK'], 'a').write('x')\ntime.sleep(60)\n")
    (gs / "_scripts.json").write_text(json.dumps(
        [{"script": "root:/../analysis/summary.py"}, {"script": "root:/../analysis/slow.py", "priority": 1}]))
    daemon.env["MARK"] = str(marker)
    daemon.config.write_text("[daemon]\nsettle_ms = 50\nshutdown_grace_s = 1\n")
    daemon.start()
    daemon.ctl("add", str(gs))
    wait_for(marker.exists, 60, "the slow script to start")
    assert daemon.stop(timeout=60) == 0  # grace 1 s, then its process group is killed
    marker.unlink()
    daemon.config.write_text("[daemon]\nsettle_ms = 50\nshutdown_grace_s = 1\n[pool]\ntimeout_s = 2\n")
    daemon.start()
    wait_for(marker.exists, 60, "the interrupted run to start again")
    daemon.wait_quiet()
    slow = [r for r in daemon.runs() if r["script"].endswith("slow.py")]
    assert [r["status"] for r in sorted(slow, key=lambda r: r["id"])][-1] == "timeout"
    assert any("interrupted" in " ".join(r["reasons"]) for r in slow)


def test_schedule_field_registers_a_timed_job(daemon: Daemon, gs: Path) -> None:
    (gs / "group-1" / "_scripts.json").write_text(json.dumps([
        {"script": "root:/../analysis/group.py", "schedule": "*/5 * * * *"},
    ]))
    (gs / "group-0" / "_scripts.json").write_text(json.dumps([
        {"script": "root:/../analysis/group.py", "schedule": "every tuesday"},
    ]))
    daemon.start()
    _register(daemon, gs)
    scheds = {os.path.basename(s["container"]): s for s in daemon.ctl_json("status")["projects"][0]["schedules"]}
    assert scheds["group-1"]["error"] is None and scheds["group-1"]["next_run"] is not None
    assert "not a crontab line" in scheds["group-0"]["error"]
    assert "group-0/_scripts.json" in scheds["group-0"]["error"]
    # Editing the schedule reschedules without a restart.
    (gs / "group-0" / "_scripts.json").write_text(json.dumps([
        {"script": "root:/../analysis/group.py", "schedule": "0 3 * * *"},
    ]))
    wait_for(lambda: any(s["error"] is None and os.path.basename(s["container"]) == "group-0"
                         for s in daemon.ctl_json("status")["projects"][0]["schedules"]),
             30, "the fixed schedule")


def test_failed_run_is_retried_with_backoff(daemon: Daemon, gs: Path) -> None:
    analysis = gs.parent / "analysis"
    flag = gs.parent / "failed-once"
    (analysis / "flaky.py").write_text(
        "import os, sys\nflag = os.environ['FLAG']\n"
        "if not os.path.exists(flag):\n    open(flag, 'w').close()\n    sys.exit(1)\n"
    )
    (gs / "_scripts.json").write_text(json.dumps([
        {"script": "root:/../analysis/summary.py"}, {"script": "root:/../analysis/flaky.py", "priority": 1},
    ]))
    daemon.env["FLAG"] = str(flag)
    daemon.config.write_text("[daemon]\nsettle_ms = 50\n[retry]\nattempts = 2\nbackoff_s = 0.2\n")
    daemon.start()
    daemon.ctl("add", str(gs))
    wait_for(lambda: [r["status"] for r in daemon.runs() if r["script"].endswith("flaky.py")] == ["ok", "failed"],
             60, "a failed run followed by a successful retry")
    retry = next(r for r in daemon.runs() if r["script"].endswith("flaky.py") and r["status"] == "ok")
    assert retry["trigger"] == "retry"


def test_logs_follow_streams_a_running_log(daemon: Daemon, gs: Path) -> None:
    analysis = gs.parent / "analysis"
    gate = gs.parent / "gate"
    (analysis / "chatty.py").write_text(
        "import os, time\nprint('first line', flush=True)\n"
        "while not os.path.exists(os.environ['GATE']):\n    time.sleep(0.01)\nprint('last line')\n"
    )
    (gs / "_scripts.json").write_text(json.dumps([{"script": "root:/../analysis/chatty.py"}]))
    daemon.env["GATE"] = str(gate)
    daemon.start()
    daemon.ctl("add", str(gs))
    run = wait_for(lambda: next((r for r in daemon.runs() if r["script"].endswith("chatty.py")
                                 and r["status"] == "running"), None), 60, "chatty to run")
    follower = subprocess.Popen([sys.executable, "-m", "thotd.cli.thotctl", "logs", "-f", str(run["id"])],
                                env=daemon.env, stdout=subprocess.PIPE, text=True)
    try:
        assert follower.stdout is not None
        seen = []
        while not any("first line" in line for line in seen):
            seen.append(follower.stdout.readline())  # blocks until the live log grows
        assert follower.poll() is None  # still following: the run is still going
        gate.touch()
        rest = follower.stdout.read()
        assert follower.wait(60) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
    assert "last line" in rest
    daemon.wait_quiet()
    assert [r["status"] for r in daemon.runs() if r["id"] == run["id"]] == ["ok"]


def test_adding_a_registered_project_again_changes_nothing(daemon: Daemon, gs: Path) -> None:
    daemon.start(str(gs))  # registered at start (config/argv) ...
    assert daemon.ctl("add", str(gs)).returncode == 0  # ... and again by hand, mid-run
    daemon.wait_quiet()
    assert len(daemon.runs()) == 7
    assert daemon.ctl("add", str(gs)).returncode == 0
    daemon.wait_quiet()
    assert len(daemon.runs()) == 7


def test_daemon_run_scripts_do_not_load_pydantic(daemon: Daemon, gs: Path) -> None:
    """Every run pays for what a script imports: over the socket, no pydantic is needed."""
    analysis = gs.parent / "analysis"
    (analysis / "light.py").write_text(
        "import os, sys\nfrom thot import ThotProject\n"
        "db = ThotProject()\nassert db.find_assets({'type': 'raw'})\n"
        "path = db.add_asset({'type': 'light', 'file': 'light.txt'}, 'light')\n"
        "open(path, 'w').write(str(sorted(m for m in sys.modules if m.startswith(('pydantic', 'thotd')))))\n"
    )
    (gs / "group-0" / "_scripts.json").write_text(json.dumps([{"script": "root:/../analysis/light.py"}]))
    daemon.start()
    _register(daemon, gs)
    loaded = (gs / "group-0" / "light" / "light.txt").read_text()
    assert "thotd.service.rpc" in loaded and "pydantic" not in loaded and "thotd.project.index" not in loaded
