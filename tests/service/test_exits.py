"""The commands exit with the statuses of :mod:`thotd.exits`, one definition for all three."""

from __future__ import annotations

from pathlib import Path

import pytest

from thotd import exits
from thotd.cli import thot, thotctl, thotd
from thotd.service.config import EXIT_CONFIG


def test_the_config_status_is_ex_config_everywhere() -> None:
    assert exits.CONFIG == EXIT_CONFIG == 78


def test_thotd_start_with_a_bad_config_exits_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("THOTD_CONFIG", "THOTD_SOCKET"):  # `thotd start` exports its flags:
        monkeypatch.setenv(var, "")  # set first, so the undo removes what it exports
        monkeypatch.delenv(var)
    bad = tmp_path / "config.toml"
    bad.write_text("[pool]\nwrokers = 2\n")
    assert thotd.main(["start", "--foreground", "--config", str(bad)]) == exits.CONFIG


def test_no_daemon_is_not_running(tmp_path: Path) -> None:
    sock = str(tmp_path / "none.sock")
    assert thotctl.main(["--socket", sock, "status"]) == exits.NOT_RUNNING
    assert thotd.main(["stop", "--socket", sock]) == exits.NOT_RUNNING


def test_thotctl_usage_error_is_usage() -> None:
    assert thotctl.main(["no-such-command"]) == exits.USAGE


def test_thot_interrupted_is_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(thot.COMMANDS, "validate", interrupted)
    assert thot.main(["validate"]) == exits.INTERRUPTED == 130
