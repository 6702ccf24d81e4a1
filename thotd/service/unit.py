"""The systemd user unit, rendered with the absolute paths of the installed commands.

``pip install`` puts ``thotd``/``thotctl`` wherever the environment's scripts go (a venv,
``~/.local/bin``, pipx...), and systemd runs units with a minimal ``PATH``, so the unit must
name them by absolute path. ``thotd install-service`` calls ``render_unit`` and writes the
result to ``unit_install_path()``. The template below is the single source: the
``systemd/thotd.service`` file in the source tree is this template rendered for a
``pip install --user`` layout (a test keeps the two identical).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from thotd import exits

UNIT_NAME = "thotd.service"

_THOTD = "@THOTD@"
_THOTCTL = "@THOTCTL@"

UNIT_TEMPLATE = f"""\
# thotd: watches Thot projects and reruns the analysis scripts affected by a change.
#
# `thotd install-service` writes this unit, with the absolute paths of the installed
# thotd and thotctl, to ~/.local/share/systemd/user/thotd.service ($XDG_DATA_HOME), then:
#   systemctl --user daemon-reload
#   systemctl --user enable --now thotd
#   loginctl enable-linger "$USER"   # keep it running while you are logged out
# The copy in the source tree assumes `pip install --user` (commands in ~/.local/bin).

[Unit]
Description=thotd, the Thot project watcher
# Restart=on-failure gives up after 5 failed starts within 5 minutes.
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
# READY=1 is sent once the control socket is bound and the watches are up.
Type=notify
NotifyAccess=main
ExecStart={_THOTD} start --foreground
# Waits until the daemon has validated and applied the new configuration.
ExecReload={_THOTCTL} reload --wait
Restart=on-failure
RestartSec=5
# 78 (EX_CONFIG): the configuration is invalid; restarting would not help.
RestartPreventExitStatus={exits.CONFIG}
Environment=PYTHONUNBUFFERED=1
# SIGTERM goes to the daemon only; it stops its scripts' process groups itself (grace
# period [daemon] shutdown_grace_s, 10 s by default) before systemd kills what is left.
KillMode=mixed
TimeoutStopSec=30
# Pinged at half this period by the loop that checks the watcher and the queue.
WatchdogSec=30
# Hardening that user scripts can live with (docs/decisions.md says why each is or is not
# here). Only settings that need no namespace: in a user unit ProtectSystem=, ProtectHome=,
# PrivateTmp=, ProtectKernel*= and the like make systemd >= 253 turn on PrivateUsers=,
# under which every other account's files look owned by "nobody" (shared lab folders and
# the [trust] check would break). Not MemoryDenyWriteExecute (breaks JIT-using analysis
# code), not RestrictNamespaces (breaks apptainer, podman, bwrap and browser sandboxes).
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
UMask=0077
# No 32-bit (compat) system calls; undo with an empty SystemCallArchitectures= drop-in.
SystemCallArchitectures=native
# Calls an unprivileged process cannot make succeed anyway, answered with the EPERM it
# would get: clock setting, kernel modules, raw I/O, reboot, swap, obsolete calls.
SystemCallFilter=~@clock @cpu-emulation @module @obsolete @raw-io @reboot @swap
SystemCallErrorNumber=EPERM
# Packet sockets need privileges a user service never has.
RestrictAddressFamilies=~AF_PACKET
# Limits for the daemon and every script it runs; raise them with a drop-in
# (`systemctl --user edit thotd`: [Service] MemoryMax=95% TasksMax=16384).
MemoryMax=80%
TasksMax=4096

[Install]
WantedBy=default.target
"""


def _render(thotd: str, thotctl: str) -> str:
    """Substitute already-escaped command strings into the template."""
    return UNIT_TEMPLATE.replace(_THOTD, thotd).replace(_THOTCTL, thotctl)


def _exec_quote(path: Path) -> str:
    """Quote ``path`` as the executable of an ``Exec*=`` line.

    systemd expands ``%`` specifiers there and splits on whitespace, so a path such as
    ``/home/a b/100%/bin/thotd`` must be escaped and quoted. ``$`` is left alone: variables
    are not expanded in the executable (``$$`` would stay doubled). Quotes and backslashes
    can be escaped but systemd then rejects the name ("Executable name contains special
    characters"), so they are refused here, with a way out.
    """
    text = os.fspath(path)
    if not os.path.isabs(text):
        raise ValueError(f"the unit needs an absolute path, got {text!r}")
    if any(c in text for c in "\n\r\0\"'\\"):
        raise ValueError(
            f"systemd cannot run an executable whose path contains quotes, backslashes or "
            f"line breaks: {text!r}; install thotd elsewhere or point to a symlink"
        )
    text = text.replace("%", "%%")
    if any(c.isspace() or c == ";" for c in text):
        text = f'"{text}"'
    return text


def find_command(name: str) -> Path | None:
    """The installed ``name`` script: beside this interpreter first, then on ``PATH``.

    The interpreter's own scripts dir wins so that a venv's ``thotd`` is paired with that
    venv's ``thotctl``, whatever comes first on ``PATH``.
    """
    candidates = [
        Path(sysconfig.get_path("scripts")) / name,
        Path(sys.executable).parent / name,
    ]
    user_scripts = sysconfig.get_path("scripts", f"{os.name}_user")
    if user_scripts:
        candidates.append(Path(user_scripts) / name)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate.absolute()
    found = shutil.which(name)
    return Path(found).absolute() if found else None


def render_unit(exec_path: Path | None = None, ctl_path: Path | None = None) -> str:
    """The unit text with ``exec_path`` (``thotd``) and ``ctl_path`` (``thotctl``).

    Missing arguments are looked up with ``find_command`` (``thotctl`` next to
    ``exec_path`` first). Raises ``FileNotFoundError`` when a command cannot be found and
    ``ValueError`` for a relative path.
    """
    if exec_path is None:
        exec_path = find_command("thotd")
        if exec_path is None:
            raise FileNotFoundError("cannot find the installed `thotd` command")
    if ctl_path is None:
        sibling = Path(exec_path).parent / "thotctl"
        ctl_path = sibling if sibling.exists() else find_command("thotctl")
        if ctl_path is None:
            raise FileNotFoundError("cannot find the installed `thotctl` command")
    return _render(_exec_quote(Path(exec_path)), _exec_quote(Path(ctl_path)))


def unit_install_path() -> Path:
    """Where a user unit installed by hand belongs: ``$XDG_DATA_HOME/systemd/user``."""
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data_home) / "systemd" / "user" / UNIT_NAME
