"""What ``thot run`` takes from thotd's configuration: whose files may run, and how many
run logs to keep.

``thot run`` runs scripts as the daemon does, so the same files must be refused
(:mod:`thotd.engine.trust`), and the same ``[trust]`` lines must allow them; its logs go to
the same state folder, so the same ``[run_logs]`` limits apply. Its ``[pool]`` settings
stay flags (see ``RUN_POOL_OPTIONS`` in :mod:`thotd.cli.thot`).

The file is the daemon's (``--config`` is not a ``thot`` option: ``$THOTD_CONFIG``, else
the default path). No file means the defaults, without loading the validator (pydantic
costs a quick ``thot run`` tens of milliseconds); a file that is invalid, or that others can
write, is an error here as it is for the daemon.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from thotd import paths

if TYPE_CHECKING:
    from thotd.engine.logretention import Retention
    from thotd.engine.trust import TrustPolicy


class UnusableConfig(Exception):
    """The configuration file cannot be used; the message says why and how to fix it.
    (:class:`thotd.service.config.ConfigError`, told apart without loading pydantic.)"""


def for_run(*, anyone: bool = False) -> tuple[TrustPolicy, Retention]:
    """The trust policy (``anyone``: the one-run override) and log limits of a ``thot run``.

    Raises :class:`UnusableConfig` for a file that cannot be used.
    """
    from thotd.engine.logretention import Retention
    from thotd.engine.trust import TrustPolicy

    file = paths.config_file()
    if not paths.config_file_is_explicit() and not file.exists():
        return TrustPolicy(anyone=anyone, config_path=str(file)), Retention()
    from thotd.service.config import ConfigError, load_config

    try:
        config = load_config(file)
    except ConfigError as exc:
        raise UnusableConfig(f"{exc} (thot run reads thotd's [trust] and [run_logs])") from None
    return config.trust.policy(anyone=anyone, config_path=file), config.run_logs.retention()
