"""Keeps one of `loader serve`'s helper processes running: when it exits on its own (a crash, the OOM
killer, a stray kill), it is started again, after a pause that grows while it keeps failing.

Without this, a gateway whose lander died went on answering 200 while nothing landed until someone
restarted serve (the bodies were safe in staging, but freshness was gone).
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time

from loader import child
from loader.backoff import Backoff
from loader.metrics import m
from loader.settings import Settings

log = logging.getLogger("loader.serve")

# A child that ran this long before exiting was working: the next start waits the shortest pause again.
HEALTHY_RUN_S = 60.0


class Supervised:
    """A child process (`child.start(target, settings)`) kept running until `stop`."""

    def __init__(self, target: str, settings: Settings, name: str) -> None:
        self.target, self.settings, self.name = target, settings, name
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        self._proc = child.start(self.target, self.settings)
        # A child started from the watcher gets its parent-death signal when that thread ends (prctl
        # ties it to the thread), so the watcher returns only once stop() has seen the child out; as a
        # daemon it never holds up the interpreter's exit.
        self._watcher = threading.Thread(target=self._watch, name=f"supervise-{self.name}", daemon=True)
        self._watcher.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (the lander finishes its batch, marks it and exits), SIGKILL after `timeout_s`."""
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._watcher is not None:
            self._watcher.join()

    def restart(self) -> None:
        """Stop the child (after its batch) and start a new one, from the code installed now."""
        self.stop()
        self._stopping.clear()
        self.start()

    def _watch(self) -> None:
        backoff = Backoff(first=0.5, cap=10.0)
        while True:
            with self._lock:
                proc = self._proc
            assert proc is not None
            started = time.monotonic()
            code = proc.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= HEALTHY_RUN_S:
                backoff.reset()
            pause = backoff.next()
            log.error("the %s exited (code %s); starting it again in %.1fs", self.name, code, pause)
            m().restarts.labels(self.name).inc()
            if self._stopping.wait(pause):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._proc = child.start(self.target, self.settings)
