"""Why a folder cannot be watched natively, and what fixes it: network filesystems (from
``/proc/self/mounts``) and the per-user inotify limits (from ``/proc/sys/fs/inotify``).

Read by :class:`~thotd.service.watch.Watcher` to choose polling for such folders and to
show, in ``thotctl status``, the reason and the ``sysctl`` command that lifts the limit.

* **Watch limit (ENOSPC) and instance limit (EMFILE).** watchdog raises only when the
  *root* cannot be watched; a limit reached part-way down the tree is silently swallowed
  for sub-folders. So after scheduling, a throw-away inotify instance probes whether one
  more watch can still be added (:func:`watch_limit_reached`).
* **Network filesystems** (NFS, SMB/CIFS, sshfs, 9p, …) do not report changes made by
  other machines: such roots are polled.
* **Containers.** Since Linux 5.11 the inotify limits belong to the user namespace: inside a
  container ``/proc/sys/fs/inotify/max_user_watches`` is the container's own limit, which
  the host's ``sysctl`` does not show. The reason given names which one was hit
  (:func:`limit_scope`).
* **A cap of our own**: ``THOTD_MAX_WATCHES=N`` makes the daemon poll any project with more
  than N folders instead of watching it (:func:`watch_cap`): to leave a shared account's
  watches to its other programs, and for tests to take the fallback honestly.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import sys

__all__ = [
    "CAP_VAR", "MAX_USER_INSTANCES_FILE", "MAX_USER_WATCHES_FILE", "MOUNTS_FILE", "SYSCTL_CONF",
    "UID_MAP_FILE", "count_folders", "filesystem_type", "instance_limit_fix", "is_network_fs",
    "limit_scope", "read_int", "watch_cap", "watch_limit_fix", "watch_limit_reached",
]

# Filesystems whose changes made elsewhere (another host, the VM host, Windows) do
# not reach local inotify.
_NETWORK_FS_TYPES = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "coda", "9p",
        "ceph", "glusterfs", "lustre", "gpfs", "beegfs", "ocfs2", "gfs2",
        "davfs", "vboxsf", "vmhgfs", "prl_fs", "virtiofs", "drvfs",
        "fuse.sshfs", "fuse.rclone", "fuse.s3fs", "fuse.gcsfuse", "fuse.glusterfs",
        "fuse.cephfs", "fuse.davfs2", "fuse.smbnetfs", "fuse.curlftpfs",
        "fuse.vmhgfs-fuse", "fuse.grpcfuse", "fakeowner", "fuse.juicefs",
    }
)

MOUNTS_FILE = "/proc/self/mounts"
MAX_USER_WATCHES_FILE = "/proc/sys/fs/inotify/max_user_watches"
MAX_USER_INSTANCES_FILE = "/proc/sys/fs/inotify/max_user_instances"
SYSCTL_CONF = "/etc/sysctl.d/90-thotd-inotify.conf"
UID_MAP_FILE = "/proc/self/uid_map"
CAP_VAR = "THOTD_MAX_WATCHES"
_INITIAL_UID_MAP = ["0", "0", "4294967295"]  # the host's own user namespace

_IN_ATTRIB = 0x00000004
_IN_CLOEXEC = 0o2000000


def read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _unescape_mount_field(text: str) -> str:
    """Undo the octal escapes of /proc/self/mounts (space is ``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def filesystem_type(path: str) -> str | None:
    """Filesystem type of the mount holding ``path`` (longest matching mount point)."""
    try:
        with open(MOUNTS_FILE, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount_point = _unescape_mount_field(parts[1])
        prefix = mount_point.rstrip("/") + "/"
        if (real == mount_point or real.startswith(prefix) or mount_point == "/") and (
            best is None or len(mount_point) >= best[0]
        ):
            best = (len(mount_point), parts[2])
    return best[1] if best else None


def is_network_fs(fstype: str | None) -> bool:
    if not fstype:
        return False
    return fstype in _NETWORK_FS_TYPES or fstype.startswith("nfs") or fstype.startswith("fuse.sshfs")


def count_folders(root: str) -> int:
    """Folders an inotify watch of ``root`` needs: the root plus every real sub-folder."""
    count = 0
    for dirpath, dirnames, _files in os.walk(root):
        count += 1
        # os.walk lists symlinked folders without descending; watchdog skips them too.
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    return count


def watch_limit_reached(path: str) -> bool:
    """True when this user cannot add one more inotify watch right now.

    watchdog 7.1 swallows ENOSPC for sub-folders, so after scheduling a project we
    probe with a throw-away inotify instance instead of trusting the silence.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        init1 = libc.inotify_init1
        add_watch = libc.inotify_add_watch
    except (OSError, AttributeError):
        return False
    init1.argtypes = [ctypes.c_int]
    add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    fd = init1(_IN_CLOEXEC)
    if fd < 0:
        return False  # instance limit: a different problem, reported where it bites
    try:
        wd = add_watch(fd, os.fsencode(path), _IN_ATTRIB)
        return wd < 0 and ctypes.get_errno() == errno.ENOSPC
    finally:
        os.close(fd)


def _suggest_limit(current: int | None, folders: int) -> int:
    need = (current or 8192) + 2 * folders
    n = 524288  # the value most distributions' docs and IDEs recommend
    while n < need:
        n *= 2
    return n


def watch_limit_fix(current: int | None, folders: int) -> str:
    n = _suggest_limit(current, folders)
    return (
        f"sudo sysctl fs.inotify.max_user_watches={n}; to keep it after a reboot: "
        f"echo 'fs.inotify.max_user_watches={n}' | sudo tee {SYSCTL_CONF}; "
        "then restart thotd (systemctl --user restart thotd)"
    )


def instance_limit_fix(current: int | None) -> str:
    n = max(1024, 2 * (current or 128))
    return (
        f"sudo sysctl fs.inotify.max_user_instances={n}; to keep it after a reboot: "
        f"echo 'fs.inotify.max_user_instances={n}' | sudo tee {SYSCTL_CONF}; "
        "if the open-files limit is the cause instead, raise LimitNOFILE= in the unit; "
        "then restart thotd (systemctl --user restart thotd)"
    )


def limit_scope() -> str:
    """Whose inotify limit ``/proc/sys/fs/inotify`` shows here: the host's, or (in a user
    namespace: a container) the namespace's own, which the host's ``sysctl`` does not show."""
    try:
        with open(UID_MAP_FILE, encoding="ascii") as fh:
            lines = fh.read().split("\n")
    except OSError:
        return "the system's limit"
    if lines[0].split() == _INITIAL_UID_MAP:
        return "the system's limit"
    return ("this container's own limit (its user namespace's, read from "
            f"{MAX_USER_WATCHES_FILE} inside it; the host's value may differ)")


def watch_cap(environ: dict[str, str] | None = None) -> int | None:
    """The ``THOTD_MAX_WATCHES`` cap, when set to a whole number (see the module's
    docstring); anything else is no cap."""
    raw = (os.environ if environ is None else environ).get(CAP_VAR, "").strip()
    return int(raw) if raw.isdigit() else None
