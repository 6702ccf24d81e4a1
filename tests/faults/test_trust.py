"""Another account's files never make thotd run code (issue 11, item 1).

Real files, real owners: the test runs as root and gives files to ``nobody`` (uid 65534)
or to a second account with its own private group, then asks the check that guards every
run (:func:`thotd.engine.trust.check_run`) and the config loader.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from thotd.engine.trust import (
    OVERRIDE_FLAG,
    TrustEntryError,
    TrustPolicy,
    check_config_file,
    check_run,
    parse_entry,
)
from thotd.service.config import ConfigError, load_config

from .trustkit import (
    NOBODY,
    REPO,
    daemon,
    make_project,
    need_root,
    private_group_user,
    rpc,
    shared_tmpdir,
    wait_for,
)

CONFIG = "/home/me/.config/thotd/config.toml"


@pytest.fixture
def shared() -> Iterator[Path]:
    """A project in a folder of ours under /tmp (its parents: /tmp, sticky, and /)."""
    folder = shared_tmpdir("thtrust-")
    os.chmod(folder, 0o755)
    try:
        yield make_project(folder / "proj")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_check(root: Path, policy: TrustPolicy | None = None) -> str | None:
    policy = policy or TrustPolicy.from_entries(config_path=CONFIG)
    refusal = check_run(root / "analysis.py", root / "_scripts.json", policy, project=str(root))
    return None if refusal is None else str(refusal)


def test_own_files_run(shared: Path) -> None:
    assert run_check(shared) is None


def test_script_of_another_user_is_refused_with_file_owner_and_setting(shared: Path) -> None:
    need_root()
    os.chown(shared / "analysis.py", NOBODY, NOBODY)
    reason = run_check(shared)
    assert reason is not None
    assert f"{shared / 'analysis.py'}" in reason
    assert "owned by nobody (uid 65534)" in reason
    assert "mode 0644 (-rw-r--r--)" in reason
    # The config line that would allow it, scoped to this project, in the config file.
    assert f'root = "{shared}" and allow = ["user:nobody"]' in reason
    assert CONFIG in reason
    trusted = TrustPolicy.from_entries(projects={str(shared): ["user:nobody"]})
    assert run_check(shared, trusted) is None
    assert run_check(shared, TrustPolicy.from_entries(["user:nobody"])) is None


def test_scripts_json_dropped_by_another_user_is_refused(shared: Path) -> None:
    """The attack of the issue: someone else's _scripts.json naming their own script."""
    need_root()
    os.chown(shared / "_scripts.json", NOBODY, NOBODY)
    reason = run_check(shared)
    assert reason is not None and "untrusted _scripts.json" in reason
    assert str(shared / "_scripts.json") in reason


def test_group_writable_script_is_refused_unless_the_group_is_trusted(shared: Path) -> None:
    need_root()
    os.chown(shared / "analysis.py", 0, NOBODY)  # group nogroup, and writable by it
    os.chmod(shared / "analysis.py", 0o664)
    reason = run_check(shared)
    assert reason is not None
    assert "writable by group nogroup" in reason and "mode 0664 (-rw-rw-r--)" in reason
    assert f"chmod g-w {shared / 'analysis.py'}" in reason
    assert 'allow = ["group:nogroup"]' in reason
    assert run_check(shared, TrustPolicy.from_entries(["group:nogroup"])) is None


def test_group_entry_trusts_files_its_members_own(shared: Path) -> None:
    need_root()
    os.chown(shared / "analysis.py", NOBODY, NOBODY)  # nobody's primary group is nogroup
    assert run_check(shared) is not None
    assert run_check(shared, TrustPolicy.from_entries(["group:nogroup"])) is None


