"""What operators and analysts see: /metrics, the dashboard (also in a real headless Chromium), logs."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from loader import service
from loader.settings import Settings
from tests import test_channels
from tests.conftest import ADMIN, ADMIN_PORT, post
from tests.procs import Server, cli, loader_env
from tests.test_funnel import scenario

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture
def settings(duck_settings: Settings) -> Settings:
    return duck_settings


def test_metrics_exposition(client: TestClient, settings: Settings) -> None:
    post(client, scenario()[0])
    post(client, b"junk")
    service.flush(settings)
    post(client, scenario()[1])
    text = client.get(ADMIN + "/metrics").text
    assert 'loader_http_requests_total{route="webhook",status="200"}' in text
    assert 'loader_backlog{schema="customer_io_prod"} 1.0' in text
    assert 'loader_quarantined{schema="customer_io_prod"} 1.0' in text
    assert 'loader_staged_landed{schema="customer_io_prod"} 1.0' in text
    assert 'loader_events_landed_total{schema="customer_io_prod"}' in text
    assert "loader_landing_seconds_bucket" in text and "loader_batch_size_bucket" in text


THREADS_ASK_FOR_METRICS = """
import threading
from loader.metrics import m
start = threading.Barrier(8)
got = []
def ask():
    start.wait()
    got.append(m())
