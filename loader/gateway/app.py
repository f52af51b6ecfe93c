"""The Starlette app: POST /v1/webhook and GET /health. The request path ends at staging."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import orjson
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from loader.gateway.accesslog import AccessLog
from loader.gateway.auth import signature_ok, write_key_from
from loader.gateway.committer import Committer
from loader.gateway.sources import SourceCache
from loader.settings import Settings
from loader.staging import QUARANTINED, Incoming, Staging
from loader.staging.store import make_staging_engine
from loader.transform import message_id

log = logging.getLogger("loader.gateway")

BODY_TIMEOUT_S = 30.0
# The gateway commits on its event loop, so it leaves copying SQLite's WAL back into the database to the
# lander (which commits every batch with SQLite's default of 1,000 pages): a checkpoint in a gateway
# commit stalled every request for 20-700 ms. Past this many pages (~80 MB) it checkpoints itself, in
# case no lander runs.
GATEWAY_CHECKPOINT_PAGES = 20_000


class BodyTooLarge(Exception):
    pass


def text(status: int, body: str) -> Response:
    return PlainTextResponse(body, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes `limit` bytes (never read whole into memory)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class Gateway:
    """Request handlers with their collaborators (staging, sources, committer, settings)."""

    def __init__(self, settings: Settings, staging: Staging) -> None:
        self.settings = settings
        self.staging = staging
        self.sources = SourceCache(staging)
        self.committer = Committer(staging)

    async def webhook(self, request: Request) -> Response:
        key = write_key_from(request)
        if not key:
            return text(401, "failed to read writekey from query params")
        try:
            source = await self.sources.get(key)
        except Exception as exc:  # a key not seen yet is looked up in staging, which may fail
            log.error("could not look up a write key in staging: %s", type(exc).__name__)
            return text(503, "staging unavailable, retry later")
        if source is None:
            return text(401, "invalid write key")
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                raw = await read_body(request, self.settings.max_body_bytes)
        except BodyTooLarge:
            return text(413, "request size exceeds max limit")
        except TimeoutError:
            return text(408, "request body timeout")
        except ClientDisconnect:
            return text(400, "client disconnected")
        if source.signing_key is not None and not signature_ok(
            source.signing_key,
            request.headers.get("x-cio-timestamp"),
            request.headers.get("x-cio-signature"),
            raw,
            self.settings.signature_max_age_s,
        ):
            return text(401, "invalid signature")
        ip = request.client.host if request.client else None
        body, reason = parse_object(raw)
        record = Incoming(
            source_id=source.id,
            message_id=message_id(source.id, body, raw),
            received_at=time.time(),
            request_ip=ip,
            body=raw,
            state=QUARANTINED if body is None else 0,
            reason=reason,
        )
        try:
            await self.committer.submit(record)
        except Exception:
            return text(503, "staging unavailable, retry later")
        if body is None:
            return text(400, "invalid json")
        return text(200, "OK")

    async def health(self, request: Request) -> Response:
        try:
            await asyncio.to_thread(self.staging.pending_count)
            ok = self.committer.alive
        except Exception:
            ok = False
        payload = {"status": "ok" if ok else "unavailable", "sources": self.sources.count}
        return JSONResponse(payload, status_code=200 if ok else 503)

    async def metrics(self, request: Request) -> Response:
        from loader.metrics import render

        body, content_type = await asyncio.to_thread(render, self.staging)
        return Response(body, media_type=content_type)

    async def dashboard(self, request: Request) -> Response:
        from loader.gateway.dashboard import render

        return HTMLResponse(await asyncio.to_thread(render, self.settings, self.staging))

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


def parse_object(raw: bytes) -> tuple[dict | None, str | None]:
    """(the JSON object, None), or (None, why not) for anything that is not exactly one JSON object."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, f"invalid json: {str(exc)[:200]}"
    if not isinstance(body, dict):
        return None, f"invalid json: a {type(body).__name__}, not an object"
    return body, None


class GatewayApp:
    """The ASGI app: POST /v1/webhook goes straight to its handler (the hot path skips Starlette's
    routing and middleware stack); everything else, lifespan included, goes to the Starlette app."""

    def __init__(self, app: Starlette, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/webhook" and scope["method"] == "POST":
            response = await self.gateway.webhook(Request(scope, receive))
            await response(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def create_app(settings: Settings, staging: Staging | None = None) -> ASGIApp:
    """The ASGI app; staging is created from settings unless given."""
    if staging is None:
        # Tables first, waiting for the lock like any other process (the lander, or other workers, may be
        # creating them at the same moment); then the engine of the request path, on which a held write
        # lock raises StagingBusy at once, so that the Committer retries from the loop, not inside SQLite.
        setup = Staging(settings.staging_url)
        try:
            setup.create()
        finally:
            setup.dispose()
        engine = make_staging_engine(
            settings.staging_url, autocheckpoint_pages=GATEWAY_CHECKPOINT_PAGES, busy_timeout_s=0
        )
        staging = Staging(settings.staging_url, engine)
    gateway = Gateway(settings, staging)
    app = Starlette(
        routes=[
            # POST is served by GatewayApp before routing; the route stays so other methods get 405.
            Route("/v1/webhook", gateway.webhook, methods=["POST"]),
            Route("/health", gateway.health, methods=["GET"]),
            Route("/metrics", gateway.metrics, methods=["GET"]),
            Route("/", gateway.dashboard, methods=["GET"]),
        ],
        lifespan=gateway.lifespan,
    )
    app.state.gateway = gateway
    return AccessLog(GatewayApp(app, gateway))
