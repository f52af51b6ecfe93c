"""`loader serve` as a newcomer runs it: real processes, real HTTP on loopback, the CLI to check."""

import json
import os
import random
import re
import signal
import threading
import time
from pathlib import Path

import httpx2
import pytest

from tests.procs import Server, alive, cli, loader_env, query_json, wait_for
from tests.test_gateway import hold_write_lock
from tests.test_landing import events

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path, warehouse_url: str) -> dict[str, str]:
    return loader_env(tmp_path / "data", LOADER_WAREHOUSE_URL=warehouse_url)


def test_newcomer_path(env: dict[str, str], tmp_path: Path) -> None:
    out = cli(env, "source", "add", "Customer IO Prod", "--write-key", "K-newcomer-1")
    assert "customer_io_prod" in out and "/v1/webhook?writeKey=K-newcomer-1" in out
    server = Server(env, tmp_path / "serve.log")
    sent = events(300, seed=3)
    bodies = [json.dumps(e).encode() for e in sent]
    retries = random.Random(2).sample(bodies, 60)
    try:
        with httpx2.Client(base_url=server.url, params={"writeKey": "K-newcomer-1"}) as client:
            for raw in bodies + retries:
                assert client.post("/v1/webhook", content=raw).status_code == 200
            assert (
                client.post("/v1/webhook", params={"writeKey": "wrong-key"}, content=bodies[0]).status_code
                == 401
            )
    finally:
        server.stop()
    output = server.output()
    assert "K-newcomer-1" not in output and "writeKey" not in output
    access = [line for line in output.splitlines() if " loader.access: " in line]
    assert sum('"POST /v1/webhook" 200 ' in line for line in access) == 360  # one line a request
    assert sum('"POST /v1/webhook" 401 ' in line for line in access) == 1
    line_format = (
        r'[-\d]{10} [:\d]{8},\d{3} INFO loader\.access: 127\.0\.0\.1 "[A-Z]+ /[^" ]*" \d{3} [.\d]+ms'
    )
    assert all(re.fullmatch(line_format, line) for line in access), access[:3]
    cli(env, "flush")
    [counts] = query_json(env, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM customer_io_prod.tracks")
    assert counts == {"n": 300, "d": 300}
    per_event = {
        r["event"]: r["n"]
        for r in query_json(env, "SELECT event, count(*) AS n FROM customer_io_prod.tracks GROUP BY event")
    }
    union = " UNION ALL ".join(
        f"SELECT '{t}' AS t, count(*) AS n, count(DISTINCT id) AS d, min(event_id) AS e, "
        f"min(original_timestamp) AS ts FROM customer_io_prod.{t}"
        for t in sorted(per_event)
    )
    by_id = {e["event_id"]: e for e in sent}
    for got in query_json(env, union):
        assert (got["n"], got["d"]) == (per_event[got["t"]], per_event[got["t"]]), got
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(by_id[got["e"]]["timestamp"]))
        assert got["ts"].replace(" ", "T").startswith(when), got


def test_events_are_queryable_while_serving(env: dict[str, str], tmp_path: Path) -> None:
    cli(env, "source", "add", "Live", "--write-key", "K-live-0001")
    server = Server(env, tmp_path / "serve.log")
    try:
        with httpx2.Client(base_url=server.url, params={"writeKey": "K-live-0001"}) as client:
            for raw in [json.dumps(e).encode() for e in events(20)]:
                assert client.post("/v1/webhook", content=raw).status_code == 200
        deadline = time.monotonic() + 60
        seen = 0
        while time.monotonic() < deadline and seen < 20:
            seen = query_json(env, "SELECT count(*) AS n FROM live.tracks")[0]["n"]
            time.sleep(0.2)
        assert seen == 20
    finally:
        server.stop()


def test_a_lander_that_dies_is_started_again(env: dict[str, str], tmp_path: Path) -> None:
    """The lander killed on its own (a crash, the OOM killer): serve starts it again, so what is posted
    afterwards still lands; the restart is logged and counted."""
    cli(env, "source", "add", "Phoenix", "--write-key", "K-phoenix-01")
    server = Server(env, tmp_path / "serve.log")
    try:
        [first] = wait_for("the lander", lambda: server.children("lander_main"))
        os.kill(first, signal.SIGKILL)
        wait_for("a new lander", lambda: [p for p in server.children("lander_main") if p != first])
        with httpx2.Client(base_url=server.url, params={"writeKey": "K-phoenix-01"}) as client:
            for raw in [json.dumps(e).encode() for e in events(20, seed=9)]:
                assert client.post("/v1/webhook", content=raw).status_code == 200
            wait_for(
                "the events to land",
                lambda: query_json(env, "SELECT count(*) AS n FROM phoenix.tracks")[0]["n"] == 20,
            )
            metrics = httpx2.get(server.admin_url + "/metrics").text
        assert 'loader_restarts_total{process="lander"} 1.0' in metrics
    finally:
        server.stop()
    assert "the lander exited (code -9); starting it again" in server.output()


@pytest.mark.parametrize("how", ["stop", "kill -9"])
def test_the_lander_ends_with_the_server(tmp_path: Path, how: str) -> None:
    """A clean stop ends the lander with it; a kill -9 of the server leaves no lander holding files."""
    env = loader_env(tmp_path / "data")
    server = Server(env, tmp_path / "serve.log")
    deadline = time.monotonic() + 30
    while not (landers := server.children("lander_main")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert landers, "serve started no lander"
    server.stop() if how == "stop" else server.kill()
    deadline = time.monotonic() + 30
    while any(alive(p) for p in landers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in landers), [
        (p, Path(f"/proc/{p}/stat").read_text()[:80]) for p in landers if alive(p)
    ]
    assert "Traceback" not in server.output()


def test_a_held_staging_lock_holds_the_ack_not_the_server(env: dict[str, str], tmp_path: Path) -> None:
    """While another writer holds staging's lock, a webhook waits for it (no 200 before its body is
    committed), and the server keeps answering everything else."""
    cli(env, "source", "add", "Busy", "--write-key", "K-busy-1")
    server = Server(env, tmp_path / "serve.log")
    answered: list[httpx2.Response] = []
    try:
        holder = hold_write_lock(Path(env["LOADER_DATA_DIR"]) / "staging.sqlite3")
        try:
            body = json.dumps(events(1, seed=11)[0]).encode()
            waiting = threading.Thread(
                target=lambda: answered.append(
                    httpx2.post(
                        f"{server.url}/v1/webhook", params={"writeKey": "K-busy-1"}, content=body, timeout=30
                    )
                )
            )
            waiting.start()
            time.sleep(0.5)
            assert answered == []  # not acknowledged while its commit cannot happen
            health = httpx2.get(f"{server.url}/health", timeout=5)
            assert health.status_code == 200
            assert answered == []
        finally:
            holder.rollback()
            holder.close()
        waiting.join(timeout=30)
        assert [r.status_code for r in answered] == [200]
    finally:
        server.stop()
    cli(env, "flush")
    assert query_json(env, "SELECT count(*) AS n FROM busy.tracks") == [{"n": 1}]
