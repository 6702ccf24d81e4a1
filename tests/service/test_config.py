"""thotd.service.config: defaults, strict validation, error messages, the example file."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from thotd.service.config import (
    EXIT_CONFIG,
    Config,
    ConfigError,
    RetrySection,
    format_loc,
    load_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.delenv("THOTD_CONFIG", raising=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_exit_code_is_ex_config() -> None:
    assert EXIT_CONFIG == 78


def test_no_file_gives_defaults() -> None:
    config = load_config()
    assert config == Config()
    assert config.daemon.settle_ms == 100
    assert config.daemon.stable_checks == 2
    assert config.daemon.reconcile_minutes == 10
    assert config.daemon.shutdown_grace_s == 10
    assert config.pool.workers == (os.cpu_count() or 1)
    assert config.pool.timeout_s == 3600
    assert config.pool.log_cap_bytes == 10 * 1024 * 1024
    assert config.retry.attempts == 0
    assert config.retry.backoff_s == 30
    assert config.log.level == "info"
    assert config.log.file is True
    assert config.projects == []


def test_default_file_location_is_used(tmp_path: Path) -> None:
    path = tmp_path / "xdg-config" / "thotd" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text("[pool]\nworkers = 3\n")
    assert load_config().pool.workers == 3


def test_env_override_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THOTD_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="missing.toml: configuration file not found"):
        load_config()


def test_explicit_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config()


def test_values_are_read(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
projects = ["/data/a", "rel/b", "~/c"]
[daemon]
settle_ms = 250
reconcile_minutes = 0.5
[pool]
workers = 3
[retry]
attempts = 2
backoff_s = 5
[log]
level = "DEBUG"
file = false
""",
        )
    )
    assert config.daemon.settle_ms == 250
    assert config.daemon.reconcile_minutes == 0.5
    assert config.pool.workers == 3
    assert config.retry.attempts == 2
    assert config.log.level == "debug"
    assert config.log.file is False
    assert config.projects == [
        Path("/data/a"),
        tmp_path / "rel" / "b",  # relative to the config file, not the cwd
        Path("~/c").expanduser(),
    ]


def test_workers_zero_means_cpu_count(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[pool]\nworkers = 0\n"))
    assert config.pool.workers == (os.cpu_count() or 1)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("[pool]\nwrokers = 4\n", ["pool.wrokers", "unknown key", "did you mean 'workers'"]),
        ("[pools]\nworkers = 4\n", ["pools", "unknown key", "did you mean 'pool'"]),
        ("tgas = 1\n", ["tgas", "unknown key", "known keys here"]),
        ('[pool]\nworkers = "4"\n', ["pool.workers", "valid integer", "'4'"]),
        ("[pool]\nworkers = -1\n", ["pool.workers", "greater than or equal to 0"]),
        ("[pool]\ntimeout_s = 0\n", ["pool.timeout_s", "greater than 0"]),
        ("[daemon]\nstable_checks = 0\n", ["daemon.stable_checks"]),
        ('[log]\nfile = "yes"\n', ["log.file", "valid boolean"]),
        ('[log]\nlevel = "loud"\n', ["log.level", "'debug'", "'loud'"]),
        ("projects = [1]\n", ["projects[0]"]),
        ('projects = "/one/path"\n', ["projects", "valid list"]),
        ("pool = 3\n", ["pool", "must be a table"]),
    ],
)
def test_errors_name_file_key_and_reason(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message, message
    assert info.value.path == path


def test_several_errors_are_all_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[pool]\nworkers = -1\n[retry]\nattempts = -1\n"))
    message = str(info.value)
    assert "2 errors" in message
    assert "pool.workers" in message
    assert "retry.attempts" in message


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "[daemon]\nsettle_ms = 100\nstable_checks = = 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "invalid TOML" in message
    assert "line 3" in message
    assert "column" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[log]\nlevel = "\xff"\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(path)


def test_unreadable_path_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "dir.toml")


def test_config_is_immutable() -> None:
    config = Config()
    with pytest.raises(ValueError):
        config.pool.workers = 5  # type: ignore[misc]


def test_retry_backoff_is_exponential() -> None:
    retry = RetrySection(attempts=3, backoff_s=30)
    assert [retry.delay(n) for n in (1, 2, 3)] == [30, 60, 120]
    with pytest.raises(ValueError):
        retry.delay(0)


@given(st.lists(st.one_of(st.text(min_size=1, max_size=5), st.integers(0, 9)), max_size=5))
def test_format_loc(loc: list[Any]) -> None:
    rendered = format_loc(loc)
    for part in loc:
        assert (f"[{part}]" if isinstance(part, int) else str(part)) in rendered


# -- the example file -----------------------------------------------------------------------


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    out = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out |= _keys(annotation, f"{prefix}{name}.")
        else:
            out.add(prefix + name)
    return out


def _toml_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for name, value in data.items():
        if isinstance(value, dict) and value:  # an empty table ({}) is a value
            out |= _toml_keys(value, f"{prefix}{name}.")
        else:
            out.add(prefix + name)
    return out


def test_example_documents_every_key() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert _toml_keys(data) == _keys(Config)
    # Each key has a comment block right above it.
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"undocumented: {line}"


def test_example_loads_and_equals_defaults() -> None:
    # Everything in the example is the default; `workers = 0` is documented as "CPU count",
    # which is what the default resolves to.
    assert load_config(EXAMPLE) == Config()