def test_world_writable_folder_is_refused_sticky_one_is_not(shared: Path) -> None:
    os.chmod(shared, 0o777)
    reason = run_check(shared)
    assert reason is not None
    assert f"folder above the _scripts.json {shared}" in reason
    assert "writable by everyone" in reason and "chmod o-w" in reason
    # No trust entry makes a folder anyone can write safe.
    assert run_check(shared, TrustPolicy.from_entries(["group:root"])) is not None
    # Sticky: others may add files but not replace ours. Above the project that is fine...
    os.chmod(shared, 0o755)
    os.chmod(shared.parent, 0o1777)
    assert run_check(shared) is None
    # ...but not in the script's own folder: a json.py dropped beside it would be imported.
    os.chmod(shared, 0o1777)
    reason = run_check(shared)
    assert reason is not None and "writable by everyone" in reason and "+t" not in reason


def test_folder_of_another_user_above_the_project_is_refused(shared: Path) -> None:
    need_root()
    os.chown(shared.parent, NOBODY, NOBODY)  # they could rename the project away
    reason = run_check(shared)
    assert reason is not None and f"folder above the _scripts.json {shared.parent}" in reason


def test_symlink_to_a_script_in_a_foreign_folder_is_refused(shared: Path, tmp_path: Path) -> None:
    need_root()
    foreign = shared.parent / "foreign"
    foreign.mkdir()
    (foreign / "evil.py").write_text("print('evil')\n")
    os.chown(foreign, NOBODY, NOBODY)
    (shared / "analysis.py").unlink()
    (shared / "analysis.py").symlink_to(foreign / "evil.py")
    reason = run_check(shared)
    assert reason is not None and str(foreign) in reason


def test_own_private_group_is_fine_with_umask_002(shared: Path) -> None:
    """Group-writable files of a user whose group is their own (user private groups)."""
    user = private_group_user()
    for path in (shared, shared / "_scripts.json", shared / "analysis.py"):
        os.chown(path, user.pw_uid, user.pw_gid)
        os.chmod(path, 0o775 if path.is_dir() else 0o664)
    reason = run_check(shared, TrustPolicy.from_entries([f"user:{user.pw_name}"]))
    assert reason is None
    # The same modes with a group that has another member are refused.
    os.chown(shared / "analysis.py", user.pw_uid, NOBODY)
    reason = run_check(shared, TrustPolicy.from_entries([f"user:{user.pw_name}"]))
    assert reason is not None and "writable by group nogroup" in reason


def test_per_project_entries_apply_only_below_their_root(shared: Path, tmp_path: Path) -> None:
    need_root()
    os.chown(shared / "analysis.py", NOBODY, NOBODY)
    elsewhere = TrustPolicy.from_entries(projects={str(tmp_path): ["user:nobody"]})
    assert run_check(shared, elsewhere) is not None


def test_override_for_one_run(shared: Path) -> None:
    need_root()
    os.chown(shared / "analysis.py", NOBODY, NOBODY)
    assert run_check(shared, TrustPolicy.from_entries(anyone=True)) is None


def test_entries_must_name_real_accounts() -> None:
    assert parse_entry("user:root").id == 0
    assert parse_entry("group:0").id == 0
    for bad in ("root", "user:", "host:x", "*"):
        with pytest.raises(TrustEntryError, match="not a trust entry"):
            parse_entry(bad)
    with pytest.raises(TrustEntryError, match="no group named"):
        parse_entry("group:surely-no-such-group-here")


# -- the configuration file --------------------------------------------------------------


def write_config(folder: Path, text: str = "[daemon]\nsettle_ms = 100\n") -> Path:
    path = folder / "config.toml"
    path.write_text(text)
    os.chmod(path, 0o644)
    return path


@pytest.mark.parametrize("mode", [0o666, 0o664, 0o646])
def test_config_writable_by_others_is_a_config_error(tmp_path: Path, mode: int) -> None:
    path = write_config(tmp_path)
    os.chmod(path, mode)
    if os.geteuid() == 0:
        os.chown(path, 0, NOBODY)  # a shared group (root's own group would be private)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert f"mode {mode:04o}" in message and f"owner {getpass.getuser()}" in message
    assert f"fix: chmod go-w {path}" in message


