"""Group commit: requests that arrive together share one staging transaction (one fsync).

Each request waits for the commit that holds its body, so a 200 always means "on disk".

SQLite commits run on the event loop itself: a commit of a dozen bodies takes ~0.7 ms, while handing it
to a thread cost ~2 ms more under load (the worker waits for the GIL the busy loop holds), and every
request of the group waits for it. PostgreSQL commits (a network round trip) go to a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from loader.staging import Incoming, Staging

log = logging.getLogger("loader.gateway")


class Committer:
    """Collects bodies and commits them in batches from one background task."""

    def __init__(self, staging: Staging, max_batch: int = 2000) -> None:
        self.staging = staging
        self.max_batch = max_batch
        self.inline = staging.dialect == "sqlite"
        self._pending: list[tuple[Incoming, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is None:
            return
        while self._pending:
            await self._commit_some()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def submit(self, record: Incoming) -> None:
        """Return once the record is committed; raise if staging could not take it."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        self._wake.set()
        await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._commit_some()

    async def _commit_some(self) -> None:
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        records = [record for record, _ in batch]
        try:
            if self.inline:
                self.staging.append(records)
            else:
                await asyncio.to_thread(self.staging.append, records)
        except Exception as exc:
            log.error("staging commit failed for %d bodies: %s", len(batch), exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.commits += 1
        for _, future in batch:
            if not future.done():
                future.set_result(None)
