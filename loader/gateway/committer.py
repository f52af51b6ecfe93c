"""Group commit: requests that arrive together share one staging transaction.

Each request waits until the commit that holds its body is on disk, so a 200 always means "on disk".

SQLite commits run on the event loop itself: a commit of a dozen bodies takes ~0.3 ms without its fsync,
while handing the whole commit to a thread cost more under load (the worker and the loop wake each other
and trade the GIL). With a WalSync, the commit skips the fsync (synchronous=NORMAL) and the WalSync makes
it right after, outside SQLite's write lock, before the group is answered. A commit that finds SQLite's
write lock held (the lander marking a batch) does not wait inside SQLite: it is retried from the loop a
moment later, so the loop, `/health` included, never blocks on another writer. PostgreSQL commits (a
network round trip) go to a thread.
"""

from __future__ import annotations

import asyncio
import logging

from loader.errors import TransientError
from loader.gateway.walsync import WalSync
from loader.staging import Incoming, Staging
from loader.staging.store import StagingBusy

log = logging.getLogger("loader.gateway")

# How long a commit may keep finding SQLite's write lock held before its requests get a 503 (Customer.io
# then retries), and the first and longest pause between tries.
BUSY_WAIT_S = 10.0
BUSY_RETRY_S = (0.0005, 0.01)


def settle(futures: list[asyncio.Future[None]], exc: BaseException | None) -> None:
    """Answer the requests of a group: each future still waiting is resolved, with `exc` if given."""
    for future in futures:
        if future.done():
            continue
        if exc is None:
            future.set_result(None)
        else:
            future.set_exception(exc)


class Committer:
    """Collects bodies and commits them in batches from one background task."""

    def __init__(self, staging: Staging, max_batch: int = 2000, wal_sync: WalSync | None = None) -> None:
        """`wal_sync`: for a SQLite staging engine with synchronous=NORMAL, what makes its commits
        durable before their requests are answered; without it, each commit is durable by itself."""
        self.staging = staging
        self.wal_sync = wal_sync
        self.max_batch = max_batch
        self.inline = staging.dialect == "sqlite"
        self._pending: list[tuple[Incoming, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.commits = 0
        # After a failed fsync, the WAL on disk may lack frames that the OS now holds as written (Linux
        # reports a write-back error once, then marks the pages clean): a later commit that syncs fine
        # would still be lost at recovery, which stops at the first missing frame. So nothing is
        # answered 200 until a checkpoint has copied the WAL into the database, synced it and started
        # the WAL afresh.
        self.unsynced = False
        self.repairs = 0
        self._repairing: asyncio.Future[bool] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Commit what is queued, including a commit still waiting for the lock, then stop."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        await self._task
        if self.wal_sync is not None:
            self.wal_sync.close()

    async def accepting(self) -> bool:
        """Whether a body submitted now could be answered 200: the task runs and, after a failed fsync,
        the WAL is safe again (tried here too, so that `/health` reports the repair without a request)."""
        running = self._task is not None and not self._task.done()
        return running and await self.repaired()

    async def repaired(self) -> bool:
        """True unless a failed fsync left the WAL unsafe (see `unsynced`) and the repair has not yet
        succeeded; runs it if none is running. On a thread: it copies the whole WAL (up to ~80 MB) into
        the database and syncs it, which on the loop would stall every request, 401s and /health too."""
        if not self.unsynced:
            return True
        if self._repairing is None or self._repairing.done():
            self._repairing = asyncio.ensure_future(asyncio.to_thread(self._repair))
        return await asyncio.shield(self._repairing)

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
            # One turn of the loop first: requests whose bytes came in the same poll as the one that woke
            # us reach `submit` too, and share this commit and its fsync. Under wrk's 32 connections a
            # group grew from ~13 bodies to ~29; make bench's gateway figure rose from 7.9-8.3k to
            # 9.2-9.6k requests/s (three alternating pairs), its ack p99 at 1,000/s from 4.4-4.9 to
            # 3.9-4.1 ms.
            await asyncio.sleep(0)
            while self._pending:
                await self._commit_some()
            if self._stopping:
                return

    async def _commit_some(self) -> None:
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        futures = [future for _, future in batch]
        if self.unsynced and not await self.repaired():
            settle(futures, TransientError("staging's WAL is not yet safe again after a failed fsync"))
            return
        try:
            await self._append([record for record, _ in batch])
        except Exception as exc:
            log.error("staging commit failed for %d bodies: %s", len(batch), exc)
            settle(futures, exc)
            return
        self.commits += 1
        if self.wal_sync is not None:
            try:
                self.wal_sync.sync()
            except OSError as exc:
                log.error(
                    "fsync of staging's WAL failed for %d bodies: %s; no request is answered 200 until "
                    "a checkpoint has copied the WAL into the database and synced it",
                    len(batch),
                    exc,
                )
                self.unsynced = True
                settle(futures, exc)
                return
        settle(futures, None)

    def _repair(self) -> bool:
        """After a failed fsync: checkpoint the whole WAL (see `unsynced`); True once that is done."""
        try:
            done = self.staging.checkpoint_wal()
        except Exception as exc:
            log.error("checkpoint of staging's WAL after a failed fsync failed: %s", exc)
            return False
        if done:
            log.warning("staging's WAL is checkpointed and synced after a failed fsync; answering again")
            self.unsynced = False
            self.repairs += 1
        return done

    async def _append(self, records: list[Incoming]) -> None:
        if not self.inline:
            await asyncio.to_thread(self.staging.append, records)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BUSY_WAIT_S
        pause, longest = BUSY_RETRY_S
        while True:
            try:
                self.staging.append(records)
                return
            except StagingBusy:
                if loop.time() + pause > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, longest)