def test_config_owned_by_another_user_is_a_config_error(tmp_path: Path) -> None:
    need_root()
    path = write_config(tmp_path)
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "owned by nobody (uid 65534)" in message and str(path) in message
    assert "config file you own" in message


def test_config_in_a_world_writable_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "open"
    folder.mkdir()
    os.chmod(folder, 0o777)  # anyone could replace the file
    path = write_config(folder)
    with pytest.raises(ConfigError, match="folder above the config file"):
        load_config(path)
    assert check_config_file(write_config(tmp_path)) is None


def test_config_trust_section(tmp_path: Path) -> None:
    path = write_config(tmp_path, (
        '[trust]\nallow = ["user:nobody"]\n'
        '[[trust.projects]]\nroot = "lab"\nallow = ["group:nogroup"]\n'
    ))
    policy = load_config(path).trust.policy(config_path=path)
    assert [str(e) for e in policy.allow] == ["user:nobody"]
    assert [str(e) for e in policy.entries_for(str(tmp_path / "lab" / "x"))] == [
        "user:nobody", "group:nogroup"]
    assert policy.config_path == str(path)
    bad = write_config(tmp_path, '[trust]\nallow = ["group:no-such-lab-group"]\n')
    with pytest.raises(ConfigError, match=r"trust.allow: .*no group named 'no-such-lab-group'"):
        load_config(bad)


