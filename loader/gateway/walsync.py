"""Durable acks with the fsync off the event loop.

The gateway commits to SQLite on its event loop with synchronous=NORMAL: the commit writes its frames to
the WAL file but does not wait for the disk. Its requests are answered only after an fdatasync of the WAL
file that began after the commit, which runs on a thread of its own. Meanwhile the loop reads and commits
the next group, so the disk and the CPU work at once, and one fsync covers every commit made before it
began. A commit is then exactly as durable as with synchronous=FULL before it is acknowledged; only the
fsync is no longer inside SQLite's write lock and on the loop (where it took a third of the gateway's
throughput: ~1,950 against ~3,050 requests/s measured here).

fsync works on the file, not on the descriptor, so syncing our own descriptor of the WAL makes SQLite's
writes to it durable. SQLite removes the WAL only when the last connection to the database closes, after
checkpointing it into the synced database; a new WAL is a new file, so the descriptor is reopened when
the path names another file.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from loader.gateway.futures import settle

log = logging.getLogger("loader.gateway")


class WalSync:
    """Resolves futures once an fdatasync of `database`'s WAL, begun after they were handed over, is done."""

    def __init__(self, database: str) -> None:
        self.wal = database + "-wal"
        self.database = database
        self._fd: int | None = None
        self._ino: int | None = None
        self._waiting: list[asyncio.Future[None]] = []
        self._inflight: asyncio.Future[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal-fsync")
        self.syncs = 0

    def after_commit(self, futures: list[asyncio.Future[None]]) -> None:
        """Resolve these (requests whose bodies were just committed) after the next fsync."""
        self._waiting.extend(futures)
        if self._inflight is None:
            self._start()

    async def drain(self) -> None:
        """Wait for every handed-over future to be settled; then let the thread go."""
        while self._inflight is not None:
            await asyncio.wait([self._inflight])
        self._executor.shutdown(wait=True)
        self._close()

    def _start(self) -> None:
        """Hand the fsync to the thread at once, from the loop (a task would cost a turn of the loop)."""
        batch, self._waiting = self._waiting, []
        try:
            # The file is looked up here, on the loop: each call the thread makes gives up the GIL, and
            # getting it back from a busy loop can take a switch interval.
            descriptor = self._descriptor()
        except OSError as exc:
            self._settle(batch, exc)
            return
        inflight = asyncio.get_running_loop().run_in_executor(self._executor, os.fdatasync, descriptor)
        inflight.add_done_callback(lambda done: self._synced(done, batch))
        self._inflight = inflight

    def _synced(self, done: asyncio.Future[None], batch: list[asyncio.Future[None]]) -> None:
        self._inflight = None
        self._settle(batch, done.exception())
        if self._waiting:
            self._start()

    def _settle(self, batch: list[asyncio.Future[None]], exc: BaseException | None) -> None:
        if exc is None:
            self.syncs += 1
        else:
            log.error("fsync of staging's WAL failed for %d bodies: %s", len(batch), exc)
        settle(batch, exc)

    def _descriptor(self) -> int:
        """Our descriptor of the WAL file the path names now (or of the database, should there be none)."""
        try:
            ino = os.stat(self.wal).st_ino
            path = self.wal
        except FileNotFoundError:
            ino, path = os.stat(self.database).st_ino, self.database
        if self._fd is None or ino != self._ino:
            self._close()
            self._fd = os.open(path, os.O_RDONLY)
            self._ino = os.fstat(self._fd).st_ino
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = self._ino = None
