"""The outbox survives a process killed between writing an event and sending it; `provline lineage replay`,
run as a command against a real HTTP backend on 127.0.0.1, sends what is left and says so in its exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from lineage_support import Backend, read_events, validate

from pipelines.lineage import naming

pytestmark = pytest.mark.slow  # `provline` and crashing processes, each importing the project
PROVLINE = str(Path(sys.executable).with_name("provline"))
HERE = Path(__file__).resolve().parent

# A step that emits START and COMPLETE and is killed (-9) as its background thread is about to send the
# first one: both events are in the outbox, none reached the backend.
CRASHING_STEP = """
import os, signal, sys, threading
sys.path.insert(0, sys.argv[1])
from lineage_support import INPUTS, asset_run, output
from pipelines.lineage import LineageEmitter, delivery

emitted = threading.Event()

def killed_before_sending(*args):
    emitted.wait()
    os.kill(os.getpid(), signal.SIGKILL)

delivery._send = killed_before_sending
emitter = LineageEmitter()
emitter.asset_started(asset_run(), INPUTS)
emitter.asset_completed(asset_run(), INPUTS, output())
emitted.set()
threading.Event().wait(60)
"""


def crash_after_writing_the_outbox(home: Path) -> list[dict]:
    step = subprocess.run([sys.executable, "-c", CRASHING_STEP, str(HERE)], env=os.environ.copy(),
                          capture_output=True, text=True, timeout=120)
    assert step.returncode == -9, step.stderr[-2000:]
    return read_events(home / "outbox")


def replay_command(timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PROVLINE, "lineage", "replay"], env=os.environ.copy(), capture_output=True, text=True,
                          timeout=timeout)


def test_a_crash_between_outbox_write_and_send_loses_nothing(http_env: Backend, home: Path) -> None:
    queued = crash_after_writing_the_outbox(home)
    run_id = naming.asset_run_id("6f1c2a9e-0000-4000-8000-000000000001", "marts.flight_facts", "2013-01-01", 1)
    assert [(e["run"]["runId"], e["eventType"]) for e in queued] == [(run_id, "START"), (run_id, "COMPLETE")]
    assert http_env.attempts == 0
    validate(queued)  # whole events, not torn writes

    replayed = replay_command()
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert replayed.stdout.strip() == "lineage replay: 2 sent, 0 failed, 0 remaining"
    assert http_env.accepted == queued  # as queued, in order, once
    assert list((home / "outbox").rglob("*.json")) == []


def test_provline_lineage_replay_exits_1_while_events_remain(
    http_env: Backend, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued = crash_after_writing_the_outbox(home)
    http_env.mode = "error"
    monkeypatch.setenv("PROVLINE_LINEAGE_REPLAY_BUDGET_S", "1")
    refused = replay_command()
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert refused.stdout.startswith("lineage replay: 0 sent, ")
    assert refused.stdout.strip().endswith(" failed, 2 remaining")
    assert http_env.attempts >= 1 and http_env.accepted == []
    assert read_events(home / "outbox") == queued

    http_env.mode = "ok"
    delivered = replay_command()
    assert (delivered.returncode, delivered.stdout.strip()) == (0, "lineage replay: 2 sent, 0 failed, 0 remaining")
    assert http_env.accepted == queued
