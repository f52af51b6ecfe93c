"""The ceiling: a bare Starlette route that reads and parses the same body, under the same uvicorn."""

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def webhook(request: Request) -> PlainTextResponse:
    orjson.loads(await request.body())
    return PlainTextResponse("OK")


app = Starlette(routes=[Route("/v1/webhook", webhook, methods=["POST"])])
