"""``LocalProject`` (alias ``ThotProject``): what an analysis script talks to.

Scripts written for the original Thot run unchanged: ``from thot.thot import LocalProject``,
``LocalProject()``, ``find_asset(s)``, ``find_container(s)``, ``add_asset``. Under the runner
or the daemon the active container comes from ``THOT_CONTAINER_ID``, and every question the
script asks is written to the run record so the engine knows its inputs. Under the daemon
(``THOTD_SOCKET`` and ``THOTD_PROJECT`` set) queries are answered from the daemon's
in-memory index instead of walking the disk; the answers are the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import uuid
from collections.abc import Mapping, MutableMapping
from typing import Any

from thotd.engine.record import Recorder
from thotd.fingerprint import stat_of
from thotd.project.objects import ScriptAssociation, ThotObject

ENV_CONTAINER = "THOT_CONTAINER_ID"
ENV_SCRIPT = "THOT_SCRIPT_ID"
ENV_PROJECT_ROOT = "THOT_PROJECT_ROOT"
ENV_DAEMON_SOCKET = "THOTD_QUERY_SOCKET"
ENV_ORIGINAL_DIR = "THOT_ORIGINAL_DIR"

ASSET_FILE = "_asset.json"


class ThotError(ValueError):
    """A misuse of the script API, with what to do about it (a ``ValueError``, as the
    original Thot raised for a missing container)."""


class AssetExists(RuntimeError, FileExistsError):
    """``add_asset(..., overwrite=False)`` on an asset that exists (the original raised
    ``RuntimeError``)."""


def _plain_name(_id: str) -> str:
    if (
        not isinstance(_id, str)
        or _id in ("", ".", "..")
        or "/" in _id
        or "\\" in _id
        or "\0" in _id
        or (os.altsep and os.altsep in _id)
    ):
        raise ValueError(
            f"asset id {_id!r} must be one plain folder name (no '/', not '.' or '..', not empty)"
        )
    return _id


def _check_asset(data: bytes, target: str) -> None:
    """Refuse properties that would make an asset the index cannot use (pydantic is loaded
    only when the file is not plainly well-formed, to word the error); what the original
    accepted (``"name": 5``) passes, as it loads with a warning."""
    from thotd.project.objectfile import ASSET_FILE as _AF
    from thotd.project.objectfile import ObjectFileError, load_tolerant

    try:
        load_tolerant(_AF, data, target)
    except ObjectFileError as exc:
        raise ValueError(f"add_asset: invalid properties: {exc}") from None


class LocalProject:
    """A Thot project seen from one container (the active one) and everything below it."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        dev_root: str | os.PathLike[str] | None = None,
    ) -> None:
        # As the original: relative paths are relative to where the first project object
        # was made (THOT_ORIGINAL_DIR), whatever folder later ones left the script in.
        original = os.environ.setdefault(ENV_ORIGINAL_DIR, os.getcwd())
        with contextlib.suppress(OSError):
            os.chdir(original)
        if root is None and self.dev_mode():
            root = dev_root
        if root is None:
            root = os.environ.get(ENV_CONTAINER) or None
        if root is None:
            raise ThotError(
                "no active container: this script expects to be run by the Thot runner. "
                "Run it with `thot run --root PATH`, or by hand with "
                f"`{ENV_CONTAINER}=/path/to/container python {sys.argv[0] or 'script.py'}`, "
                "or pass ThotProject(dev_root='/path/to/container')."
            )
        self.root = os.path.normpath(os.path.join(original, os.path.expanduser(os.fspath(root))))
        if not os.path.isfile(os.path.join(self.root, "_container.json")):
            raise ThotError(f"{self.root} is not a Thot container (no _container.json)")
        self._recorder = Recorder()
        self._script = os.environ.get(ENV_SCRIPT) or os.path.abspath(sys.argv[0] or "<interactive>")
        self._socket = os.environ.get(ENV_DAEMON_SOCKET)
        self._index: Any = None
        self._client: Any = None
        self._project_root = os.environ.get(ENV_PROJECT_ROOT)
        self._recorder.library("daemon" if self._socket else "local")
        os.chdir(self.root)  # relative paths in scripts rely on it, as in the original

    # ------------------------------------------------------------------ querying

    def _local_index(self) -> Any:
        if self._index is None:
            from thotd.project.index import Index, find_project_root

            top = self._project_root or find_project_root(self.root)
            self._index = Index.load(top, focus=self.root)
            self._project_root = self._index.root
            for err in self._index.errors():
                print(f"thot: warning: {err}", file=sys.stderr)
        return self._index

    def _query(self, kind: str, search: Mapping[str, Any] | None) -> list[ThotObject]:
        from thotd.project.search import compile_search, encode

        encoded, opaque = encode(search)
        test = compile_search(search)  # raises early on an unknown operator
        if self._socket:
            objects, fps = self._remote(kind, {} if opaque else encoded)
            found = [o for o in objects if test(o)] if opaque else objects
        else:
            index = self._local_index()
            found = index.find(kind, search, self.root)
            fps = {o["_id"]: index.fingerprint(o["_id"]) for o in found}
        self._recorder.query(
            kind, encoded, opaque, [o["_id"] for o in found],
            {
                o["_id"]: {"fp": fps[o["_id"]], "file": o.get("file"), "stat": stat_of(o.get("file"))}
                for o in found
            },
        )
        return found

    def _remote(self, kind: str, search: Any) -> tuple[list[ThotObject], dict[str, str]]:
        if self._client is None:
            from thotd.service.rpc import Client

            self._client = Client(self._socket)  # one connection for all of the script's queries
        # A busy daemon (a crowded socket) delays the query; it does not fail the run.
        result = self._client.call_retrying(
            "query", project=self._project_root, start=self.root, kind=kind, search=search
        )
        objects = [ThotObject(o) for o in result["objects"]]
        return objects, dict(zip([o["_id"] for o in objects], result["fingerprints"], strict=True))

    def find_containers(self, search: Mapping[str, Any] | None = None) -> list[ThotObject]:
        """Containers in the active container's subtree (itself included), depth first; their
        ``scripts`` are :class:`ScriptAssociation` objects, in file order."""
        return [_with_associations(c) for c in self._query("container", search)]

    def find_container(self, search: Mapping[str, Any] | None = None) -> ThotObject | None:
        found = self.find_containers(search)
        return found[0] if found else None

    def find_assets(self, search: Mapping[str, Any] | None = None) -> list[ThotObject]:
        """Assets anywhere in the active container's subtree, depth first."""
        return self._query("asset", search)

    def find_asset(self, search: Mapping[str, Any] | None = None) -> ThotObject | None:
        found = self.find_assets(search)
        return found[0] if found else None

    # ------------------------------------------------------------------ producing

    def add_asset(
        self, properties: Mapping[str, Any], _id: str | None = None, overwrite: bool = True
    ) -> str:
        """Create (or replace) the asset folder ``<active container>/<_id>``; return the
        absolute path where the script should write the asset's ``file``.

        As the original (0.5+): ``_id`` defaults to the ``name``, then the ``file``, then a
        uuid, so a rerun replaces its own outputs; ``file`` defaults to the ``_id``; the
        caller's dict receives ``file``, ``creator`` and ``creator_type``."""
        from thotd.project.locate import find_project_root, resolve_path

        props = dict(properties)
        if _id is None:
            _id = str(props.get("name") or props.get("file") or uuid.uuid4())
        folder = os.path.join(self.root, _plain_name(_id))
        target = os.path.join(folder, ASSET_FILE)
        if os.path.exists(target) and not overwrite:
            raise AssetExists(f"Object {folder} already exists (pass overwrite=True to replace it)")
        added = {"file": props.get("file") or _id, "creator_type": "script", "creator": self._script}
        props.update(added)
        data = json.dumps(props, indent=4, default=str).encode()
        _check_asset(data, target)
        if isinstance(properties, MutableMapping):
            properties.update(added)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{ASSET_FILE}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)  # an interrupted script never leaves half an object file
        top = self._project_root or find_project_root(self.root)
        path = resolve_path(str(props["file"]), folder, top)
        self._recorder.output(os.path.normpath(folder), path)
        return path

    @staticmethod
    def dev_mode() -> bool:
        """True when the script is run by hand, not by a runner (no active container in the
        environment); callable on the class, as in every original release."""
        return ENV_CONTAINER not in os.environ


def _with_associations(container: ThotObject) -> ThotObject:
    """A copy (the index's objects are shared) whose scripts are :class:`ScriptAssociation`."""
    out = ThotObject(container)
    out["scripts"] = [ScriptAssociation(s) for s in container.get("scripts") or ()]
    return out


ThotProject = LocalProject
