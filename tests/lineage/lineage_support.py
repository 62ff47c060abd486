"""Shared helpers for the lineage tests (sample model objects, the official-schema validator)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipelines.lineage.model import (
    Assertion,
    AssetRun,
    Column,
    ColumnMetrics,
    DatasetRef,
    OutputInfo,
    SourceFile,
)

REPO = Path(__file__).resolve().parents[2]
OL_VALIDATE = REPO.parent / "shared" / "bin" / "ol-validate"


def validate(path: Path) -> None:
    """Run the official-schema validator on a .jsonl/.json file or a folder; fail on any error."""
    if not OL_VALIDATE.exists():
        pytest.skip(f"{OL_VALIDATE} is absent (needs the ../shared checkout beside the repo)")
    out = subprocess.run([sys.executable, str(OL_VALIDATE), str(path)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def asset_run(**overrides: object) -> AssetRun:
    values: dict = {
        "dagster_run_id": "6f1c2a9e-0000-4000-8000-000000000001",
        "dagster_job_name": "daily_flights",
        "asset_key": "marts.flight_facts",
        "partition": "2013-01-01",
        "attempt": 1,
        "nominal_start": datetime(2013, 1, 1, tzinfo=UTC),
        "nominal_end": datetime(2013, 1, 2, tzinfo=UTC),
        "code_version": "v1",
        "sql": "SELECT f.carrier, a.name AS carrier_name FROM staging.flights f "
        "JOIN staging.airlines a ON a.carrier = f.carrier",
        "source_path": "assets/flights/marts.py",
        "description": "One row per flight with its carrier.",
        "owners": ("team:data-platform",),
        "tags": {"domain": "flights"},
    }
    values.update(overrides)
    return AssetRun(**values)


INPUTS: list[DatasetRef | SourceFile] = [
    DatasetRef("staging.flights", version="sha256:aaa", partition="2013-01-01"),
    DatasetRef("staging.airlines", version="sha256:bbb"),
]


def output(ok: bool = True) -> OutputInfo:
    return OutputInfo(
        name="marts.flight_facts",
        version="sha256:ccc",
        columns=[
            Column("carrier", "VARCHAR", "Two-letter carrier code."),
            Column("carrier_name", "VARCHAR", "Carrier's full name."),
        ],
        row_count=842,
        column_lineage={
            "carrier": [("staging.flights", "carrier")],
            "carrier_name": [("staging.airlines", "name")],
        },
        assertions=[
            Assertion("not_null", True, "error", column="carrier", expected="0", actual="0"),
            Assertion("row_count_min", ok, "error", expected=">= 1", actual="842" if ok else "0"),
        ],
        column_metrics={"carrier": ColumnMetrics(0, 16), "carrier_name": ColumnMetrics(3, 15)},
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Backend(ThreadingHTTPServer):
    """A lineage backend on 127.0.0.1 that records what it accepted. mode: ok | error | hang."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = "ok"
        self.accepted: list[dict] = []
        self.attempts = 0
        self.auth_headers: list[str | None] = []
        self.release = threading.Event()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Backend

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            self.server.attempts += 1
            self.server.auth_headers.append(self.headers.get("Authorization"))
        if self.server.mode == "hang":
            self.server.release.wait(10)
            return
        if self.server.mode == "error":
            self.send_response(500)
            self.end_headers()
            return
        with self.server.lock:
            self.server.accepted.append(json.loads(body))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass
