"""Taking turns at a DuckDB file, which one process may write, or any number read, never both at once.

The lander keeps the file open across batches while events keep coming (opening it and checkpointing it
on close cost more than a small batch), letting it go every half second. A reader that found it held
used to race the lander for the moment it let go, and a lander that found a reader holding it failed its
batch, backed off (up to 5 s) and logged a warning. So a process of ours that finds the file held says
so: it leaves a marker in `<file>.turns/`, named after its pid, while it waits for the file and while it
uses it. The lander lets the file go after the batch it is landing, and waits before taking it again
while a live process's marker is there. A marker whose process died is ignored and removed. Tools that
leave no marker (the `duckdb` shell) get the file only when the lander lets it go on its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from loader.process import pid_alive

log = logging.getLogger("loader.warehouse")


class Turns:
    """The markers of processes waiting for (or using) one DuckDB file."""

    def __init__(self, database: str) -> None:
        self.folder = Path(database + ".turns")

    @classmethod
    def of(cls, url: str | URL) -> Turns | None:
        """The turns of a warehouse URL's DuckDB file; None for any other warehouse (no file to share)."""
        parsed = make_url(url)
        database = parsed.database or ""
        if parsed.get_backend_name() != "duckdb" or database in ("", ":memory:"):
            return None
        if database.startswith(("md:", "motherduck:")):  # a service, not a file of ours
            return None
        return cls(os.path.abspath(database))

    @contextlib.contextmanager
    def asking(self) -> Iterator[None]:
        """Leave a marker for as long as the block runs (none, should the folder not be writable: the
        caller then just retries, as it would without turns)."""
        marker = self.folder / f"{os.getpid()}-{secrets.token_hex(4)}"
        try:
            self.folder.mkdir(exist_ok=True)
            marker.touch()
            made = True
        except OSError as exc:
            log.debug("could not ask for a turn at the warehouse file: %s", exc)
            made = False
        try:
            yield
        finally:
            if made:
                marker.unlink(missing_ok=True)

    def others_asking(self) -> bool:
        """True while a live process other than this one has a marker; removes those of dead ones."""
        try:
            names = os.listdir(self.folder)
        except OSError:
            return False
        me = os.getpid()
        for name in names:
            pid = _pid_of(name)
            if pid == me:
                continue
            if pid is not None and pid_alive(pid):
                return True
            with contextlib.suppress(OSError):
                (self.folder / name).unlink()
        return False

    def wait_for_others(self, timeout_s: float, poll_s: float = 0.01) -> bool:
        """Wait (at most `timeout_s`) until no other process asks; True if none does at the end."""
        deadline = time.monotonic() + timeout_s
        while self.others_asking():
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)
        return True


def _pid_of(name: str) -> int | None:
    head = name.split("-", 1)[0]
    return int(head) if head.isdigit() else None
