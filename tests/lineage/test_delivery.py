"""Delivery against a real HTTP server on 127.0.0.1: healthy, refusing (500), hanging."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from lineage_support import INPUTS, Backend, asset_run, output, read_jsonl, validate

from pipelines.lineage import LineageEmitter, delivery, main_replay, naming, replay
from pipelines.settings import get_settings

API_KEY = "sk-provline-test-0123456789"


def materialize(emitter: LineageEmitter, n: int) -> list[tuple[str, str]]:
    """n asset runs (START + COMPLETE each); returns (runId, eventType) in emission order."""
    sent = []
    for i in range(n):
        run = asset_run(asset_key=f"marts.table_{i}")
        emitter.asset_started(run, INPUTS)
        emitter.asset_completed(run, INPUTS, output())
        rid = naming.asset_run_id(run.dagster_run_id, run.asset_key, run.partition, run.attempt)
        sent += [(rid, "START"), (rid, "COMPLETE")]
    return sent


def outbox_files(home: Path) -> list[Path]:
    return sorted((home / "outbox").rglob("*.json"))


def test_healthy_backend_receives_every_event(http_env: Backend, home: Path) -> None:
    sent = materialize(LineageEmitter(), 3)
    assert [(e["run"]["runId"], e["eventType"]) for e in http_env.accepted] == sent
    assert outbox_files(home) == []


def test_refusing_backend_loses_nothing_and_replay_delivers_once_in_order(http_env: Backend, home: Path) -> None:
    http_env.mode = "error"
    sent = materialize(LineageEmitter(), 3)
    assert http_env.accepted == []
    assert http_env.attempts == 1  # no retry storm; the breaker keeps the rest off the wire
    assert len(outbox_files(home)) == len(sent)
    validate(home / "outbox")

    failed = replay(get_settings())  # still refusing: nothing lost, nothing reordered
    assert (failed.sent, failed.failed, failed.remaining) == (0, 1, len(sent))

    http_env.mode = "ok"
    result = replay(get_settings())
    assert (result.sent, result.failed, result.remaining) == (len(sent), 0, 0)
    assert [(e["run"]["runId"], e["eventType"]) for e in http_env.accepted] == sent
    assert replay(get_settings()).sent == 0  # exactly once
    assert len(http_env.accepted) == len(sent)


def test_new_events_queue_behind_old_ones_and_drain_in_order(
    http_env: Backend, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "BREAKER_COOLDOWN_S", 0.0)
    emitter = LineageEmitter()
    http_env.mode = "error"
    first = materialize(emitter, 1)
    http_env.mode = "ok"
    run = asset_run(asset_key="marts.later")
    emitter.asset_started(run, INPUTS)  # drains the outbox first, then this one
    received = [(e["run"]["runId"], e["eventType"]) for e in http_env.accepted]
    assert received[:2] == first and received[2][1] == "START" and len(received) == 3
    assert outbox_files(home) == []


def test_hanging_backend_stalls_each_call_at_most_the_timeout(http_env: Backend, home: Path) -> None:
    http_env.mode = "hang"
    emitter = LineageEmitter()
    timeout = get_settings().lineage_timeout_s
    durations = []
    for i in range(3):
        run = asset_run(asset_key=f"marts.slow_{i}")
        t0 = time.monotonic()
        emitter.asset_started(run, INPUTS)
        durations.append(time.monotonic() - t0)
    assert max(durations) < timeout + 0.5, durations
    assert len(outbox_files(home)) == 3
    assert http_env.attempts == 1


def test_api_key_never_in_events_outbox_or_logs(
    http_env: Backend, home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__AUTH__TYPE", "api_key")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__AUTH__API_KEY", API_KEY)
    caplog.set_level(logging.DEBUG)
    emitter = LineageEmitter()
    materialize(emitter, 1)
    http_env.mode = "error"
    materialize(emitter, 1)
    http_env.mode = "ok"
    replay(get_settings())

    assert http_env.auth_headers[0] == f"Bearer {API_KEY}"  # the key was used...
    assert len(http_env.accepted) == 4
    assert all(API_KEY not in str(event) for event in http_env.accepted)  # ...never carried
    assert API_KEY not in caplog.text
    assert "refused" in caplog.text
    for path in home.rglob("*"):
        if path.is_file():
            assert API_KEY not in path.read_text(errors="ignore"), path


def test_composite_keeps_a_queue_per_transport(home: Path, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """One child refusing must not lose its events because another child took them."""
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "composite")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TRANSPORTS__MARQUEZ__TYPE", "http")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TRANSPORTS__MARQUEZ__URL", backend.url)
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TRANSPORTS__LOCAL__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TRANSPORTS__LOCAL__LOG_FILE_PATH", str(home / "local.jsonl"))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TRANSPORTS__LOCAL__APPEND", "true")
    backend.mode = "error"
    sent = materialize(LineageEmitter(), 2)
    assert len(read_jsonl(home / "local.jsonl")) == len(sent)  # the file child took them all
    assert len(list((home / "outbox" / "marquez").glob("*.json"))) == len(sent)
    assert not (home / "outbox" / "local").exists()

    backend.mode = "ok"
    assert replay(get_settings()).sent == len(sent)
    assert [(e["run"]["runId"], e["eventType"]) for e in backend.accepted] == sent
    assert len(read_jsonl(home / "local.jsonl")) == len(sent)  # no duplicates on the healthy child


def test_console_transport_works(home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "console")
    caplog.set_level(logging.INFO, logger="openlineage.client.transport.console")
    LineageEmitter().asset_started(asset_run(), INPUTS)
    assert '"eventType": "START"' in caplog.text
    assert outbox_files(home) == []


def test_legacy_openlineage_url_is_bounded_too(home: Path, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENLINEAGE_URL", backend.url)
    backend.mode = "hang"
    t0 = time.monotonic()
    LineageEmitter().asset_started(asset_run(), INPUTS)
    assert time.monotonic() - t0 < get_settings().lineage_timeout_s + 0.5
    assert len(outbox_files(home)) == 1


def test_openlineage_yml_in_the_working_directory_configures_the_transport(home: Path, backend: Backend) -> None:
    Path("openlineage.yml").write_text(f"transport:\n  type: http\n  url: {backend.url}\n")
    sent = materialize(LineageEmitter(), 1)
    assert [(e["run"]["runId"], e["eventType"]) for e in backend.accepted] == sent
    assert not (home / "lineage" / "events.jsonl").exists()


def test_replay_with_an_empty_outbox(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert replay(get_settings()) == delivery.ReplayResult(sent=0, failed=0, remaining=0)
    assert main_replay() == 0
    assert "0 sent, 0 failed, 0 remaining" in capsys.readouterr().out
