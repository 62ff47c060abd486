"""The run-status sensors give each Dagster run its terminal OpenLineage event, evaluated the way the
daemon evaluates them: ticks of the sensor definitions against the instance's event log, with cursors."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from lineage_support import read_jsonl, validate

from pipelines.definitions import defs
from pipelines.factory import resources
from pipelines.lineage import naming
from pipelines.lineage.sensors import lineage_sensors
from tests.conftest import materialize

AIRLINES = dg.AssetSelection.assets(dg.AssetKey(["raw", "airlines"]))


def tick_all(instance: dg.DagsterInstance, cursors: dict[str, str | None]) -> dict[str, str | None]:
    """One daemon tick of every lineage sensor, in the code location's repository; returns their new cursors."""
    new = {}
    for sensor in lineage_sensors:
        context = dg.build_sensor_context(instance=instance, cursor=cursors.get(sensor.name),
                                          repository_def=defs.get_repository_def(), resources=resources())
        tick = sensor.evaluate_tick(context)
        assert [r.error for r in tick.dagster_run_reactions if r.error] == [], sensor.name
        new[sensor.name] = tick.cursor
    return new


def run_events(home: Path, run_id: str) -> list[str]:
    """The event types of a Dagster run's own OpenLineage run, in the order written."""
    parent = naming.dagster_run_id(run_id)
    return [e["eventType"] for e in read_jsonl(home / "lineage" / "events.jsonl") if e["run"]["runId"] == parent]


def test_sensor_ticks_emit_each_runs_terminal_event_once(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    instance = dg.DagsterInstance.ephemeral()
    cursors = tick_all(instance, {})  # the first tick starts watching from the latest event
    succeeded = materialize(AIRLINES, instance=instance)
    broken = tmp_path / "sources"
    broken.mkdir()
    (broken / "airlines.csv").write_text("carrier\nAA\n")  # the name column is missing: the step fails
    monkeypatch.setenv("PROVLINE_SOURCE_DIR", str(broken))
    failed = materialize(AIRLINES, instance=instance)
    assert succeeded.success and not failed.success
    assert run_events(home, succeeded.run_id) == run_events(home, failed.run_id) == ["START"]  # the steps' own

    cursors = tick_all(instance, cursors)
    assert run_events(home, succeeded.run_id) == ["START", "COMPLETE"]
    assert run_events(home, failed.run_id) == ["START", "FAIL"]
    events = read_jsonl(home / "lineage" / "events.jsonl")
    (failure,) = [e for e in events if e["run"]["runId"] == naming.dagster_run_id(failed.run_id) and
                  e["eventType"] == "FAIL"]
    assert failure["run"]["facets"]["errorMessage"]["message"] == (
        "Execution of run for \"__ephemeral_asset_job__\" failed. Steps failed: ['raw__airlines']."
    )
    validate(events)

    tick_all(instance, cursors)  # the next tick finds nothing new
    assert read_jsonl(home / "lineage" / "events.jsonl") == events
