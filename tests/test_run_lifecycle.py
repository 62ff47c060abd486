"""Runs as an operator starts and stops them (issue 11): a `dagster asset materialize` run starts and ends in
lineage under a name a user knows; Ctrl-C and a cancel through the Dagster instance end a run within seconds,
ABORT, never retried, a range with it, the warehouse-lock wait included; `provline run` says what failed; a
run killed with -9 is settled by `provline lineage runs` once Dagster knows how it ended. Real subprocesses, a
real Dagster instance."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from pipelines.audit.schema import official_schema
from pipelines.cli import main
from pipelines.lineage import naming
from pipelines.locks import file_lock

from .conftest import DAY, REPO

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
RANGE = ["2013-01-17", "2013-01-18", "2013-01-19"]
QUICKLY_S = 20  # an interrupt ends the run this fast (a few seconds on an idle machine; 2 busy cores here)


@pytest.fixture
def env(home: Path, tmp_path: Path) -> dict[str, str]:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    return {**os.environ, "PROVLINE_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}


def _instance(env: dict[str, str]) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(env["DAGSTER_HOME"])


def _events(home: Path) -> list[dict]:
    log = home / "lineage" / "events.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _spec_problems(home: Path) -> list[str]:
    schema = official_schema()
    return [problem for event in _events(home) for problem in schema.problems(event)]


def _states(home: Path) -> dict[str, list[str]]:
    """job name -> the event types of its runs, in order."""
    states: dict[str, list[str]] = {}
    for event in _events(home):
        states.setdefault(event["job"]["name"], []).append(event["eventType"])
    return states


def _runs(env: dict[str, str], *args: str) -> list[dict]:
    result = subprocess.run([str(BIN / "provline"), "lineage", "runs", "--json", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@contextmanager
def _waiting_for_the_lock(home: Path, env: dict[str, str], command: list[str],
                          started: int) -> Iterator[subprocess.Popen]:
    """Start `command` in its own session while this test holds the warehouse lock; yield once `started` asset
    runs have emitted START (their step then waits for the lock: the interrupt lands in that wait)."""
    with file_lock(home / "warehouse.lock", 600):
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, start_new_session=True)
        deadline = time.monotonic() + 300
        while sum(e["eventType"] == "START" and "." in e["job"]["name"] and ":" not in e["job"]["name"]
                  for e in _events(home)) < started:
            assert process.poll() is None, process.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the run never reached the lock"
            time.sleep(0.5)
        time.sleep(1)  # inside the wait
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)


def _ended_within(process: subprocess.Popen, seconds: float) -> tuple[int, str, float]:
    started = time.monotonic()
    try:
        out, _ = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
        pytest.fail(f"still running {seconds}s after the interrupt:\n{out[-3000:]}")
    return process.returncode, out, time.monotonic() - started


def _step_events(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """What happened to the run's steps: started, failed, retried, succeeded."""
    return [record.dagster_event.event_type_value for record in instance.all_logs(run_id)
            if record.dagster_event is not None and record.dagster_event.event_type_value in
            ("STEP_START", "STEP_FAILURE", "STEP_UP_FOR_RETRY", "STEP_RESTARTED", "STEP_SUCCESS")]


