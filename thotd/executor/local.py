"""The ``local`` executor: runs on this machine, as thotd always did (see
:mod:`thotd.executor.process`: own process group, fork server for Python scripts)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio
    import threading

    from thotd.executor.choose import Job
    from thotd.executor.forkserver.client import ForkServer
    from thotd.executor.runspec import ProcResult

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """:func:`~thotd.executor.process.run_async` / ``run_sync`` behind the executor
    interface; ``forkserver`` is asked for the fork server as each run starts."""

    kind = "local"

    def __init__(self, forkserver: Callable[[], ForkServer | None] | None = None) -> None:
        self._forkserver = forkserver

    def _server(self) -> ForkServer | None:
        return self._forkserver() if self._forkserver is not None else None

    def attach(self, project: str) -> None:
        """Nothing to check: this machine sees every project it watches."""

    async def run_async(self, job: Job, cancel: asyncio.Event | None = None) -> ProcResult:
        from thotd.executor.process import run_async

        return await run_async(job.spec, cancel, self._server())

    def run_sync(self, job: Job, cancel: threading.Event | None = None) -> ProcResult:
        from thotd.executor.process import run_sync

        return run_sync(job.spec, cancel, self._server())

    def status(self) -> dict[str, Any]:
        return {"kind": self.kind}

    async def aclose(self) -> None:
        """The fork server is its owner's to close."""

    def close(self) -> None:
        """The fork server is its owner's to close."""
