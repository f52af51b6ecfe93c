"""A fixed-rate HTTP/1.1 load generator on asyncio streams, corrected for coordinated omission:
each request's latency counts from when it was due, not from when a connection was free."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> int:
    writer.write(payload)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    return status


def http_post(host: str, port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def fixed_rate(
    host: str,
    port: int,
    path: str,
    make_body: Callable[[int], bytes],
    rate: float,
    seconds: float,
    connections: int = 32,
) -> tuple[list[float], list[float], int]:
    """Post at `rate` requests/s for `seconds`. Returns (latencies in s, send times, non-200 count)."""
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection(host, port))
    latencies: list[float] = []
    sent_at: list[float] = []
    errors = 0

    async def one(i: int, due: float) -> None:
        nonlocal errors
        conn = await pool.get()
        try:
            status = await _request(*conn, http_post(host, port, path, make_body(i)))
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
            conn = await asyncio.open_connection(host, port)
            status = 0
        done = time.perf_counter()
        pool.put_nowait(conn)
        if status != 200:
            errors += 1
        latencies.append(done - due)
        sent_at.append(time.time())

    start = time.perf_counter()
    total = int(rate * seconds)
    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        _, writer = pool.get_nowait()
        writer.close()
    return latencies, sent_at, errors
