"""Customer.io never stalls: a reload (SIGHUP) refuses no connection and drops no request; only the
webhook and /health face the internet; operations while serving never make the gateway answer non-2xx."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.procs import Server, cli, loader_env, query_json, wait_for
from tests.test_landing import events

pytestmark = pytest.mark.slow
KEY = "K-reload-0000001"
CUSTOMER_IO_TIMEOUT_S = 4.0


class Clients:
    """Clients posting continuously, each on its own keep-alive connection, as Customer.io does; every
    answer that is not a 2xx, every connection error and the slowest answer are recorded."""

    def __init__(self, url: str, bodies: list[bytes], count: int = 8) -> None:
        self.url, self.bodies = url, bodies
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self.slowest = 0.0
        self.sent = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i, count)) for i in range(count)]

    def __enter__(self) -> Clients:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _run(self, index: int, count: int) -> None:
        mine = self.bodies[index::count]
        with httpx2.Client(base_url=self.url, params={"writeKey": KEY}, timeout=10) as client:
            i = 0
            while not self._stop.is_set():
                raw = mine[i % len(mine)]  # past the end: retries of what was sent
                i += 1
                started = time.perf_counter()
                try:
                    status = client.post("/v1/webhook", content=raw).status_code
                except httpx2.HTTPError as exc:
                    with self._lock:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with self._lock:
                    self.statuses.append(status)
                    self.slowest = max(self.slowest, time.perf_counter() - started)
                    self.sent += 1
                time.sleep(0.005)


def test_three_reloads_under_eight_clients_refuse_nothing_and_land_every_event_once(tmp_path: Path) -> None:
    env = loader_env(tmp_path / "data")
    cli(env, "source", "add", "Reloaded", "--write-key", KEY)
    server = Server(env, tmp_path / "serve.log", workers=2)
    bodies = [json.dumps(e).encode() for e in events(1500, seed=31)]
    try:
        gateways = wait_for("the gateways", lambda: sorted(server.children("gateway.worker")))
        lander = wait_for("the lander", lambda: server.children("lander_main"))
        with Clients(server.url, bodies) as clients:
            for _ in range(3):
                time.sleep(1.0)
                server.proc.send_signal(signal.SIGHUP)
                old = set(gateways)
                gateways = wait_for(
                    "new gateways only",
                    lambda old=old: (
                        (now := sorted(server.children("gateway.worker")))
                        and not old & set(now)
                        and len(now) == 2
                        and now
                    ),
                )
            wait_for("every body sent once", lambda: clients.sent >= len(bodies) + 100, timeout_s=60)
        assert clients.errors == [], clients.errors[:5]
        assert set(clients.statuses) == {200}, {s for s in clients.statuses if s != 200}
        assert clients.slowest < CUSTOMER_IO_TIMEOUT_S
        assert server.children("lander_main") != lander  # the lander moved to the new code too
        wait_for(
            "every event to land",
            lambda: query_json(env, "SELECT count(*) AS n FROM reloaded.tracks")[0]["n"] >= len(bodies),
        )
        time.sleep(1.0)
        [counts] = query_json(env, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM reloaded.tracks")
    finally:
        server.stop()
    assert counts == {"n": len(bodies), "d": len(bodies)}
    assert "Traceback" not in server.output()


def test_sigterm_answers_what_is_in_flight_then_stops(tmp_path: Path) -> None:
    env = loader_env(tmp_path / "data")
    cli(env, "source", "add", "Stopping", "--write-key", KEY)
    server = Server(env, tmp_path / "serve.log")
    bodies = [json.dumps(e).encode() for e in events(400, seed=32)]
    with Clients(server.url, bodies, count=4) as clients:
        wait_for("some traffic", lambda: clients.sent > 50)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0
    # Every request that got an answer got a 200; those after the stop found no server (as any stopped
    # service), and nothing acknowledged is lost.
    assert set(clients.statuses) == {200}
    restarted = Server(env, tmp_path / "serve2.log")
    try:
        acked = clients.sent
        wait_for(
            "what was acknowledged to land",
            lambda: query_json(env, "SELECT count(*) AS n FROM stopping.tracks")[0]["n"] >= min(acked, 400),
        )
    finally:
        restarted.stop()


def test_only_the_webhook_and_health_face_the_public_port(tmp_path: Path) -> None:
    env = loader_env(tmp_path / "data")
    cli(env, "source", "add", "Faces", "--write-key", KEY)
    server = Server(env, tmp_path / "serve.log")
    try:
        assert httpx2.get(server.url + "/").status_code == 404
        assert httpx2.get(server.url + "/metrics").status_code == 404
        assert httpx2.get(server.url + "/health").status_code == 200
        webhook = {"params": {"writeKey": KEY}, "content": b"{}"}
        assert httpx2.post(server.url + "/v1/webhook", **webhook).status_code == 200
        assert "Faces" in httpx2.get(server.admin_url + "/").text
        assert "loader_http_requests_total" in httpx2.get(server.admin_url + "/metrics").text
        assert httpx2.post(server.admin_url + "/v1/webhook", **webhook).status_code == 404
    finally:
        server.stop()


def test_migrate_source_add_replay_and_backfill_while_serving_never_stall_the_gateway(tmp_path: Path) -> None:
    env = loader_env(tmp_path / "data")
    cli(env, "source", "add", "Online", "--write-key", KEY)
    server = Server(env, tmp_path / "serve.log")
    bodies = [json.dumps(e).encode() for e in events(800, seed=33)]
    backfill = tmp_path / "backfill.jsonl"
    backfill.write_text(
        "\n".join(json.dumps(e | {"event_id": f"BF{i}"}) for i, e in enumerate(events(300, seed=34)))
    )
    try:
        with Clients(server.url, bodies, count=4) as clients:
            wait_for("some traffic", lambda: clients.sent > 50)
            cli(env, "migrate")
            cli(env, "source", "add", "Added Later", "--write-key", "K-later-00000001")
            cli(env, "backfill", str(backfill), "--source", "Online", "--quiet")
            cli(env, "replay", "Online")
            cli(env, "migrate")
            time.sleep(1.0)
        assert clients.errors == [] and set(clients.statuses) == {200}
        assert clients.slowest < CUSTOMER_IO_TIMEOUT_S
    finally:
        server.stop()