def test_daemon_refuses_to_start_with_a_writable_config(tmp_path: Path) -> None:
    """Exit 78 (bad configuration), a message naming the file and the fix, no traceback."""
    path = write_config(tmp_path)
    os.chmod(path, 0o666)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "run"),
           "XDG_STATE_HOME": str(tmp_path / "state"), "THOTD_CONFIG": str(path)}
    env.pop("THOTD_SOCKET", None)
    proc = subprocess.run([sys.executable, "-m", "thotd.cli.thotd", "start", "--foreground"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 78, proc.stderr
    assert f"chmod go-w {path}" in proc.stderr and "Traceback" not in proc.stderr


def test_reload_refuses_a_config_others_can_write(tmp_path: Path) -> None:
    """The second way in: make the config writable by others, then ``thotctl reload``.
    The daemon keeps its old configuration and says why; a sound file with a [trust]
    section reloads."""
    with daemon(tmp_path) as d:
        d.start()
        d.wait_ready()
        os.chmod(d.config, 0o666)
        result = rpc(d.socket, "reload")
        assert result["reloaded"] is False
        assert f"chmod go-w {d.config}" in result["error"]
        os.chmod(d.config, 0o600)
        d.config.write_text('[trust]\nallow = ["user:nobody"]\n')
        assert rpc(d.socket, "reload")["reloaded"] is True
        assert d.stop() == 0


# -- end to end: the check where runs start ----------------------------------------------
# Both runners start every run through thotd.engine.dispatch.launch, which calls check_run.


def drop_foreign_container(root: Path, marker: Path) -> Path:
    """What another user can do in a shared (1777) folder inside a watched project."""
    need_root()
    drop = root / "drop"
    drop.mkdir()
    os.chmod(drop, 0o1777)
    (drop / "_container.json").write_text('{"name": "drop"}')
    (drop / "_scripts.json").write_text('[{"script": "evil.py"}]')
    (drop / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    for name in ("_container.json", "_scripts.json", "evil.py"):
        os.chown(drop / name, NOBODY, NOBODY)
    return drop


def test_daemon_never_runs_another_users_script(tmp_path: Path) -> None:
    with daemon(tmp_path) as d:
        os.chmod(d.home, 0o755)
        project = make_project(d.home / "proj", "open('ran', 'w').write('ok')\n")
        marker = d.home / "pwned"
        drop = drop_foreign_container(project, marker)
        d.start()
        d.wait_ready()
        rpc(d.socket, "add", {"path": str(project)})
        reason = str(drop / "_scripts.json")

        def outcome() -> str | None:
            if marker.exists():
                return "ran"
            status = json.dumps(rpc(d.socket, "status"))
            return "blocked" if reason in status and "user:nobody" in status else None

        result = wait_for(outcome, 120, "the foreign run to be blocked (or to run)")
        d.stop()
        assert result == "blocked" and not marker.exists(), "another user's script ran"


def test_thot_run_blocks_another_users_script_unless_overridden(shared: Path) -> None:
    marker = shared.parent / "pwned"
    drop = drop_foreign_container(shared, marker)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("THOTD_CONFIG", None)
    state = str(shared.parent / "state.sqlite3")
    base = [sys.executable, "-m", "thotd.cli.thot", "--state", state, "run", "--root", str(shared)]
    proc = subprocess.run(base, env=env, capture_output=True, text=True, timeout=300)
    assert not marker.exists(), "another user's script ran"
    assert str(drop / "_scripts.json") in proc.stdout + proc.stderr
    proc = subprocess.run([*base, OVERRIDE_FLAG], env=env, capture_output=True, text=True,
                          timeout=300)
    assert marker.exists(), proc.stdout + proc.stderr


def test_thot_run_dry_run_shows_another_users_script_blocked(shared: Path) -> None:
    """The dry run asks the same question as the run: an untrusted run is shown blocked,
    with the file and the fix, not as "would run"."""
    marker = shared.parent / "pwned"
    drop = drop_foreign_container(shared, marker)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("THOTD_CONFIG", None)
    state = str(shared.parent / "state.sqlite3")
    base = [sys.executable, "-m", "thotd.cli.thot", "--state", state, "run", "--root",
            str(shared), "--dry-run", "--json"]
    proc = subprocess.run(base, env=env, capture_output=True, text=True, timeout=300)
    rows = {os.path.basename(r["container"]): r for r in json.loads(proc.stdout)["would_run"]}
    row = rows[drop.name]
    assert row["blocked"] and str(drop / "_scripts.json") in row["reasons"][0], row
    assert not marker.exists()
    proc = subprocess.run([*base, OVERRIDE_FLAG], env=env, capture_output=True, text=True,
                          timeout=300)
    rows = {os.path.basename(r["container"]): r for r in json.loads(proc.stdout)["would_run"]}
    assert not rows[drop.name]["blocked"] and not marker.exists()


def test_thot_run_takes_trust_from_thotds_config(shared: Path, tmp_path: Path) -> None:
    """``thot run`` reads ``[trust]`` of the daemon's config: the line a refusal suggests
    lets the run through; a config others can write is an error (exit 78), not ignored."""
    need_root()
    marker = shared / "analysis.py.ran"
    (shared / "analysis.py").write_text(f"open({str(marker)!r}, 'w').write('ok')\n")
    os.chown(shared / "analysis.py", NOBODY, NOBODY)
    config = write_config(tmp_path, "")
    env = {**os.environ, "PYTHONPATH": str(REPO), "THOTD_CONFIG": str(config)}
    state = str(shared.parent / "state.sqlite3")
    cmd = [sys.executable, "-m", "thotd.cli.thot", "--state", state, "run", "--root", str(shared)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and not marker.exists()
    assert f"[[trust.projects]] table with root = \"{shared}\"" in proc.stdout
    assert str(config) in proc.stdout  # the file to add it to
    config.write_text(f'[[trust.projects]]\nroot = "{shared}"\nallow = ["user:nobody"]\n')
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and marker.exists(), proc.stdout + proc.stderr
    os.chmod(config, 0o666)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 78 and f"chmod go-w {config}" in proc.stderr
    assert "Traceback" not in proc.stderr
