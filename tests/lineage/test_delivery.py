"""Delivery against a real HTTP server on 127.0.0.1: healthy, refusing (500), hanging, flaky."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections import Counter
from pathlib import Path

import pytest
from lineage_support import INPUTS, Backend, asset_run, event_key, output, read_events, read_jsonl, validate

from pipelines.lineage import LineageEmitter, delivery, main_replay, naming, replay
from pipelines.settings import get_settings

API_KEY = "sk-provline-test-0123456789"


def materialize(emitter: LineageEmitter, n: int, prefix: str = "table") -> list[tuple[str, str]]:
    """n asset runs (START + COMPLETE each); returns (runId, eventType) in emission order."""
    sent = []
    for i in range(n):
        run = asset_run(asset_key=f"marts.{prefix}_{i}")
        emitter.asset_started(run, INPUTS)
        emitter.asset_completed(run, INPUTS, output())
        rid = naming.asset_run_id(run.dagster_run_id, run.asset_key, run.partition, run.attempt)
        sent += [(rid, "START"), (rid, "COMPLETE")]
    return sent


def outbox_files(home: Path) -> list[Path]:
    return sorted((home / "outbox").rglob("*.json"))


def received(backend: Backend) -> list[tuple[str, str]]:
    """(runId, eventType) of each event the backend accepted, first receipts only, in receipt order."""
    return list(dict.fromkeys((e["run"]["runId"], e["eventType"]) for e in backend.accepted))


def assert_each_run_in_order(got: list[tuple[str, str]], sent: list[tuple[str, str]]) -> None:
    """Every event arrived, and each run's events in emission order (runs may interleave)."""
    assert sorted(got) == sorted(sent)
    for rid in {r for r, _ in sent}:
        assert [e for e in got if e[0] == rid] == [e for e in sent if e[0] == rid]


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_healthy_backend_receives_every_event_in_the_background(http_env: Backend, home: Path) -> None:
    sent = materialize(LineageEmitter(), 3)  # no close(), no replay: the drainer thread sends them
    wait_until(lambda: len(http_env.accepted) == len(sent))
    assert_each_run_in_order(received(http_env), sent)
    wait_until(lambda: outbox_files(home) == [])
    assert http_env.attempts == len(sent)


