"""Which executor runs a run: ``local`` (this machine) or ``dask`` (a Dask cluster).

The engine decides *what* runs; an executor only *runs* it: it is handed a :class:`Job`
(a :class:`~thotd.executor.runspec.RunSpec` plus where it may run) and returns the
:class:`~thotd.executor.runspec.ProcResult`, with the run's log and record written where
the spec says, whichever machine ran it. Chosen by name, uvicorn-style: :func:`load`
imports the ``dask`` implementation only when it is asked for, so the base install, ``thot
run`` with the local executor and the ``thot`` script API never import ``distributed``.

:class:`Executors` keeps one executor per distinct setting (the global ``[executor]`` and
each project's override) for the daemon and ``thot run``, and closes them all at the end.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from thotd.slotted import Slotted

if TYPE_CHECKING:
    import asyncio
    import threading

    from thotd.executor.runspec import ProcResult, RunSpec

__all__ = [
    "KINDS", "Executor", "Executors", "Job", "association", "failed_start", "job_resources",
    "load",
]

#: The executor names ``[executor] kind`` and ``thot run --executor`` accept.
KINDS = ("local", "dask")


class Job(Slotted):
    """One run handed to an executor: its spec, the project it belongs to (a remote
    executor checks that its workers see it), the resources it asks for (Dask resource
    restrictions; empty for none) and a label for logs and status."""

    __slots__ = ("spec", "project", "resources", "label")

    def __init__(self, spec: RunSpec, project: str, resources: Mapping[str, float] | None = None,
                 label: str = "") -> None:
        self.spec = spec
        self.project = project
        self.resources: dict[str, float] = dict(resources or {})
        self.label = label


class Executor(Protocol):
    """What the daemon (``run_async``) and ``thot run`` (``run_sync``) need of an executor.
    Neither raises for anything that went wrong with the script or the cluster: that is
    a result (``failed``, ``error``, ``killed``); only the caller's own cancellation
    propagates, after the run has been stopped."""

    kind: str

    def attach(self, project: str) -> None:
        """``project`` will send runs here (a remote executor checks its workers see it)."""

    async def run_async(self, job: Job, cancel: asyncio.Event | None = None) -> ProcResult: ...

    def run_sync(self, job: Job, cancel: threading.Event | None = None) -> ProcResult: ...

    def status(self) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...

    def close(self) -> None: ...


def load(kind: str) -> Callable[..., Executor]:
    """The executor class named ``kind``, imported now (``dask`` pulls in ``distributed``)."""
    if kind == "local":
        from thotd.executor.local import LocalExecutor

        return LocalExecutor
    if kind == "dask":
        try:
            from thotd.executor.dask.client import DaskExecutor
        except ImportError as exc:  # the extra is not installed
            raise RuntimeError(
                f"the dask executor needs the [dask] extra: pip install 'thotd[dask]' ({exc})"
            ) from None
        return DaskExecutor
    raise ValueError(f"unknown executor {kind!r}; choose one of: {', '.join(KINDS)}")


_SIZE = re.compile(r"^\s*([0-9.]+)\s*([kmgtp]?)(i?)b?\s*$", re.IGNORECASE)


def _amount(name: str, value: Any) -> float:
    """A resource amount: a number, or a size such as ``"8GB"``/``"512MiB"`` (Dask resources
    are plain numbers; workers declare sizes in bytes, e.g. ``--resources memory=16e9``)."""
    if isinstance(value, bool):
        raise ValueError(f"resource {name!r}: {value!r} is not an amount")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            number, unit = float(m.group(1)), m.group(2).lower()
            if not unit:
                return number
            base = 1024 if m.group(3) else 1000
            return number * float(base ** ("kmgtp".index(unit) + 1))
    raise ValueError(f"resource {name!r}: {value!r} is not a number or a size like '8GB'")


def association(scripts: Sequence[dict[str, Any]], script: str) -> dict[str, Any] | None:
    """The ``_scripts.json`` entry of ``script`` among a container's ``scripts``."""
    return next((a for a in scripts if a.get("script") == script), None)


def failed_start(message: str) -> ProcResult:
    """The ``"error"`` result of a run no executor could take (e.g. the extra is missing)."""
    import time

    from thotd.executor.runspec import ProcResult

    now = time.time()
    return ProcResult(None, "error", now, now, 0.0, None, message)


def job_resources(association: Mapping[str, Any] | None) -> dict[str, float]:
    """A ``_scripts.json`` entry's ``resources`` as Dask wants them (numbers)."""
    raw = (association or {}).get("resources") or {}
    return {str(k): _amount(str(k), v) for k, v in raw.items()}


class Executors:
    """One executor per distinct setting, made on first use and closed together.

    ``settings`` are plain mappings (``kind`` plus that kind's options): the service's
    config is not this room's to import. ``local`` makes the local executor (it holds the
    caller's fork server)."""

    def __init__(self, local: Callable[[], Executor]) -> None:
        self._local = local
        self._made: dict[str, Executor] = {}

    def get(self, settings: Mapping[str, Any]) -> Executor:
        kind = str(settings.get("kind", "local"))
        key = repr(sorted(settings.items())) if kind != "local" else "local"
        ex = self._made.get(key)
        if ex is None:
            if kind == "local":
                ex = self._local()
            else:
                options = {k: v for k, v in settings.items() if k != "kind"}
                ex = load(kind)(**options)
            self._made[key] = ex
        return ex

    def pick(self, settings: Mapping[str, Any],
             association: Mapping[str, Any] | None = None) -> Executor:
        """The executor of one run: ``settings`` (its project's), unless its
        ``_scripts.json`` entry says ``"executor": "local"`` (a small script kept at home)."""
        if association is not None and association.get("executor") == "local":
            settings = {"kind": "local"}
        return self.get(settings)

    def status(self) -> list[dict[str, Any]]:
        return [ex.status() for ex in self._made.values() if ex.kind != "local"]

    async def aclose(self) -> None:
        made, self._made = list(self._made.values()), {}
        for ex in made:
            await ex.aclose()

    def close(self) -> None:
        made, self._made = list(self._made.values()), {}
        for ex in made:
            ex.close()
