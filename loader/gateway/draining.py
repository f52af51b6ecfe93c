"""uvicorn's HTTP protocol for a gateway process that may be replaced while clients keep posting.

When uvicorn shuts a server down it closes every idle keep-alive connection at once, and a request a
client sent on one a moment before is cut (a reset, or an EOF): Customer.io then waits an hour before
it tries again. A draining connection here is left open instead: its next request is answered with
`Connection: close` (the client opens its next connection to a process that still accepts), and one
that stays idle is closed by the keep-alive timeout (or the header deadline) as any idle one is.
"""

from __future__ import annotations

from loader.gateway.protocol import HeaderDeadlineProtocol


class DrainingProtocol(HeaderDeadlineProtocol):
    """Answers the requests of a shutting-down server, each with `Connection: close`, and cuts none."""

    _draining = False

    def shutdown(self) -> None:
        self._draining = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False
