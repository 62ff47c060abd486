"""Ctrl-C and SIGTERM stop a run in the middle of a step, whichever CLI started it and wherever Dagster keeps its
runs (issue 20): every combination of signal (SIGINT to the process group, as Ctrl-C in a terminal; SIGTERM to the
process alone, as a supervisor sends it) x instance (none, SQLite in DAGSTER_HOME, PostgreSQL) x CLI form
(`provline run`, `dagster asset materialize`). The run ends CANCELED with no step retried or started after the
interrupt, each OpenLineage run it opened ends (the interrupted ones ABORT), and the command exits 130."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from tests.conftest import REPO, materialize
from tests.test_run_lifecycle import BIN, QUICKLY_S, _ended_within, _events, _spec_problems, _step_events

from .pgcluster import dagster_storage_yaml

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]
FIRST, LAST = "2013-03-01", "2013-03-31"  # a month: its first step computes for seconds, the signal lands inside
COMMANDS = {
    "provline run": [str(BIN / "provline"), "run", "--start", FIRST, "--end", LAST, "--skip-reference"],
    "dagster asset materialize": [str(BIN / "dagster"), "asset", "materialize", "-m", "pipelines.definitions",
                                  "--select", "group:flights", "--partition-range", f"{FIRST}...{LAST}"],
}
INSTANCE_CONFIG = "telemetry:\n  enabled: false\n"


@pytest.fixture(params=["no instance", "SQLite", "PostgreSQL"])
def instance(request, home: Path, tmp_path: Path) -> dict[str, str]:
    """The environment of the command: this test's PROVLINE_HOME (its reference tables built) and DAGSTER_HOME as
    the parameter says; nothing of the caller's DAGSTER_*, PROVLINE_* or OPENLINEAGE_* variables."""
    assert materialize("reference").success
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "PROVLINE_", "OPENLINEAGE"))}
    env["PROVLINE_HOME"] = str(home)
    if request.param != "no instance":
        dagster_home = tmp_path / "dagster_home"
        dagster_home.mkdir()
        config = INSTANCE_CONFIG
        if request.param == "PostgreSQL":
            pg = request.getfixturevalue("postgres_server")
            database = "dagster_" + uuid.uuid4().hex[:8]
            pg.create_database(database, owner="provline")
            config += dagster_storage_yaml(pg.port, database, "provline")
        (dagster_home / "dagster.yaml").write_text(config)
        env["DAGSTER_HOME"] = str(dagster_home)
    return env


def _in_a_step(home: Path, process: subprocess.Popen) -> None:
    """Wait until the run's first step has started (its asset runs emitted START)."""
    deadline = time.monotonic() + 300  # (a hang guard)
    while not any(e["eventType"] == "START" and e["job"]["name"] == "raw.flights" for e in _events(home)):
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the run never started its first step"
        time.sleep(0.2)


@pytest.mark.parametrize("form", list(COMMANDS))
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_run_canceled_with_abort_and_exit_130(instance, home, form, signum):
    before = len(_events(home))  # (the reference tables' run)
    process = subprocess.Popen(COMMANDS[form], cwd=REPO, env=instance, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _in_a_step(home, process)
        if signum == signal.SIGINT:
            os.killpg(process.pid, signum)  # Ctrl-C: the terminal signals the whole group
        else:
            os.kill(process.pid, signum)  # a supervisor (systemd, Kubernetes) signals the process
        code, out, _ = _ended_within(process, QUICKLY_S)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert code == 130, out[-3000:]

    # OpenLineage: every run opened ended once, never FAIL; the interrupted step's runs and the Dagster run ABORT
    ends: dict[str, list[str]] = {}
    names = {}
    for event in _events(home)[before:]:
        ends.setdefault(event["run"]["runId"], []).append(event["eventType"])
        names[event["run"]["runId"]] = event["job"]["name"]
    assert all(types[0] == "START" and len(types) == 2 and types[1] in ("COMPLETE", "ABORT")
               for types in ends.values()), json.dumps(ends, indent=1)
    aborted = {names[run] for run, types in ends.items() if types[-1] == "ABORT"}
    # provline run launches the domain's job; Dagster's CLI its own asset job, named after what it materializes
    assert ("flights_daily" if form == "provline run" else "materialize:group:flights") in aborted, aborted
    assert _spec_problems(home) == []
    assert len(aborted) >= 2, aborted  # the Dagster run and the interrupted step's asset

    if "DAGSTER_HOME" in instance:  # Dagster's record of the run: CANCELED, its last step failed once, none after
        with dg.DagsterInstance.from_config(instance["DAGSTER_HOME"]) as dagster:
            (run,) = dagster.get_runs()
            assert run.status == dg.DagsterRunStatus.CANCELED
            steps = _step_events(dagster, run.run_id)
    else:
        steps = None
    if steps is not None:
        assert steps[-2:] == ["STEP_START", "STEP_FAILURE"] and steps.count("STEP_FAILURE") == 1, steps
        assert "STEP_UP_FOR_RETRY" not in steps and "STEP_RESTARTED" not in steps
    if form == "provline run":
        assert f"partitions {FIRST}..{LAST}: INTERRUPTED" in out, out[-3000:]