threads = [threading.Thread(target=ask) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert len(got) == 8 and all(g is got[0] for g in got), got
"""


def test_metrics_made_once_when_threads_ask_at_once() -> None:
    """serve's supervisor thread and its event loop may ask for the metrics at the same moment: one set
    is made, not a second that prometheus-client refuses as a duplicate."""
    for _ in range(3):  # a fresh process each time: the first ask is the one that races
        proc = subprocess.run([sys.executable, "-c", THREADS_ASK_FOR_METRICS], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "Exception" not in proc.stderr, proc.stderr[-2000:]


def test_dashboard_shows_sources_and_funnel(client: TestClient, settings: Settings) -> None:
    for event in scenario():
        post(client, event)
    service.flush(settings)
    page = client.get(ADMIN + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "Customer IO Prod" in html and "<svg" in html
    assert "2024-05-01" in html and "2024-05-02" in html
    assert "80.0%" in html  # the campaign's open rate, 4 of 5 delivered
    assert "<script" not in html and "http://" not in html.split("<body>")[1].replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )


def test_dashboard_escapes_source_names(settings: Settings) -> None:
    from loader.gateway.app import create_app

    service.source_add(settings, "<script>alert(1)</script>", write_key="K-xss-0000001")
    with TestClient(create_app(settings, admin_port=ADMIN_PORT)) as client:
        html = client.get(ADMIN + "/").text
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_dashboard_in_a_real_browser_and_metrics_across_processes(tmp_path: Path) -> None:
    browser = chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have chromium (.ci/run installs it)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    env = loader_env(tmp_path / "data")
    cli(env, "source", "add", "Customer IO Prod", "--write-key", "K-dashboard-01")
    server = Server(env, tmp_path / "serve.log")
    try:
        with httpx2.Client(base_url=server.url, params={"writeKey": "K-dashboard-01"}) as client:
            for event in test_channels.scenario():
                assert client.post("/v1/webhook", content=json.dumps(event).encode()).status_code == 200
            deadline = time.monotonic() + 60
            metrics = ""
            while time.monotonic() < deadline:
                metrics = httpx2.get(server.admin_url + "/metrics").text
                if re.search(r'loader_events_landed_total\{schema="customer_io_prod"\} (\d+)', metrics):
                    break
                time.sleep(0.3)
        landed = re.search(r'loader_events_landed_total\{schema="customer_io_prod"\} ([\d.]+)', metrics)
        assert landed and float(landed.group(1)) == len(
            test_channels.scenario()
        )  # counted in the lander process
        assert 'loader_http_requests_total{route="webhook",status="200"}' in metrics
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ]
        with tempfile.TemporaryDirectory() as profile:
            dom = subprocess.run(
                [browser, *flags, f"--user-data-dir={profile}", "--dump-dom", server.admin_url + "/"],
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
        assert "<svg" in dom and "Customer IO Prod" in dom and ">whatsapp</a>" in dom and "66.7%" in dom
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        shot.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run(
                [
                    browser,
                    *flags,
                    f"--user-data-dir={profile}",
                    f"--screenshot={shot}",
                    "--window-size=1280,1600",
                    "--hide-scrollbars",
                    server.admin_url + "/?channel=push&from=2024-04-25&to=2024-05-05",
                ],
                capture_output=True,
                timeout=60,
            )
        assert shot.exists() and shot.stat().st_size > 10_000
    finally:
        server.stop()
    log = server.output()
    assert "landed batch schema=customer_io_prod" in log
    assert "K-dashboard-01" not in log


@given(st.lists(st.floats(min_value=1e9, max_value=4e9, allow_nan=False), min_size=1, max_size=20))
def test_log_times_formatted_once_a_second_read_as_the_standard_formatter_does(created: list[float]) -> None:
    """The line formatter caches the date part per second; every line must still carry its own time."""
    import logging

    from loader import logs

    ours, standard = logs.Formatter("%(asctime)s %(message)s"), logging.Formatter("%(asctime)s %(message)s")
    json_lines = logs.JsonFormatter()
    for when in sorted(created) + created:  # in order, then out of order (other threads' records)
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "m", None, None)
        record.created, record.msecs = when, int((when - int(when)) * 1000)
        assert ours.format(record) == standard.format(record)
        expected = standard.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        assert json.loads(json_lines.format(record))["ts"] == expected


@pytest.fixture
def logs_setup(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[bool], io.StringIO]]:
    """`logs.setup` onto a string the test reads (called from the test itself: pytest sets its own
    stderr again between a fixture's set-up and the test); the root logger's handlers and level are
    put back afterwards."""
    from loader import logs

    def setup(json_lines: bool = False) -> io.StringIO:
        stream = io.StringIO()
        monkeypatch.setattr(sys, "stderr", stream)
        logs.setup(json_lines)
        return stream

    saved = logging.root.handlers[:], logging.root.level
    try:
        yield setup
    finally:
        logging.root.handlers[:], level = saved
        logging.root.setLevel(level)


@pytest.mark.parametrize("json_lines", [False, True])
def test_access_lines_are_written_once_a_loop_turn_as_the_formatter_writes_them(
    json_lines: bool, logs_setup: Callable[[bool], io.StringIO]
) -> None:
    """The gateway's access lines skip the LogRecord and are written together at the end of the loop's
    turn; each must read exactly as the handler's formatter would have written it."""
    import asyncio

    from loader.gateway.accesslog import access_log

    stderr = logs_setup(json_lines)
    handler = logging.root.handlers[0]
    scope = {"client": ("10.1.2.3", 5000), "method": "POST", "path": "/v1/webhook"}

    async def three_requests() -> str:
        for status in (200, 401, 413):
            access_log(scope, status, time.perf_counter())
        written_in_the_turn = stderr.getvalue()
        await asyncio.sleep(0)
        return written_in_the_turn

    assert asyncio.run(three_requests()) == ""
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 3
    for line, status in zip(lines, (200, 401, 413), strict=True):
        if json_lines:
            got = json.loads(line)
            assert (got["level"], got["logger"]) == ("info", "loader.access")
            message = got["msg"]
            when = time.mktime(time.strptime(got["ts"], "%Y-%m-%dT%H:%M:%S"))
        else:
            stamp, _, rest = line.partition(" INFO loader.access: ")
            message = rest
            when = time.mktime(time.strptime(stamp.split(",")[0], "%Y-%m-%d %H:%M:%S"))
        assert re.fullmatch(rf'10\.1\.2\.3 "POST /v1/webhook" {status} \d+\.\dms', message), line
        assert abs(when - time.time()) < 5
        # What the handler's formatter makes of the same record, at the same time.
        record = logging.LogRecord("loader.access", logging.INFO, __file__, 0, message, None, None)
        record.created = when + 0.25
        record.msecs = 250.0
        expected = handler.format(record)
        assert handler.formatter is not None
        made = handler.formatter.line(when + 0.25, "INFO", "loader.access", message)  # type: ignore[attr-defined]
        assert made == expected


def test_a_record_logged_after_access_lines_follows_them_in_the_stream(
    logs_setup: Callable[[bool], io.StringIO],
) -> None:
    """Access lines wait for the end of the loop's turn; a record logged meanwhile (an error about the
    same requests) must still come after them in the stream, in the order they were logged."""
    import asyncio

    from loader.gateway.accesslog import access_log

    stderr = logs_setup(False)

    async def requests_then_a_record() -> None:
        scope = {"client": ("10.1.2.3", 5000), "method": "POST", "path": "/v1/webhook"}
        access_log(scope, 200, time.perf_counter())
        logging.getLogger("loader.gateway").error("first record")
        access_log(scope, 503, time.perf_counter())
        await asyncio.sleep(0)

    asyncio.run(requests_then_a_record())
    lines = stderr.getvalue().splitlines()
    assert [line.split(": ", 1)[1].split(" ")[0] for line in lines] == ["10.1.2.3", "first", "10.1.2.3"]
    assert '" 200 ' in lines[0] and '" 503 ' in lines[2], lines


def test_access_lines_go_through_logging_when_another_handler_listens(
    logs_setup: Callable[[bool], io.StringIO],
) -> None:
    """A handler added to the root (a test's capture, an operator's own set-up) gets every access line
    as a record; the batched writer stands aside."""
    from loader.gateway.accesslog import access_log

    stderr = logs_setup(False)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logging.root.addHandler(Keep())
    access_log({"client": ("1.2.3.4", 1), "method": "GET", "path": "/health"}, 200, time.perf_counter())
    assert [r.name for r in records] == ["loader.access"]
    assert stderr.getvalue().count("loader.access") == 1
