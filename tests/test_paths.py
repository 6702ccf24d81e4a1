"""thotd.paths: platformdirs locations, XDG and THOTD_* overrides, sun_path limit."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from thotd import paths

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every XDG base dir into tmp_path and clear the thotd overrides."""
    for name in ("CONFIG", "STATE", "DATA", "CACHE"):
        monkeypatch.setenv(f"XDG_{name}_HOME", str(tmp_path / name.lower()))
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("THOTD_CONFIG", raising=False)
    monkeypatch.delenv("THOTD_SOCKET", raising=False)
    return tmp_path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(sys.platform != "linux", reason="XDG layout is the Linux convention")
def test_xdg_locations(xdg: Path) -> None:
    assert paths.config_file() == xdg / "config" / "thotd" / "config.toml"
    assert not paths.config_file().exists()  # looking it up creates nothing
    assert paths.state_dir() == xdg / "state" / "thotd"
    assert paths.database_path() == xdg / "state" / "thotd" / "state.sqlite3"
    assert paths.runs_dir() == xdg / "state" / "thotd" / "runs"
    assert paths.log_dir() == xdg / "state" / "thotd" / "log"
    assert paths.log_file() == paths.log_dir() / "thotd.log"
    assert paths.runtime_dir() == xdg / "run" / "thotd"
    assert paths.socket_path() == xdg / "run" / "thotd" / "thotd.sock"
    assert paths.lock_path() == xdg / "run" / "thotd" / "thotd.lock"
    for directory in (paths.state_dir(), paths.runs_dir(), paths.log_dir(), paths.runtime_dir()):
        assert directory.is_dir()
        assert mode(directory) == 0o700


def test_runtime_dir_mode_is_repaired(xdg: Path) -> None:
    existing = xdg / "run" / "thotd"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    assert paths.runtime_dir() == existing
    assert mode(existing) == 0o700


def test_runtime_dir_of_another_user_is_refused(xdg: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a directory owned by someone else")
    existing = xdg / "run" / "thotd"
    existing.mkdir(mode=0o700)
    os.chown(existing, 65534, 65534)
    with pytest.raises(PermissionError, match="uid 65534"):
        paths.runtime_dir()


def test_config_override_precedence(xdg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not paths.config_file_is_explicit()
    monkeypatch.setenv("THOTD_CONFIG", str(xdg / "env.toml"))
    assert paths.config_file() == xdg / "env.toml"
    assert paths.config_file_is_explicit()
    assert paths.config_file(xdg / "flag.toml") == xdg / "flag.toml"
    monkeypatch.setenv("THOTD_CONFIG", "")  # empty means unset
    assert paths.config_file().name == "config.toml"


def test_socket_override_precedence(xdg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = paths.socket_path()
    monkeypatch.setenv("THOTD_SOCKET", str(xdg / "env.sock"))
    assert paths.socket_path() == xdg / "env.sock"
    assert paths.socket_path(str(xdg / "flag.sock")) == xdg / "flag.sock"
    monkeypatch.setenv("THOTD_SOCKET", "")
    assert paths.socket_path() == default


def test_relative_and_tilde_overrides_are_made_absolute(
    xdg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(xdg)
    monkeypatch.setenv("HOME", str(xdg / "home"))
    assert paths.socket_path("rel.sock") == xdg / "rel.sock"
    assert paths.socket_path("~/t.sock") == xdg / "home" / "t.sock"


def test_socket_path_length_limit(xdg: Path) -> None:
    limit = paths.SOCKET_PATH_MAX
    assert limit == (107 if sys.platform.startswith("linux") else 103)
    base = "/tmp/"
    fits = base + "a" * (limit - len(base))
    assert paths.socket_path(fits) == Path(fits)
    too_long = fits + "b"
    with pytest.raises(ValueError) as info:
        paths.socket_path(too_long)
    message = str(info.value)
    assert too_long in message
    assert f"{limit + 1} bytes" in message
    assert "THOTD_SOCKET" in message


def test_socket_path_limit_counts_bytes_not_characters(xdg: Path) -> None:
    # 40 characters, 80 bytes in UTF-8: counted as bytes, like the kernel does.
    name = "/tmp/" + "é" * 40 + "x" * (paths.SOCKET_PATH_MAX - 5 - 80 + 1)
    assert len(name) < paths.SOCKET_PATH_MAX
    with pytest.raises(ValueError, match=f"{paths.SOCKET_PATH_MAX + 1} bytes"):
        paths.socket_path(name)


def test_socket_path_too_long_from_env(xdg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THOTD_SOCKET", "/tmp/" + "x" * 200)
    with pytest.raises(ValueError, match="205 bytes"):
        paths.socket_path()


@pytest.mark.parametrize("module", ["thotd.paths", "thotd.service.rpc"])
def test_client_side_modules_import_light(module: str) -> None:
    """thotctl imports these on every call: no asyncio, pydantic, structlog, watchdog."""
    code = (
        f"import sys, {module}\n"
        "heavy = {'asyncio', 'pydantic', 'structlog', 'watchdog', 'apscheduler', 'sqlite3'}\n"
        "loaded = sorted(heavy & {m.split('.')[0] for m in sys.modules})\n"
        "print(','.join(loaded))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
