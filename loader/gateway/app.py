"""The Starlette app: POST /v1/webhook and GET /health. The request path ends at staging."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loader.disk import free_space
from loader.gateway.accesslog import AccessLog, access_log
from loader.gateway.auth import header_value, signature_ok, write_key_from
from loader.gateway.committer import Committer
from loader.gateway.sources import SourceCache
from loader.gateway.walsync import WalSync
from loader.settings import Settings
from loader.staging import QUARANTINED, Incoming, Staging
from loader.staging.store import make_staging_engine, sqlite_file
from loader.transform import event_key, id_of_key, is_utf8

log = logging.getLogger("loader.gateway")

# The gateway commits on its event loop, so it leaves copying SQLite's WAL back into the database to the
# lander (which commits every batch with SQLite's default of 1,000 pages): a checkpoint in a gateway
# commit stalled every request for 20-700 ms. Past this many pages (~80 MB) it checkpoints itself, in
# case no lander runs.
GATEWAY_CHECKPOINT_PAGES = 20_000


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Receive, declared: str | None, limit: int) -> bytes | bytearray:
    """The body, refused as soon as it passes `limit` bytes (never read whole into memory). A body in
    several chunks is gathered in one buffer, so it is held whole only once."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    gathered: bytearray | None = None
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        if gathered is None and not message.get("more_body", False):
            if len(chunk) > limit:
                raise BodyTooLarge
            return chunk
        if gathered is None:
            gathered = bytearray()
        if len(gathered) + len(chunk) > limit:
            raise BodyTooLarge
        gathered += chunk
        if not message.get("more_body", False):
            return gathered


def body_arrived(receive: Receive) -> bool:
    """Whether the server already holds the whole body, so reading it cannot wait and needs no
    deadline: uvicorn's request cycle (the `receive` it hands us is its bound method) says so with
    `more_body`. A webhook's body nearly always comes with its headers, and the deadline
    (`asyncio.timeout`: a timer armed and cancelled, ~3.6 µs) was ~5% of the gateway's time: under wrk
    it answered 13.3-15.6k against 12.3-15.0k requests/s without it (five alternating pairs, more in
    each). Any other server, or a body still on its way, gets the deadline."""
    return getattr(getattr(receive, "__self__", None), "more_body", True) is False


class Gateway:
    """Request handlers with their collaborators (staging, sources, committer, settings)."""

    def __init__(self, settings: Settings, staging: Staging, wal_sync: WalSync | None = None) -> None:
        self.settings = settings
        self.staging = staging
        self.sources = SourceCache(staging)
        self.committer = Committer(staging, wal_sync=wal_sync)

    async def webhook(self, scope: Scope, receive: Receive) -> tuple[int, str]:
        """POST /v1/webhook on the bare ASGI scope (this path is the product's hot path: Starlette's
        Request, query parsing and Response objects were a quarter of its time): (status, text)."""
        key = write_key_from(scope)
        if not key:
            return 401, "failed to read writekey from query params"
        try:
            source = await self.sources.get(key)
        except Exception as exc:  # a key not seen yet is looked up in staging, which may fail
            log.error("could not look up a write key in staging: %s", type(exc).__name__)
            return 503, "staging unavailable, retry later"
        if source is None:
            return 401, "invalid write key"
        try:
            declared = header_value(scope, b"content-length")
            if body_arrived(receive):
                raw = await read_body(receive, declared, self.settings.max_kept_body_bytes)
            else:
                async with asyncio.timeout(self.settings.body_timeout_s):
                    raw = await read_body(receive, declared, self.settings.max_kept_body_bytes)
        except BodyTooLarge:
            return 413, "request size exceeds max limit"
        except TimeoutError:
            return 408, "request body timeout"
        except ClientDisconnect:
            return 400, "client disconnected"
        if source.signing_key is not None and not signature_ok(
            source.signing_key,
            header_value(scope, b"x-cio-timestamp"),
            header_value(scope, b"x-cio-signature"),
            raw,
            self.settings.signature_max_age_s,
        ):
            return 401, "invalid signature"
        client = scope.get("client")
        body, reason = parse_object(raw, self.settings.max_body_bytes)
        key = event_key(source.id, body, raw)
        record = Incoming(
            source_id=source.id,
            message_id=id_of_key(key),
            received_at=time.time(),
            request_ip=client[0] if client else None,
            body=raw,
            state=QUARANTINED if body is None else 0,
            reason=reason,
            event_key=key,
        )
        try:
            await self.committer.submit(record)
        except Exception:
            return 503, "staging unavailable, retry later"
        # A body kept in quarantine is answered 200 too: any other answer makes Customer.io retry the
        # same bytes for 7 days while holding back every later event of the webhook.
        return 200, "OK"

    async def webhook_routed(self, request: Request) -> Response:
        """The same, behind Starlette's routing (for the app without GatewayApp in front)."""
        status, text = await self.webhook(request.scope, request.receive)
        return PlainTextResponse(text, status_code=status)

    async def health(self, request: Request) -> Response:
        reason = None
        try:
            await asyncio.to_thread(self.staging.pending_count)
            if not await self.committer.accepting():
                reason = "staging's last fsync failed; not acknowledging until it is safe again"
        except Exception as exc:
            reason = f"staging cannot be read ({type(exc).__name__})"
        payload: dict[str, Any] = {"status": "unavailable" if reason else "ok", "sources": self.sources.count}
        if reason:
            payload["reason"] = reason
        # A nearly full disk is a warning, not a 503: what is staged is still safe, and a 503 would
        # only hold Customer.io back sooner. Staging's own failure, when it comes, is the 503 above.
        with contextlib.suppress(OSError):
            warning = (await asyncio.to_thread(free_space, self.settings)).warning
            if warning:
                payload["warning"] = warning
        return JSONResponse(payload, status_code=503 if reason else 200)

    async def metrics(self, request: Request) -> Response:
        from loader.metrics import render

        body, content_type = await asyncio.to_thread(render, self.staging, self.settings)
        return Response(body, media_type=content_type)

    async def dashboard(self, request: Request) -> Response:
        from loader.gateway.dashboard import render

        params = dict(request.query_params)
        return HTMLResponse(await asyncio.to_thread(render, self.settings, self.staging, params))

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.committer.start()
        with contextlib.suppress(Exception):
            await self.sources.refresh()
        refresher = asyncio.get_running_loop().create_task(self.sources.keep_fresh())
        try:
            yield
        finally:
            refresher.cancel()
            await self.committer.stop()


