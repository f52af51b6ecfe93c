"""An access log without query strings: the write key travels in the query, so it is never printed."""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loader import logs
from loader.metrics import m

log = logging.getLogger("loader.access")
LINE = '%s "%s %s" %d %.1fms'
ROUTES = {"/v1/webhook": "webhook", "/health": "health", "/metrics": "metrics", "/": "dashboard"}


@lru_cache(maxsize=256)
def _counter(route: str, status: int) -> Any:
    return m().requests.labels(route, str(status))


def access_log(scope: Scope, status: int, started: float) -> None:
    """Count the request, and log its method, path (no query), status and milliseconds."""
    route = ROUTES.get(scope.get("path", ""), "other")
    _counter(route, status).inc()
    if log.isEnabledFor(logging.INFO):
        client = scope.get("client")
        args = (
            client[0] if client else "-",
            scope.get("method", "-"),
            scope.get("path", "-"),
            status,
            (time.perf_counter() - started) * 1000,
        )
        lines = logs.lines()
        if lines is not None and lines.write(log, logging.INFO, LINE % args):
            return
        # The record is made here: log.info would also walk the stack for its caller, per request.
        log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, LINE, args, None))


class AccessLog:
    """Middleware that writes `access_log` for each HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            access_log(scope, status, started)
