"""``thot run``'s pool options and thotd's ``[pool]`` settings: one declaration, same names.

The historical flags (``--jobs``, ``--timeout``, ``--no-fork``) keep working; the aliases
spelled like the config keys mean the same; every declared key exists in the config model.
"""

from __future__ import annotations

import pytest

from thotd.cli.thot import RUN_POOL_OPTIONS, PoolOption, _parser
from thotd.service.config import Config


@pytest.mark.parametrize("option", RUN_POOL_OPTIONS, ids=lambda o: o.dest)
def test_the_config_key_an_option_names_exists(option: PoolOption) -> None:
    section, key = option.config_key.split(".")
    assert key in type(getattr(Config(), section)).model_fields


@pytest.mark.parametrize("argv", [
    ["-j", "3", "--timeout", "2.5", "--no-fork"],
    ["--jobs", "3", "--timeout", "2.5", "--no-fork"],
    ["--workers", "3", "--timeout-s", "2.5", "--no-fork"],
])
def test_old_flags_and_config_named_aliases_mean_the_same(argv: list[str]) -> None:
    args = _parser().parse_args(["run", *argv])
    assert (args.jobs, args.timeout, args.no_fork) == (3, 2.5, True)


def test_defaults_are_unchanged() -> None:
    args = _parser().parse_args(["run"])
    assert (args.jobs, args.timeout, args.no_fork) == (1, None, False)


def test_help_names_the_config_keys(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "[pool] workers" in text and "[pool] timeout_s" in text
    assert "[pool] fork = false" in text
