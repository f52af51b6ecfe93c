"""How landers take bodies: per-row leases (PostgreSQL, several hosts) or claim rows (SQLite, one host).

A claim is a lease: if its lander dies, the bodies go back to the queue when it expires (or at once, when
a lander on the same host sees the process is gone). Marking landed happens after the warehouse commit.

PostgreSQL: each body row carries its claim (`FOR UPDATE SKIP LOCKED`), since gateways on several hosts
insert concurrently and sequence numbers are not committed in order. SQLite has one writer at a time, so
a claim is one narrow row naming the bodies it took: claiming does not rewrite the bodies' rows (which
cost ~12 µs per body; the body is in the row), only marking them landed does.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine, func, or_, select, update

from loader.process import pid_alive
from loader.staging.tables import staged

PENDING, LANDED, QUARANTINED = 0, 1, 2
T = TypeVar("T")

# What a claim returns per body, in this order (loader.staging.store.Staged's fields).
CLAIMED_COLUMNS = ("seq", "source_id", "message_id", "received_at", "request_ip", "body", "replay")
BODY_AT = CLAIMED_COLUMNS.index("body")


def claim_token() -> str:
    """Who holds a claim: host, process and a nonce, so a restarted host can free its dead claims."""
    return f"{host()}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


def host() -> str:
    return socket.gethostname()[:40]


def dead_tokens(tokens: Sequence[str | None]) -> list[str]:
    """Tokens of this host's landers whose process is gone."""
    mine = [t for t in tokens if t and t.startswith(f"{host()}:")]
    return [t for t in mine if not pid_alive(int(t.split(":")[1]))]


class Claims(Protocol):
    """What Staging asks of a way of claiming; rows come back as CLAIMED_COLUMNS tuples."""

    def claim(self, limit: int, lease_s: float, token: str, max_bytes: int) -> list[tuple[Any, ...]]: ...
    def mark_landed(self, token: str) -> int: ...
    def quarantine(self, token: str, message_ids: Sequence[str], reason: str) -> None: ...
    def release(self, token: str) -> None: ...
    def release_dead(self) -> int: ...


