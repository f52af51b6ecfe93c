"""Answering the requests of a group commit."""

from __future__ import annotations

import asyncio


def settle(futures: list[asyncio.Future[None]], exc: BaseException | None) -> None:
    """Resolve each future still waiting: with `exc` if given, else done."""
    for future in futures:
        if future.done():
            continue
        if exc is None:
            future.set_result(None)
        else:
            future.set_exception(exc)