def test_refusing_backend_loses_nothing_and_replay_delivers_once_in_order(
    http_env: Backend, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROVLINE_LINEAGE_REPLAY_BUDGET_S", "1")
    http_env.mode = "error"
    sent = materialize(LineageEmitter(), 3)
    time.sleep(2)
    assert http_env.accepted == []
    # The drainer pauses when nothing gets through (>= 0.25, 0.5, 1 s): at most 5 passes, one START each
    # per run, in 2 s, not a retry storm.
    assert 1 <= http_env.attempts <= 5 * 3
    queued = read_events(home / "outbox")
    assert len(queued) == len(sent)

    failed = replay(get_settings())  # still refusing: nothing lost, within the budget
    assert (failed.sent, failed.remaining) == (0, len(sent)) and failed.failed >= 1

    http_env.mode = "ok"
    monkeypatch.setenv("PROVLINE_LINEAGE_REPLAY_BUDGET_S", "30")
    result = replay(get_settings())
    assert (result.sent, result.failed, result.remaining) == (len(sent), 0, 0)
    assert_each_run_in_order(received(http_env), sent)
    assert replay(get_settings()).sent == 0  # exactly once
    assert len(http_env.accepted) == len(sent)
    validate(queued)


def test_replay_carries_on_past_a_refused_run(http_env: Backend, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVLINE_LINEAGE_REPLAY_BUDGET_S", "2")
    http_env.mode = "error"
    sent = materialize(LineageEmitter(), 3)
    http_env.refused_runs = {sent[0][0]}
    http_env.mode = "ok"
    result = replay(get_settings())
    assert (result.sent, result.remaining) == (4, 2)
    assert_each_run_in_order(received(http_env), sent[2:])  # the other runs, each in order
    assert len(outbox_files(home)) == 2  # the refused run: START and COMPLETE, neither sent out of order


def test_flaky_backend_delivers_everything_once_by_the_run_end_and_one_replay(
    http_env: Backend, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11's goal at a small size: 30% refused, 10% answered only after the client's timeout."""
    timeout = get_settings().lineage_timeout_s
    http_env.mode, http_env.seed, http_env.late_s = "flaky", 11, timeout + 0.5
    emitter = LineageEmitter()
    emitter.run_started("flaky-run", "daily_flights")
    sent = [(naming.dagster_run_id("flaky-run"), "START")]
    for i in range(20):
        sent += materialize(emitter, 1, prefix=f"flaky_{i}")
        time.sleep(0.02)  # a step's work between its events and the next step's
    emitter.run_finished("flaky-run", "daily_flights", "COMPLETE")
    sent.append((naming.dagster_run_id("flaky-run"), "COMPLETE"))
    emitter.close()
    assert http_env.accepted, "nothing delivered during the run: no background drain"

    result = replay(get_settings())  # one replay, then nothing is left
    assert result.remaining == 0 and outbox_files(home) == []
    assert_each_run_in_order(received(http_env), sent)
    fates = Counter(fate for _, fate in http_env.fates)
    assert fates["error"] >= 5 and fates["late"] >= 2  # the schedule did refuse and hang
    # Duplicates come only from late answers (each recorded late_s after it arrived), with the same bytes;
    # deduped by content, each event once.
    lates = Counter(key for key, fate in http_env.fates if fate == "late")
    wait_until(lambda: len(http_env.accepted) == len(sent) + lates.total())
    copies = Counter((e["run"]["runId"], e["eventType"]) for e in http_env.accepted)
    assert all(copies[key] == 1 + lates[key] for key in sent)
    bodies: dict[tuple[str, str, str], set[bytes]] = {}
    for event, body in zip(http_env.accepted, http_env.bodies, strict=True):
        bodies.setdefault(event_key(event), set()).add(body)
    assert len(bodies) == len(sent) and all(len(b) == 1 for b in bodies.values())


def test_local_transport_events_wait_behind_the_queue(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file transport that failed once: the next event joins the queue instead of overtaking it."""
    log_file = home.parent / "later" / "events.jsonl"
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(log_file))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")
    emitter = LineageEmitter()
    run = asset_run()
    emitter.asset_started(run, INPUTS)  # the folder does not exist yet: refused, queued
    assert len(outbox_files(home)) == 1
    log_file.parent.mkdir()
    emitter.asset_completed(run, INPUTS, output())
    wait_until(lambda: outbox_files(home) == [] and log_file.exists() and len(read_jsonl(log_file)) == 2)
    assert [e["eventType"] for e in read_jsonl(log_file)] == ["START", "COMPLETE"]


def test_emission_never_waits_on_a_hanging_backend(http_env: Backend, home: Path) -> None:
    http_env.mode = "hang"
    emitter = LineageEmitter()
    timeout = get_settings().lineage_timeout_s
    durations = []
    for i in range(3):
        run = asset_run(asset_key=f"marts.slow_{i}")
        t0 = time.monotonic()
        emitter.asset_started(run, INPUTS)
        durations.append(time.monotonic() - t0)
    assert max(durations) < timeout, durations  # an outbox write, never a request
    assert len(outbox_files(home)) == 3
    t0 = time.monotonic()
    emitter.close()
    assert time.monotonic() - t0 < get_settings().lineage_exit_wait_s + 0.5
    assert len(outbox_files(home)) == 3


def _step(env: dict[str, str], n: int, done: multiprocessing.Queue) -> None:
    """A step process (forkserver child, as Dagster's): emit, then end the way multiprocessing does."""
    for key in [k for k in os.environ if k.startswith(("OPENLINEAGE", "PROVLINE_"))]:
        del os.environ[key]  # the forkserver's environment is that of the test that started it
    os.environ.update(env)
    materialize(LineageEmitter(), n, prefix="step")
    done.put(time.monotonic())


def run_step(home: Path, backend: Backend) -> float:
    """Run a step process; seconds between its last emission and its exit."""
    env = {"PROVLINE_HOME": str(home), "OPENLINEAGE__TRANSPORT__TYPE": "http",
           "OPENLINEAGE__TRANSPORT__URL": backend.url, "PROVLINE_LINEAGE_TIMEOUT_S": "2"}  # fmt: skip
    ctx = multiprocessing.get_context("forkserver")
    done = ctx.Queue()
    process = ctx.Process(target=_step, args=(env, 2, done))
    process.start()
    emitted = done.get(timeout=60)
    process.join(60)
    return time.monotonic() - emitted


def test_a_step_process_delivers_before_it_exits(home: Path, backend: Backend) -> None:
    run_step(home, backend)
    assert len(backend.accepted) == 4 and outbox_files(home) == []


def test_a_step_process_exits_within_the_exit_wait_and_keeps_what_it_could_not_send(
    home: Path, backend: Backend
) -> None:
    backend.mode = "hang"
    exit_s = run_step(home, backend)
    assert exit_s < get_settings().lineage_exit_wait_s + 1.0, exit_s  # not the 2 s timeout, nor retries
    assert len(outbox_files(home)) == 4


def test_api_key_never_in_events_outbox_or_logs(
    http_env: Backend, home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__AUTH__TYPE", "api_key")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__AUTH__API_KEY", API_KEY)
    caplog.set_level(logging.DEBUG)
    emitter = LineageEmitter()
    materialize(emitter, 1)
    wait_until(lambda: len(http_env.accepted) == 2)
    http_env.mode = "error"
    materialize(emitter, 1, prefix="refused")
    wait_until(lambda: "refused" in caplog.text)
    http_env.mode = "ok"
    replay(get_settings())

    assert http_env.auth_headers[0] == f"Bearer {API_KEY}"  # the key was used...
    assert len(http_env.accepted) == 4
    assert all(API_KEY not in str(event) for event in http_env.accepted)  # ...never carried
    assert API_KEY not in caplog.text
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
    assert_each_run_in_order(received(backend), sent)
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
    assert time.monotonic() - t0 < get_settings().lineage_timeout_s
    assert len(outbox_files(home)) == 1


def test_openlineage_yml_in_the_working_directory_configures_the_transport(home: Path, backend: Backend) -> None:
    Path("openlineage.yml").write_text(f"transport:\n  type: http\n  url: {backend.url}\n")
    sent = materialize(LineageEmitter(), 1)
    wait_until(lambda: len(backend.accepted) == len(sent))
    assert received(backend) == sent
    assert not (home / "lineage" / "events.jsonl").exists()


def test_replay_with_an_empty_outbox(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert replay(get_settings()) == delivery.ReplayResult(sent=0, failed=0, remaining=0)
    assert main_replay() == 0
    assert "0 sent, 0 failed, 0 remaining" in capsys.readouterr().out