class RowClaims:
    """Each body row holds its claim; concurrent landers skip rows another has locked."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def claim(self, limit: int, lease_s: float, token: str, max_bytes: int) -> list[tuple[Any, ...]]:
        """The free bodies, oldest first, locked; of those, the ones that start within the byte budget
        (octet_length reads no TOASTed body) take the claim. The rest are unlocked at commit."""
        now = time.time()
        size = func.octet_length(staged.c.body)
        picked = (
            select(staged.c.seq, size.label("size"))
            .where(
                staged.c.state == PENDING,
                or_(staged.c.claimed_until.is_(None), staged.c.claimed_until < now),
            )
            .order_by(staged.c.seq)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("picked")
        )
        before = func.sum(picked.c.size).over(order_by=picked.c.seq) - picked.c.size
        starts = select(picked.c.seq, before.label("before")).subquery("starts")
        kept = select(starts.c.seq).where(starts.c.before < max_bytes)
        stmt = (
            update(staged)
            .where(staged.c.seq.in_(kept.scalar_subquery()))
            .values(claim_token=token, claimed_until=now + lease_s)
            .returning(*(staged.c[name] for name in CLAIMED_COLUMNS))
        )
        with self.engine.begin() as conn:
            return [tuple(row) for row in conn.execute(stmt)]

    def mark_landed(self, token: str) -> int:
        stmt = (
            update(staged)
            .where(staged.c.claim_token == token, staged.c.state == PENDING)
            .values(state=LANDED, landed_at=time.time(), claim_token=None, claimed_until=None, replay=False)
        )
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount

    def quarantine(self, token: str, message_ids: Sequence[str], reason: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(staged)
                .where(staged.c.claim_token == token, staged.c.message_id.in_(list(message_ids)))
                .values(state=QUARANTINED, reason=reason, claim_token=None, claimed_until=None)
            )

    def release(self, token: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(staged)
                .where(staged.c.claim_token == token, staged.c.state == PENDING)
                .values(claim_token=None, claimed_until=None)
            )

    def release_dead(self) -> int:
        with self.engine.begin() as conn:
            tokens = conn.execute(
                select(staged.c.claim_token)
                .where(staged.c.state == PENDING, staged.c.claim_token.like(f"{host()}:%"))
                .distinct()
            ).scalars()
            dead = dead_tokens(list(tokens))
            if dead:
                conn.execute(
                    update(staged)
                    .where(staged.c.claim_token.in_(dead))
                    .values(claim_token=None, claimed_until=None)
                )
        return len(dead)


# SQLite: statements are fixed text (names are ours), run on the driver connection so that a claim can
# take the write lock first (BEGIN IMMEDIATE): two landers never read the same free bodies.
# Free bodies, oldest first: the (state, seq) index answers it without reading a body.
_FREE = """
SELECT s.seq FROM loader_staged s
WHERE s.state = 0 AND NOT EXISTS (
    SELECT 1 FROM loader_claims c WHERE s.seq BETWEEN c.first_seq AND c.last_seq
)
ORDER BY s.seq LIMIT :limit
"""
_CLAIMED = f"""
SELECT {", ".join(CLAIMED_COLUMNS)} FROM loader_staged
WHERE seq IN (SELECT value FROM json_each(:seqs)) ORDER BY seq
"""
_SEQS = "SELECT value FROM json_each((SELECT seqs FROM loader_claims WHERE token = :token))"

# Marking a claim landed updates its rows this many at a time, each a short transaction: the gateway's
# commits wait for SQLite's write lock, and one UPDATE of 25,000 rows held it ~100 ms.
MARK_CHUNK = 1000


class ClaimRows:
    """SQLite: a claim is one row of loader_claims (its token, lease, first/last seq and the seqs)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _write(self, work: Callable[[Any], T]) -> T:
        """Run `work(cursor)` in one write transaction that holds SQLite's write lock from its start."""
        with self.engine.connect() as conn:
            raw: Any = conn.connection.driver_connection
            raw.execute("BEGIN IMMEDIATE")
            try:
                result = work(raw)
            except BaseException:
                raw.rollback()
                raise
            raw.commit()
            return result

    @contextmanager
    def _reading(self) -> Iterator[Any]:
        """A driver connection for reads outside any write lock (a WAL reader never blocks the gateway's
        commits); its read transaction ends on the way out."""
        with self.engine.connect() as conn:
            raw: Any = conn.connection.driver_connection
            try:
                yield raw
            finally:
                raw.rollback()

    def _read(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Rows of one read (tuples already: no row factory)."""
        with self._reading() as raw:
            return raw.execute(sql, params).fetchall()

    def claim(self, limit: int, lease_s: float, token: str, max_bytes: int) -> list[tuple[Any, ...]]:
        """Pick the seqs and record the claim under the write lock (index only, quick); read the
        bodies afterwards, outside it (WAL readers do not block the gateway's commits), up to the byte
        budget, and give back the seqs past it."""

        def work(db: Any) -> list[int]:
            now = time.time()
            db.execute("DELETE FROM loader_claims WHERE claimed_until < ?", (now,))
            seqs = [r[0] for r in db.execute(_FREE, {"limit": limit})]
            if seqs:
                db.execute(
                    "INSERT INTO loader_claims (token, first_seq, last_seq, seqs, claimed_until) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (token, seqs[0], seqs[-1], json.dumps(seqs), now + lease_s),
                )
            return seqs

        seqs = self._write(work)
        if not seqs:
            return []
        rows = self._read_within(seqs, max_bytes)
        if len(rows) < len(seqs):
            kept = json.dumps([row[0] for row in rows])
            self._write(
                lambda db: db.execute(
                    "UPDATE loader_claims SET last_seq = ?, seqs = ? WHERE token = ?",
                    (rows[-1][0], kept, token),
                )
            )
        return rows

    def _read_within(self, seqs: list[int], max_bytes: int) -> list[tuple[Any, ...]]:
        """The claimed rows, oldest first, until their bodies reach `max_bytes` (the one that crosses it
        included). Row by row: a body past the budget is never read."""
        rows: list[tuple[Any, ...]] = []
        size = 0
        with self._reading() as raw:
            for row in raw.execute(_CLAIMED, {"seqs": json.dumps(seqs)}):
                rows.append(row)
                size += len(row[BODY_AT])
                if size >= max_bytes:
                    break
        return rows

    def mark_landed(self, token: str) -> int:
        found = self._read("SELECT seqs FROM loader_claims WHERE token = :token", {"token": token})
        seqs: list[int] = json.loads(found[0][0]) if found else []
        now, count = time.time(), 0

        def mark(part: str) -> Callable[[Any], int]:
            return lambda db: int(
                db.execute(
                    "UPDATE loader_staged SET state = 1, landed_at = ?, replay = 0 "
                    "WHERE state = 0 AND seq IN (SELECT value FROM json_each(?))",
                    (now, part),
                ).rowcount
            )

        for start in range(0, len(seqs), MARK_CHUNK):
            count += self._write(mark(json.dumps(seqs[start : start + MARK_CHUNK])))
        self.release(token)
        return count

    def quarantine(self, token: str, message_ids: Sequence[str], reason: str) -> None:
        def work(db: Any) -> None:
            db.execute(
                "UPDATE loader_staged SET state = 2, reason = :reason "
                f"WHERE state = 0 AND message_id IN (SELECT value FROM json_each(:ids)) AND seq IN ({_SEQS})",
                {"reason": reason, "ids": json.dumps(list(message_ids)), "token": token},
            )

        self._write(work)

    def release(self, token: str) -> None:
        self._write(lambda db: db.execute("DELETE FROM loader_claims WHERE token = ?", (token,)))

    def release_dead(self) -> int:
        def work(db: Any) -> int:
            dead = dead_tokens([r[0] for r in db.execute("SELECT token FROM loader_claims")])
            db.executemany("DELETE FROM loader_claims WHERE token = ?", [(t,) for t in dead])
            return len(dead)

        return self._write(work)


# Which claims each staging dialect uses; Staging talks to them only through the Claims protocol.
CLAIMS: dict[str, Callable[[Engine], Claims]] = {"postgresql": RowClaims, "sqlite": ClaimRows}
