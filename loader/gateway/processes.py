"""The gateway processes of `loader serve`, on sockets this process holds open for their whole life.

A reload (SIGHUP) starts new processes from the code installed now, waits until each accepts, then
sends the old ones SIGTERM: they stop accepting and answer what they still hold, while the new ones
take every new connection from the same sockets. No connection is refused or cut at any moment, so an
upgrade is: install the new version, then SIGHUP.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from loader.metrics import m
from loader.settings import Settings

log = logging.getLogger("loader.serve")

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 40.0  # a draining process's graceful bound, and some


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket that child processes inherit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    ready: int  # the read end of its readiness pipe


class GatewayProcesses:
    """`count` gateway processes on `sockets`; replaced as a whole by reload(), one that dies is
    started again."""

    def __init__(
        self, settings: Settings, sockets: list[socket.socket], count: int, admin_port: int | None
    ) -> None:
        self.settings, self.sockets, self.count = settings, sockets, count
        self.admin_port = admin_port or 0
        self.current: list[Worker] = []
        self._draining: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        workers = [self._spawn() for _ in range(self.count)]
        if not self._wait_ready(workers):
            self._kill(workers)
            raise RuntimeError("the gateway did not start (its log says why)")
        self.current = workers

    def reload(self) -> bool:
        """New processes in place of the current ones; False (and the old ones kept) if they fail."""
        fresh = [self._spawn() for _ in range(self.count)]
        if not self._wait_ready(fresh):
            self._kill(fresh)
            log.error("reload failed: the new gateway processes did not start; the old ones keep serving")
            return False
        with self._lock:
            old, self.current = self.current, fresh
            for worker in old:
                worker.proc.terminate()
                self._draining.append(worker.proc)
        log.info("reloaded: %d new gateway process(es); the old ones finish what they hold", len(fresh))
        return True

    def check(self) -> None:
        """Start again a process that exited on its own; reap drained ones."""
        with self._lock:
            self._draining = [p for p in self._draining if p.poll() is None]
            for i, worker in enumerate(self.current):
                code = worker.proc.poll()
                if code is None:
                    continue
                log.error("a gateway process exited (code %s); starting another", code)
                m().restarts.labels("gateway").inc()
                fresh = self._spawn()
                if self._wait_ready([fresh]):
                    self.current[i] = fresh
                else:
                    self._kill([fresh])
                    time.sleep(1.0)

    def stop(self) -> None:
        """SIGTERM to all: each stops accepting, answers what it holds, and exits."""
        with self._lock:
            procs = [w.proc for w in self.current] + self._draining
            self.current, self._draining = [], []
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _spawn(self) -> Worker:
        read, write = os.pipe()
        fds = [s.fileno() for s in self.sockets]
        command = [
            sys.executable,
            "-m",
            "loader.gateway.worker",
            str(os.getpid()),
            str(write),
            str(self.admin_port),
            *map(str, fds),
        ]
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, pass_fds=(*fds, write))
        os.close(write)
        assert proc.stdin is not None
        proc.stdin.write(self.settings.to_json().encode())
        proc.stdin.close()
        return Worker(proc, read)

    def _wait_ready(self, workers: list[Worker]) -> bool:
        """Whether every worker said it accepts before READY_TIMEOUT_S."""
        waiting = {w.ready: w for w in workers}
        deadline = time.monotonic() + READY_TIMEOUT_S
        ok = True
        while waiting and ok:
            left = deadline - time.monotonic()
            readable, _, _ = select.select(list(waiting), [], [], max(0.0, min(left, 0.5)))
            for fd in readable:
                ok = ok and os.read(fd, 1) == b"1"
                os.close(fd)
                waiting.pop(fd)
            ok = ok and left > 0 and all(w.proc.poll() is None for w in waiting.values())
        for fd in waiting:
            os.close(fd)
        return ok and not waiting

    @staticmethod
    def _kill(workers: list[Worker]) -> None:
        for worker in workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
            worker.proc.wait()