def parse_object(raw: bytes | bytearray, limit: int | None = None) -> tuple[dict | None, str | None]:
    """(the JSON object, None), or (None, why not) for anything that is not exactly one JSON object
    of at most `limit` bytes."""
    if limit is not None and len(raw) > limit:
        return None, f"body of {len(raw)} bytes, over LOADER_MAX_BODY_BYTES ({limit})"
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if not is_utf8(raw):
            return None, "not UTF-8"
        return None, f"invalid json: {str(exc)[:200]}"
    if not isinstance(body, dict):
        return None, f"invalid json: a {type(body).__name__}, not an object"
    return body, None


# Served only on the admin listener: campaign figures and source names are not for the internet.
ADMIN_PATHS = frozenset({"/", "/metrics"})


class GatewayApp:
    """The ASGI app: POST /v1/webhook goes straight to its handler (the hot path skips Starlette's
    routing, middleware and response objects); everything else, lifespan included, goes to `app`.
    The dashboard and /metrics answer only on `admin_port` (None: nowhere); the webhook, not there."""

    def __init__(self, app: ASGIApp, gateway: Gateway, state: Any, admin_port: int | None = None) -> None:
        self.app = app
        self.gateway = gateway
        self.state = state
        self.admin_port = admin_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        admin = self.admin_port is not None and (scope.get("server") or (None, None))[1] == self.admin_port
        path = scope["path"]
        if path == "/v1/webhook" and scope["method"] == "POST" and not admin:
            await self._webhook(scope, receive, send)
        elif (path in ADMIN_PATHS) != admin and path != "/health":
            await _answer(send, 404, "Not Found")
        else:
            await self.app(scope, receive, send)

    async def _webhook(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 503
        try:
            try:
                status, body = await self.gateway.webhook(scope, receive)
            except Exception:
                # Trouble of our own: 503, which Customer.io retries with its normal backoff (after a
                # 500 it would wait an hour, holding back the stream).
                log.exception("webhook failed")
                status, body = 503, "unavailable, retry later"
            await _answer(send, status, body)
        finally:
            access_log(scope, status, started)


async def _answer(send: Send, status: int, text: str) -> None:
    start, end = _plain_text(status, text)
    await send(start)
    await send(end)


@functools.lru_cache(maxsize=64)
def _plain_text_parts(text: str) -> tuple[tuple[tuple[bytes, bytes], ...], bytes]:
    body = text.encode()
    return ((b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))), body


def _plain_text(status: int, text: str) -> tuple[Message, Message]:
    """The two ASGI messages of a text/plain answer; headers and body are made once per text, the
    messages afresh (a server or middleware may change a message it is given)."""
    headers, body = _plain_text_parts(text)
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


def create_app(settings: Settings, staging: Staging | None = None, admin_port: int | None = None) -> ASGIApp:
    """The ASGI app; staging is created from settings unless given. The dashboard and /metrics are
    served to requests that arrive on `admin_port` only."""
    wal_sync = None
    if staging is None:
        # Tables first, waiting for the lock like any other process (the lander, or other workers, may be
        # creating them at the same moment); then the engine of the request path, on which a held write
        # lock raises StagingBusy at once, so that the Committer retries from the loop, not inside SQLite.
        setup = Staging(settings.staging_url)
        try:
            setup.create()
        finally:
            setup.dispose()
        # A SQLite file's commits skip their fsync, which the WalSync makes after the commit, outside
        # SQLite's write lock, before the ack.
        database = sqlite_file(settings.staging_url)
        if database is not None:
            wal_sync = WalSync(database)
        engine = make_staging_engine(
            settings.staging_url,
            autocheckpoint_pages=GATEWAY_CHECKPOINT_PAGES,
            busy_timeout_s=0,
            synchronous="FULL" if wal_sync is None else "NORMAL",
        )
        staging = Staging(settings.staging_url, engine)
    gateway = Gateway(settings, staging, wal_sync)
    app = Starlette(
        routes=[
            # POST is served by GatewayApp before routing; the route stays so other methods get 405.
            Route("/v1/webhook", gateway.webhook_routed, methods=["POST"]),
            Route("/health", gateway.health, methods=["GET"]),
            Route("/metrics", gateway.metrics, methods=["GET"]),
            Route("/", gateway.dashboard, methods=["GET"]),
        ],
        lifespan=gateway.lifespan,
        exception_handlers={Exception: unavailable},
    )
    app.state.gateway = gateway
    return GatewayApp(AccessLog(app), gateway, app.state, admin_port)


async def unavailable(request: Request, exc: Exception) -> Response:
    """Any failure of ours is a 503 (Customer.io retries it normally), never a 500."""
    log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return PlainTextResponse("unavailable, retry later", status_code=503)