def test_a_dagster_cli_run_starts_and_ends_in_lineage_under_a_name_a_user_knows(env, home):
    materialize = [str(BIN / "dagster"), "asset", "materialize", "-m", "pipelines.definitions"]
    result = subprocess.run([*materialize, "--select", "group:reference"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    states = _states(home)
    assert states["materialize:group:reference"] == ["START", "COMPLETE"]
    assert "__ASSET_JOB" not in states
    run_id = _instance(env).get_runs(limit=1)[0].run_id
    parents = {e["run"]["facets"]["parent"]["job"]["name"] for e in _events(home) if "parent" in e["run"]["facets"]}
    assert parents == {"materialize:group:reference"}
    listed = {r["job"]: r for r in _runs(env)}
    assert all(r["state"] == "COMPLETE" for r in listed.values()), listed
    assert listed["materialize:group:reference"]["dagster_run_id"] == run_id
    assert listed["materialize:group:reference"]["run_id"] == naming.dagster_run_id(run_id)

    # Ctrl-C on a CLI run: CANCELED in Dagster, ABORT in lineage (not FAILURE)
    command = [*materialize, "--select", "group:flights", "--partition", DAY]
    with _waiting_for_the_lock(home, env, command, started=6 + 1) as process:
        os.killpg(process.pid, signal.SIGINT)
        code, out, _ = _ended_within(process, QUICKLY_S)
    assert code == 130, out[-3000:]  # interrupted, not "Materialization failed." (1)
    assert _states(home)["materialize:group:flights"] == ["START", "ABORT"]
    assert _spec_problems(home) == []
    run = _instance(env).get_runs(limit=1)[0]
    assert run.status == dg.DagsterRunStatus.CANCELED
    assert "STEP_UP_FOR_RETRY" not in _step_events(_instance(env), run.run_id)


def test_ctrl_c_ends_provline_run_and_its_range_with_abort_and_no_retry(env, home):
    command = [str(BIN / "provline"), "run", "--start", RANGE[0], "--end", RANGE[-1], "--skip-reference"]
    with _waiting_for_the_lock(home, env, command, started=len(RANGE)) as process:
        os.killpg(process.pid, signal.SIGINT)  # the whole group, as Ctrl-C in a terminal
        code, out, took = _ended_within(process, QUICKLY_S)
    assert code == 130, out[-3000:]
    assert f"partitions {RANGE[0]}..{RANGE[-1]}: INTERRUPTED" in out
    _assert_aborted_once(env, home)


def test_a_cancel_through_the_dagster_instance_ends_provline_run_the_same_way(env, home):
    command = [str(BIN / "provline"), "run", "--start", RANGE[0], "--end", RANGE[-1], "--skip-reference"]
    with _waiting_for_the_lock(home, env, command, started=len(RANGE)) as process:
        instance = _instance(env)
        (run,) = instance.get_runs(limit=1)
        instance.run_launcher.terminate(run.run_id)  # what the UI's Terminate does
        code, out, _ = _ended_within(process, QUICKLY_S)
    assert code == 130, out[-3000:]
    _assert_aborted_once(env, home)


def _assert_aborted_once(env: dict[str, str], home: Path) -> None:
    """The run ended CANCELED while its first step waited for the lock: that step was not retried, no other
    step ran, and each partition's asset run and the run itself ended ABORT."""
    instance = _instance(env)
    (run,) = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.CANCELED
    assert _step_events(instance, run.run_id) == ["STEP_START", "STEP_FAILURE"]
    assert _states(home) == {"flights_daily": ["START", "ABORT"],  # the job provline run launched
                             "raw.flights": ["START"] * len(RANGE) + ["ABORT"] * len(RANGE)}
    aborted = [{tag["key"]: tag["value"] for tag in e["run"]["facets"]["tags"]["tags"]} for e in _events(home)
               if e["job"]["name"] == "raw.flights" and e["eventType"] == "ABORT"]
    assert sorted(tags["partition"] for tags in aborted) == RANGE


def test_provline_run_prints_what_failed(source_dir, home, monkeypatch, capsys):
    """With DAGSTER_HOME set the steps' logs go to Dagster's compute logs: `provline run` itself says what
    failed, with the rule, the column, a failing value, the file and the line."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["run", "--date", DAY]) == 0
    frame = pd.read_csv(source_dir / "flights.csv", dtype=str)
    frame.loc[frame.index[10], "origin"] = ""  # line 12
    frame.to_csv(source_dir / "flights.csv", index=False)
    assert main(["run", "--date", DAY, "--skip-reference"]) == 1
    printed = capsys.readouterr().out
    assert f"partitions {DAY}: FAILED" in printed
    assert "raw__flights: raw.flights [2013-01-15]: 1 blocking check(s) failed" in printed
    assert "origin_not_null (origin is never null.): 1 of 894 rows" in printed
    assert "e.g. origin=None (2013|1|15|FL|345|None|600, flights.csv line 12)" in printed


def test_lineage_runs_settles_a_killed_run_once_dagster_knows_it_failed(env, home):
    command = [str(BIN / "provline"), "run", "--date", RANGE[0], "--skip-reference"]
    with _waiting_for_the_lock(home, env, command, started=1) as process:
        os.killpg(process.pid, signal.SIGKILL)  # nothing gets to emit a terminal event
        process.wait()
    dangling = {r["job"]: r for r in _runs(env)}
    assert {job: r["state"] for job, r in dangling.items()} == {"flights_daily": "RUNNING",
                                                                 "raw.flights": "RUNNING"}
    instance = _instance(env)
    (run,) = instance.get_runs()
    assert dangling["raw.flights"]["flags"] == [f"START with no terminal event: Dagster run {run.run_id} is STARTED"]
    without = {key: value for key, value in env.items() if key != "DAGSTER_HOME"}
    assert {r["state"] for r in _runs(without)} == {"RUNNING"}
    assert "set DAGSTER_HOME" in _runs(without)[0]["flags"][0]

    instance.report_run_failed(run)  # what Dagster's run monitoring does for a run whose process died
    settled = {r["job"]: r for r in _runs(env)}
    assert {job: r["state"] for job, r in settled.items()} == {"flights_daily": "FAIL",
                                                                "raw.flights": "FAIL"}
    assert settled["raw.flights"]["flags"] == [
        f"START with no terminal event: its Dagster run {run.run_id} ended FAILURE; FAIL emitted now"]
    assert _states(home) == {"flights_daily": ["START", "FAIL"], "raw.flights": ["START", "FAIL"]}
    again = {r["job"]: r for r in _runs(env)}  # the emitted events are in the store now: nothing to settle
    assert {job: (r["state"], r["flags"]) for job, r in again.items()} == {
        "flights_daily": ("FAIL", []), "raw.flights": ("FAIL", [])}
    assert len(_events(home)) == 4 and _spec_problems(home) == []
