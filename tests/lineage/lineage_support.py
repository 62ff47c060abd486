"""Shared helpers for the lineage tests: sample model objects, the official-schema check, a real HTTP
lineage backend on 127.0.0.1."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pipelines.audit.schema import official_schema
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


def schema_checker() -> Callable[[list[dict]], list[str]]:
    """Checks events against the official OpenLineage schemas shipped in the package."""
    schema = official_schema()
    return lambda events: [f"event {i}: {p}" for i, e in enumerate(events) for p in schema.problems(e)]


def read_events(path: Path) -> list[dict]:
    """The events of a .jsonl file, a .json file (one event), or every such file below a folder."""
    files = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl")) if path.is_dir() else [path]
    return [e for f in files for e in (read_jsonl(f) if f.suffix == ".jsonl" else [json.loads(f.read_text())])]


def validate(events: Path | list[dict]) -> None:
    """Check events (a file, a folder, or received dicts) against the official schemas; fail on any error.

    Call it after a test's behavioural assertions."""
    events = read_events(events) if isinstance(events, Path) else events
    assert events, "no events to validate"
    problems = schema_checker()(events)
    assert not problems, "\n".join(problems[:20])


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


def event_key(event: dict) -> tuple[str, str, str]:
    """What receivers dedupe on."""
    return event["run"]["runId"], event["eventType"], event["eventTime"]


class Backend(ThreadingHTTPServer):
    """A lineage backend on 127.0.0.1 that records what it accepted. mode: ok | error | hang | flaky.

    hang never answers. flaky refuses (500) a share ``refuse`` of requests, holds a share ``late`` for
    ``late_s`` and then accepts them (a backend slower than the client's timeout), and accepts the rest.
    Each request's fate is drawn from ``seed``, the event's (runId, eventType) and how often it arrived
    before: the same schedule on every run, whatever the order of concurrent requests. ``fates`` records
    them. Events of ``refused_runs`` are always refused.
    Closing it (the fixture's teardown, after the test's assertions) validates what it accepted.
    """

    daemon_threads = True

    def __init__(self, check_schema: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = "ok"
        self.seed, self.refuse, self.late, self.late_s = 0, 0.3, 0.1, 1.0
        self.accepted: list[dict] = []
        self.bodies: list[bytes] = []
        self.attempts = 0
        self.auth_headers: list[str | None] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.fates: list[tuple[tuple[str, str], str]] = []
        self.refused_runs: set[str] = set()
        self.check_schema = check_schema

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def fate(self, event: dict) -> str:
        if event["run"]["runId"] in self.refused_runs:
            return "error"
        if self.mode != "flaky":
            return self.mode
        key = (event["run"]["runId"], event["eventType"])
        with self.lock:
            arrival = sum(1 for k, _ in self.fates if k == key)
            draw = random.Random(f"{self.seed}:{key}:{arrival}").random()
            fate = "error" if draw < self.refuse else "late" if draw < self.refuse + self.late else "ok"
            self.fates.append((key, fate))
        return fate

    def server_close(self) -> None:
        super().server_close()
        if self.check_schema and self.accepted:
            validate(self.accepted)


class _Handler(BaseHTTPRequestHandler):
    server: Backend

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            self.server.attempts += 1
            self.server.auth_headers.append(self.headers.get("Authorization"))
        try:
            event = json.loads(body)
        except ValueError:  # cut off mid-request (a client process that exited)
            self.send_response(400)
            self.end_headers()
            return
        fate = self.server.fate(event)
        if fate == "hang":
            self.server.release.wait(10)
            return
        if fate == "error":
            self.send_response(500)
            self.end_headers()
            return
        if fate == "late":
            time.sleep(self.server.late_s)
        with self.server.lock:
            self.server.accepted.append(event)
            self.server.bodies.append(body)
        try:
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()
        except OSError:  # a late answer: the client has gone
            pass

    def log_message(self, *args: object) -> None:
        pass
