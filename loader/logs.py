"""Logging set-up: plain lines by default, JSON lines when LOADER_LOG_JSON asks for it."""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import time

import orjson

PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_TIME = "%Y-%m-%dT%H:%M:%S"


class Formatter(logging.Formatter):
    """The standard formatter, but the date is formatted once a second, not once a line: the gateway
    logs every request, and `time.strftime` was a fifth of its logging cost."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)
        self._stamp: tuple[int, str | None, str] = (-1, None, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self._time(record.created, datefmt, int(record.msecs))

    def _time(self, created: float, datefmt: str | None = None, msecs: int | None = None) -> str:
        """The record's time as the standard formatter writes it (`msecs`: the record's own, if any)."""
        second = int(created)
        cached, cached_fmt, stamp = self._stamp  # one tuple, swapped whole: safe across threads
        if (second, datefmt) != (cached, cached_fmt):
            stamp = time.strftime(datefmt or "%Y-%m-%d %H:%M:%S", self.converter(created))
            self._stamp = (second, datefmt, stamp)
        if datefmt:
            return stamp
        return f"{stamp},{int((created - second) * 1000) if msecs is None else msecs:03d}"

    def line(self, created: float, levelname: str, name: str, message: str) -> str:
        """What `format` gives for a record of these fields made at `created`, without making the
        record; for PLAIN, the only format `setup` makes this formatter with."""
        fields = {"asctime": self._time(created), "levelname": levelname, "name": name, "message": message}
        return PLAIN % fields


class JsonFormatter(Formatter):
    def format(self, record: logging.LogRecord) -> str:
        exc = self.formatException(record.exc_info) if record.exc_info else None
        return self._json(record.created, record.levelname, record.name, record.getMessage(), exc)

    def line(self, created: float, levelname: str, name: str, message: str) -> str:
        return self._json(created, levelname, name, message)

    def _json(self, created: float, levelname: str, name: str, message: str, exc: str | None = None) -> str:
        payload = {
            "ts": self._time(created, JSON_TIME),
            "level": levelname.lower(),
            "logger": name,
            "msg": message,
        }
        if exc is not None:
            payload["exc"] = exc
        return orjson.dumps(payload).decode()


class Lines:
    """Lines for our handler's stream, formatted without a LogRecord and written once per turn of the
    event loop. The gateway logs every request: under wrk, with a record made, formatted and written for
    each, it answered 13.2-14.1k requests/s, with no access lines 16.7-17.3k, and with these 15.6-16.4k
    (make bench's gateway figure: 9.0-9.1k -> 9.5-9.9k). Only while the root's handler is the one
    `setup` installed and nothing else handles or filters the logger's records; otherwise `write`
    declines and the caller logs as usual. That handler writes the queued lines before any record, so
    the stream keeps the order in which lines and records were logged."""

    def __init__(self, handler: Handler, formatter: Formatter) -> None:
        self.handler, self.formatter = handler, formatter
        assert handler.lock is not None  # made by every Handler's __init__
        self._lock = handler.lock  # the handler's, which Handler.emit holds when it flushes
        self._pending: list[str] = []
        atexit.register(self.flush)

    def write(self, logger: logging.Logger, level: int, message: str) -> bool:
        """Queue `message` as `logger`'s line at `level` (the caller has asked `isEnabledFor`); False
        (nothing queued) when the logging set-up is not the one this stands in for. From the event
        loop's thread."""
        if not self._plain_route(logger) or self.handler.level > level:
            return False
        line = self.formatter.line(time.time(), logging.getLevelName(level), logger.name, message)
        with self._lock:  # a record's emit (any thread) flushes: see Handler
            self._pending.append(line)
            first = len(self._pending) == 1
        if first:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop: now
                self.flush()
        return True

    def _plain_route(self, logger: logging.Logger) -> bool:
        """The logger's records would reach our handler alone, unfiltered."""
        root = logging.root
        node: logging.Logger | None = logger
        while node is not None and node is not root:
            if node.handlers or node.filters:
                return False
            if not node.propagate:
                return False
            node = node.parent
        handlers = root.handlers
        return (
            not root.filters
            and len(handlers) == 1
            and handlers[0] is self.handler
            and not self.handler.filters
            and self.handler.formatter is self.formatter
        )

    def flush(self) -> None:
        with self._lock:
            if not self._pending:
                return
            lines, self._pending = self._pending, []
            try:
                self.handler.stream.write(self.handler.terminator.join(lines) + self.handler.terminator)
                self.handler.flush()
            except (OSError, ValueError):  # a closed or broken stream: as logging, never fail the caller
                pass


class Handler(logging.StreamHandler):
    """The root's handler `setup` installs: before it writes a record, it writes the access lines
    queued before it (Lines), which would otherwise follow it at the end of the loop's turn."""

    lines: Lines | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.lines is not None:
            self.lines.flush()  # under the lock `handle` holds (an RLock)
        super().emit(record)


_lines: Lines | None = None


def lines() -> Lines | None:
    """The batched line writer of the set-up `setup` made, if any."""
    return _lines


def setup(json_lines: bool = False, level: int = logging.INFO) -> None:
    """Configure the root logger once for a process."""
    global _lines
    handler = Handler(sys.stderr)
    formatter = JsonFormatter() if json_lines else Formatter(PLAIN)
    handler.setFormatter(formatter)
    # Neither format prints threads or processes: not looking them up saves a fifth of each record's
    # making (the gateway logs every request).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if _lines is not None:
        _lines.flush()
    _lines = handler.lines = Lines(handler, formatter)
