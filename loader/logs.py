"""Logging set-up: plain lines by default, JSON lines when LOADER_LOG_JSON asks for it."""

from __future__ import annotations

import logging
import sys
import time

import orjson


class Formatter(logging.Formatter):
    """The standard formatter, but the date is formatted once a second, not once a line: the gateway
    logs every request, and `time.strftime` was a fifth of its logging cost."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)
        self._stamp: tuple[int, str | None, str] = (-1, None, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        cached, cached_fmt, stamp = self._stamp  # one tuple, swapped whole: safe across threads
        if (second, datefmt) != (cached, cached_fmt):
            stamp = time.strftime(datefmt or "%Y-%m-%d %H:%M:%S", self.converter(record.created))
            self._stamp = (second, datefmt, stamp)
        return stamp if datefmt else f"{stamp},{int(record.msecs):03d}"


class JsonFormatter(Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(payload).decode()


def setup(json_lines: bool = False, level: int = logging.INFO) -> None:
    """Configure the root logger once for a process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json_lines else Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    # Neither format prints threads or processes: not looking them up saves a fifth of each record's
    # making (the gateway logs every request).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
