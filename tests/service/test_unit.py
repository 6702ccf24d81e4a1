"""The systemd user unit: content, rendering, and ``systemd-analyze --user verify``."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from thotd.service import unit as service
from thotd.service.config import EXIT_CONFIG, Config

REPO = Path(__file__).resolve().parents[2]
UNIT_FILE = REPO / "systemd" / "thotd.service"


def parse(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(text)
    return parser


def verify(
    unit_text: str, tmp_path: Path, name: str = "thotd.service"
) -> subprocess.CompletedProcess[str]:
    """Run ``systemd-analyze --user verify`` on ``unit_text``, skipping where impossible.

    ``--user`` needs a runtime dir to set up its manager; a private temporary one works
    even as root and without a running user manager. The XDG dirs point into tmp_path so
    no unit of the real user interferes.
    """
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    units = tmp_path / "units"
    units.mkdir(exist_ok=True)
    unit = units / name
    unit.write_text(unit_text)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = dict(os.environ)
    env.update(
        XDG_RUNTIME_DIR=str(runtime),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        SYSTEMD_LOG_COLOR="0",
        SYSTEMD_PAGER="",
    )
    proc = subprocess.run(
        [tool, "--user", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if "Failed to initialize manager" in proc.stderr or "Failed to lookup" in proc.stderr:
        pytest.skip(f"systemd-analyze cannot set up a user manager here: {proc.stderr.strip()}")
    return proc


def test_source_tree_unit_is_the_rendered_template() -> None:
    """systemd/thotd.service is the template for a `pip install --user` layout."""
    expected = service._render("%h/.local/bin/thotd", "%h/.local/bin/thotctl")
    assert UNIT_FILE.read_text() == expected


def test_unit_settings() -> None:
    unit = parse(UNIT_FILE.read_text())
    u, s, i = unit["Unit"], unit["Service"], unit["Install"]
    assert int(u["StartLimitIntervalSec"]) > 0 and int(u["StartLimitBurst"]) > 0
    assert s["Type"] == "notify"
    assert s["NotifyAccess"] == "main"
    assert s["ExecStart"] == "%h/.local/bin/thotd start --foreground"
    assert s["ExecReload"] == "%h/.local/bin/thotctl reload --wait"
    assert s["Restart"] == "on-failure"
    assert "RestartSec" in s
    assert s["RestartPreventExitStatus"] == str(EXIT_CONFIG)
    assert s["Environment"] == "PYTHONUNBUFFERED=1"
    assert s["KillMode"] == "mixed"
    assert int(s["TimeoutStopSec"]) > Config().daemon.shutdown_grace_s
    assert s["WatchdogSec"] == "30"
    for key in ("NoNewPrivileges", "LockPersonality", "RestrictRealtime", "RestrictSUIDSGID"):
        assert s[key] == "yes"
    assert s["UMask"] == "0077"
    for forbidden in ("MemoryDenyWriteExecute", "ProtectHome", "ProtectSystem"):
        assert forbidden not in s
    assert i["WantedBy"] == "default.target"


def test_rendered_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    exe = Path(sys.executable).absolute()
    proc = verify(service.render_unit(exe, exe), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout == ""


def test_verify_catches_mistakes_here(tmp_path: Path) -> None:
    """The check above is not vacuous: this systemd does report a typo on stderr."""
    exe = Path(sys.executable).absolute()
    text = service.render_unit(exe, exe).replace("KillMode=mixed", "KillMood=mixed")
    proc = verify(text, tmp_path)
    assert "KillMood" in proc.stderr


def test_awkward_paths_are_escaped_and_verify(tmp_path: Path) -> None:
    bin_dir = tmp_path / "my tools" / "100%" / "$HOME;x"
    bin_dir.mkdir(parents=True)
    for name in ("thotd", "thotctl"):
        (bin_dir / name).symlink_to(Path(sys.executable).absolute())
    text = service.render_unit(bin_dir / "thotd")
    exec_start = parse(text)["Service"]["ExecStart"]
    escaped = f"{tmp_path}/my tools/100%%/$HOME;x"
    assert exec_start == f'"{escaped}/thotd" start --foreground'
    assert f'"{escaped}/thotctl" reload --wait' in text
    proc = verify(text, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_render_finds_thotctl_next_to_thotd(tmp_path: Path) -> None:
    for name in ("thotd", "thotctl"):
        path = tmp_path / name
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    s = parse(service.render_unit(tmp_path / "thotd"))["Service"]
    assert s["ExecStart"] == f"{tmp_path}/thotd start --foreground"
    assert s["ExecReload"] == f"{tmp_path}/thotctl reload --wait"


def test_find_command_falls_back_to_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = "thotd-test-only-command"
    tool = tmp_path / name
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    assert service.find_command(name) == tool
    assert service.find_command("thotd-surely-missing-command") is None


def test_render_rejects_paths_systemd_cannot_run() -> None:
    with pytest.raises(ValueError, match="absolute"):
        service.render_unit(Path("bin/thotd"), Path("/usr/bin/thotctl"))
    for bad in ("/opt/a\nb/thotd", '/opt/a"b/thotd', "/opt/a'b/thotd", "/opt/a\\b/thotd"):
        with pytest.raises(ValueError, match="quotes, backslashes or line breaks"):
            service.render_unit(Path(bad), Path("/usr/bin/thotctl"))


def test_unit_install_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert service.unit_install_path() == tmp_path / "systemd" / "user" / "thotd.service"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".local" / "share" / "systemd" / "user" / "thotd.service"
    assert service.unit_install_path() == expected
