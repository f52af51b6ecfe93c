"""Real processes for tests: `loader serve` on a free loopback port, the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alive(pid: int) -> bool:
    """The process runs: it exists and is not a zombie (killed, not yet reaped by its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def loader_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOADER_")}
    env["LOADER_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


def cli(env: dict[str, str], *args: str, stdin: bytes | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "loader", *args], env=env, input=stdin, capture_output=True, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"loader {' '.join(args)} failed: {proc.stderr.decode()}")
    return proc.stdout.decode()


def query_json(env: dict[str, str], sql: str) -> list[dict[str, Any]]:
    return json.loads(cli(env, "query", sql, "--json"))


class Server:
    """`loader serve` in a child process; stop() is a clean shutdown, kill() a kill -9."""

    def __init__(
        self, env: dict[str, str], log_path: Path, workers: int = 1, own_group: bool = False
    ) -> None:
        """`own_group`: serve leads a process group of its own, for a test that kills the whole group."""
        self.port, self.admin_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"  # the dashboard and /metrics
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loader",
                "serve",
                "--port",
                str(self.port),
                "--admin-port",
                str(self.admin_port),
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=own_group,
        )
        self.wait_healthy()

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx2.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("server did not become healthy")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def children(self, role: str) -> list[int]:
        """Live child processes of serve whose command line names `role` ("lander_main", "worker")."""
        found = []
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            try:
                pids = [int(p) for p in (task / "children").read_text().split()]
            except FileNotFoundError:  # the thread ended meanwhile
                continue
            for pid in pids:
                try:
                    if role in Path(f"/proc/{pid}/cmdline").read_text() and alive(pid):
                        found.append(pid)
                except FileNotFoundError:
                    pass
        return found

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for(what: str, check: Any, timeout_s: float = 60.0) -> Any:
    """What `check()` returns once it is truthy; fails the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return found
