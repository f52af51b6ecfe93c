"""The one place that composes staging -> transform -> warehouse: claim, transform, land, mark.

Exactly once: a batch lands in one warehouse transaction that skips ids already there, and is marked
landed only after that commit. A crash in between re-lands the batch, which then adds nothing.

While a backlog lasts, the work that needs no warehouse connection runs beside the landing, on a helper
thread (DuckDB and SQLite release the GIL): the next batch is claimed (and, with `parse_ahead`, parsed:
Writer.parse) and the last one marked while this one lands. With `parse_ahead`, a backlog's first claim
is small: nothing overlaps its parse, so the landing thread starts sooner and the helper stays ahead
(100,000 bodies in batches of 25,000: 47-53k against 44.6-50k events/s, seven pairs).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from loader.backoff import Backoff
from loader.batches import Prepared, SchemaBatch
from loader.errors import TransientError
from loader.metrics import m
from loader.staging import Staged, Staging
from loader.staging.sources import Source, load_sources
from loader.staging.store import CLAIM_MAX_BYTES, claim_token
from loader.warehouse.engine import is_lock_conflict, is_out_of_memory, more_memory
from loader.warehouse.writer import Writer

log = logging.getLogger("loader.lander")

# A claim makes ~50,000 objects the collector tracks at once (its rows and their Staged tuples), so with
# Python's thresholds (700, 10, 10) the youngest generation was collected every few dozen bodies and the
# older ones went over every batch still held. `flush` of 100,000 bodies: 58.0-59.8k against 54.6-58.0k
# events/s (three alternating pairs, faster in each), 1.5-2 µs of CPU less an event. Little of what
# landing makes is cyclic garbage, which is all that waits longer.
GC_THRESHOLDS = (100_000, 20, 20)


def collect_less() -> None:
    """For a landing process (serve's lander, flush): the garbage collector's thresholds, raised."""
    gc.set_threshold(*GC_THRESHOLDS)


class Claimed(NamedTuple):
    """A claim: its token, how many bodies it asked for, its bodies, what the writer's parse made of them
    and the source map it used (None, None: not parsed ahead)."""

    token: str
    asked: int
    bodies: list[Staged]
    parsed: Any  # Writer.parse's result
    sources: dict[str, Source] | None


@dataclass
class BatchResult:
    claimed: int = 0
    landed: int = 0
    skipped: int = 0
    discards: int = 0
    millis: float = 0.0
    per_source: dict[str, int] = field(default_factory=dict)
    last_seq: int = 0  # the highest seq claimed
    full: bool = False  # the claim got all it asked for: more may be waiting


class Lander:
    """Lands staged bodies in batches; `run_once` is one claim -> land -> mark cycle."""

    def __init__(
        self,
        staging: Staging,
        writer: Writer,
        batch_size: int = 5000,
        lease_s: float = 60.0,
        parse_ahead: bool = True,
    ):
        """`parse_ahead`: parse the next batch on the helper thread too (a second core's work, and a
        second batch in memory); otherwise each batch is parsed where it lands."""
        self.staging = staging
        self.parse_ahead = parse_ahead
        self.writer = writer
        self.batch_size = batch_size
        self.lease_s = lease_s
        self._sources: dict[str, Source] = {}
        self._helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lander-staging")
        self._ahead: Future[Claimed] | None = None
        self._marking: Future[None] | None = None

    def _source_map(self, claimed: list[Staged]) -> dict[str, Source]:
        if any(s.source_id not in self._sources for s in claimed):
            self._sources = {s.id: s for s in load_sources(self.staging)}
        return self._sources

    def run_once(self) -> BatchResult:
        """Claim one batch and land it. Raises TransientError when the warehouse cannot take it now.
        The batch is marked landed on the helper thread; `settle` waits for that."""
        started = time.perf_counter()
        token, asked, claimed, parsed, sources = self._take()
        result = BatchResult(
            claimed=len(claimed),
            last_seq=max((s.seq for s in claimed), default=0),
            # all it asked for, or as many bytes as a claim takes
            full=len(claimed) == asked or sum(len(s.body) for s in claimed) >= CLAIM_MAX_BYTES,
        )
        if not claimed:
            self.settle()
            self.writer.release()
            return result
        if result.full:
            self._claim_ahead()  # a backlog: staging hands over the next batch while this one lands
        try:
            added, prepared = self._land(claimed, sources, parsed)
        except Exception as exc:
            self.writer.release()
            self.staging.release(token)
            self._give_back_ahead()
            if is_lock_conflict(exc):
                raise TransientError("warehouse file busy") from exc
            raise TransientError(f"warehouse write failed: {type(exc).__name__}: {exc}") from exc
        self.settle()
        self._marking = self._helper.submit(self._mark, token, prepared)
        self.writer.keep_open()
        result.discards = prepared.discards
        result.per_source = added
        result.landed = sum(added.values())
        result.skipped = result.claimed - result.landed
        result.millis = (time.perf_counter() - started) * 1000
        self._observe(result, prepared.batches)
        return result

    def _land(
        self, claimed: list[Staged], sources: dict[str, Source] | None, parsed: Any
    ) -> tuple[dict[str, int], Prepared]:
        """Land a claimed batch. One that DuckDB's memory cap is too small for (see MemoryCap) is landed
        again at once with the cap doubled: it is no failure, only a batch bigger than the last."""
        if sources is None:
            sources = self._source_map(claimed)
        while True:
            try:
                self.writer.hold()  # connecting to a lake reads its catalog, under the cap too
                return self.writer.land_staged(claimed, sources, datetime.now(UTC), parsed)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                self.writer.release()  # the next connection gets the raised cap
                cap = more_memory(self.writer.engine)
                if cap is None:
                    raise
                log.info("a batch needed more memory than DuckDB's cap; the cap is now %d MB", cap)

    def settle(self) -> None:
        """Wait until the last landed batch is marked. A failed mark loses nothing: the claim's lease
        ends, the batch lands again and adds no row."""
        marking, self._marking = self._marking, None
        if marking is not None:
            try:
                marking.result()
            except Exception as exc:
                log.warning("marking a landed batch failed (it will be re-landed, adding nothing): %s", exc)

    def close(self) -> None:
        """Finish marking, give back a batch claimed ahead, stop the helper thread."""
        self.settle()
        self._give_back_ahead()
        self._helper.shutdown(wait=True)
        self.writer.release()

    def _claim(self, limit: int, parse: bool = False) -> Claimed:
        """A claim of up to `limit` bodies; parsed too when asked (else land_staged parses it as it
        lands)."""
        token = claim_token()
        claimed = self.staging.claim(limit, self.lease_s, token)
        kept = self.staging.drop_seen(claimed) if claimed else claimed  # late retries of archived events
        if claimed and not kept:
            self.staging.release(token)
        parsed, sources = self._parse(kept) if parse and kept else (None, None)
        return Claimed(token, limit - (len(claimed) - len(kept)), kept, parsed, sources)

    def _parse(self, claimed: list[Staged]) -> tuple[Any, dict[str, Source] | None]:
        """The writer's work ahead on a batch and the source map it used, which the landing then takes
        as it is (looking a batch's 25,000 source ids up again was ~3% of the landing thread's time);
        None, None when it failed (land_staged then does it all)."""
        try:
            sources = self._source_map(claimed)
            return self.writer.parse(claimed, sources), sources
        except Exception as exc:
            log.warning("parsing a batch failed (%s: %s); it is landed without", type(exc).__name__, exc)
            return None, None

    def _take(self) -> Claimed:
        """The batch claimed ahead, or a claim now. With `parse_ahead`, a claim made now (a backlog's
        first) is a small one: its parse is the one that nothing overlaps, so it is kept short while the
        helper parses the next, full batch."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            return ahead.result()
        first = max(1, self.batch_size // FIRST_CLAIM_PART) if self.parse_ahead else self.batch_size
        return self._claim(first)

    def _claim_ahead(self) -> None:
        self._ahead = self._helper.submit(self._claim, self.batch_size, self.parse_ahead)

    def _give_back_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            try:
                self.staging.release(ahead.result().token)
            except Exception as exc:  # its lease will end on its own
                log.warning("could not give back a batch claimed ahead: %s", exc)

    def _mark(self, token: str, prepared: Prepared) -> None:
        self.staging.quarantine(token, prepared.unreadable, "invalid json: not one JSON object")
        for failed_id, reason in prepared.failed:
            self.staging.quarantine(token, [failed_id], reason)
        self.staging.mark_landed(token)

    @staticmethod
    def _observe(result: BatchResult, batches: dict[str, SchemaBatch]) -> None:
        metrics = m()
        metrics.batch_seconds.observe(result.millis / 1000)
        metrics.batch_size.observe(result.claimed)
        for schema, added in result.per_source.items():
            metrics.landed.labels(schema).inc(added)
        for schema, batch in batches.items():
            metrics.discards.labels(schema).inc(len(batch.discards))

    def drain(
        self,
        on_batch: Callable[[BatchResult], None] | None = None,
        max_wait_s: float = 60.0,
        upto: int | None = None,
    ) -> int:
        """Land everything staged so far; retry transient failures with backoff for up to max_wait_s.
        With `upto` (a seq), stop once every body staged up to it has landed, though more keep coming:
        bodies another lander holds are waited for (their lease frees them should it die)."""
        total = 0
        backoff = Backoff()
        deadline = time.monotonic() + max_wait_s
        while True:
            try:
                result = self.run_once()
            except TransientError as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("landing failed, will retry: %s", exc)
                time.sleep(backoff.next())
                continue
            backoff.reset()
            deadline = time.monotonic() + max_wait_s
            if on_batch:
                on_batch(result)
            total += result.landed
            if upto is None:
                if result.claimed == 0:
                    break
            elif not result.full or result.last_seq >= upto:
                # Near the end: look whether anything up to `upto` is left (a full batch below it means
                # more is; not looking then keeps the marking beside the next batch's landing).
                self.settle()  # the last batch's marks count
                if self.staging.pending_count(upto) == 0:
                    break
                if result.claimed == 0:
                    time.sleep(WAIT_FOR_OTHERS_S)  # the rest are another lander's, landing now
        self.settle()
        return total


# A backlog's first claim, with parse_ahead, is this part of a full batch (see Lander._take).
FIRST_CLAIM_PART = 8

# How often a drain up to a seq looks again when the bodies left are another lander's.
WAIT_FOR_OTHERS_S = 0.05
