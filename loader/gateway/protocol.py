"""uvicorn's HTTP protocol with a deadline for request headers.

uvicorn closes idle keep-alive connections, but a client that opens a connection and sends its
headers slowly (or never) holds it forever. Here such a client is disconnected after
LOADER_HEADER_TIMEOUT_S (10 s). A slow body is handled by the route's own timeout (408).
"""

from __future__ import annotations

import asyncio
import os

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Read here rather than from Settings: uvicorn builds this class in each worker process.
HEADER_TIMEOUT_S = float(os.environ.get("LOADER_HEADER_TIMEOUT_S") or 10.0)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """Closes a connection whose request headers are not complete within the deadline.

    One timer per connection, not one per request: a request only notes when its headers began, and
    the timer, when it fires, closes the connection if the headers it finds pending are overdue, or
    waits for the rest of their time (arming and cancelling a timer per request showed in profiles)."""

    _headers_since: float | None = None
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._headers_begin()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers_begin()

    def on_headers_complete(self) -> None:
        self._headers_since = None
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_since = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    def _headers_begin(self) -> None:
        self._headers_since = self.loop.time()
        if self._deadline is None:
            self._deadline = self.loop.call_at(self._headers_since + HEADER_TIMEOUT_S, self._check)

    def _check(self) -> None:
        self._deadline = None
        if self._headers_since is None:
            return  # no headers pending: the next request arms the timer again
        due = self._headers_since + HEADER_TIMEOUT_S
        if self.loop.time() < due:
            self._deadline = self.loop.call_at(due, self._check)
        elif not self.transport.is_closing():
            self.transport.close()
