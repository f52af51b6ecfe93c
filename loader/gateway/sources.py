"""The gateway's view of the source registry: looked up by write-key hash, refreshed from staging.

An unknown key triggers a refresh at most once a second, so a new source is picked up without a
restart while a flood of wrong keys cannot hammer the database.
"""

from __future__ import annotations

import asyncio
import logging
import time

from loader.staging import Staging
from loader.staging.sources import Source, hash_key, load_sources

log = logging.getLogger("loader.gateway")


class SourceCache:
    """Sources by write-key hash; `get` is one dict lookup unless the key is unknown."""

    def __init__(self, staging: Staging, min_refresh_s: float = 1.0) -> None:
        self.staging = staging
        self.min_refresh_s = min_refresh_s
        self._by_hash: dict[str, Source] = {}
        self._last = 0.0
        self._lock = asyncio.Lock()

    @property
    def count(self) -> int:
        return len(self._by_hash)

    async def refresh(self) -> None:
        async with self._lock:
            sources = await asyncio.to_thread(load_sources, self.staging)
            self._by_hash = {s.write_key_hash: s for s in sources}
            self._last = time.monotonic()

    async def get(self, write_key: str) -> Source | None:
        digest = hash_key(write_key)
        source = self._by_hash.get(digest)
        if source is None and time.monotonic() - self._last >= self.min_refresh_s:
            await self.refresh()
            source = self._by_hash.get(digest)
        return source

    async def keep_fresh(self, every_s: float = 5.0) -> None:
        """Refresh now and then, so a changed signing key is seen without a restart."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.refresh()
            except Exception as exc:  # staging briefly unreachable: keep the last known sources
                log.warning("could not refresh sources: %s", exc)
