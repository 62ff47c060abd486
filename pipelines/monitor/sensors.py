"""The runtime's monitoring sensors (added to every code location by pipelines/definitions.py; they run
under the Dagster daemon, e.g. `dagster dev`):

- `provline_monitor` (every minute): alerts on freshness violations and on a lineage outbox backlog over
  PROVLINE_OUTBOX_ALERT_THRESHOLD (and resolves them), retries alerts not yet delivered, and records each
  asset's health summary as an asset observation whenever it changes (the asset's metadata in the UI).
- `provline_run_failure_alert` / `provline_run_success_resolve`: a failed run alerts; the next successful
  run of the same job and partition resolves it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import dagster as dg

from pipelines.dagster_internals import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from pipelines.monitor import alerts
from pipelines.monitor.health import FAIL, Health, summarize
from pipelines.settings import Settings

if TYPE_CHECKING:
    from pipelines.spec import TableSpec

MONITOR_INTERVAL_S = 60


def health_events(health: Health, threshold: int) -> list[alerts.Event]:
    """Freshness per asset, and the lineage outbox backlog: firing or resolved."""
    events = [
        alerts.Event(alerts.FRESHNESS, row.asset, "", "freshness", row.freshness == FAIL, row.freshness_reason)
        for row in health.assets if row.freshness != "-"
    ]
    backlog = health.lineage_outbox > threshold
    events.append(alerts.Event(alerts.OUTBOX_BACKLOG, "lineage", "", "outbox_backlog", backlog,
                               f"{health.lineage_outbox} event(s) wait in the lineage outbox (threshold {threshold}); "
                               "see `provline lineage replay`" if backlog else ""))
    return events


def monitor_sensor(specs: Sequence[TableSpec]) -> dg.SensorDefinition:
    @dg.sensor(name="provline_monitor", minimum_interval_seconds=MONITOR_INTERVAL_S,
               default_status=dg.DefaultSensorStatus.RUNNING, required_resource_keys={"warehouse", "settings"},
               description="Freshness and lineage-backlog alerts, alert retries, and each asset's health summary "
                           "(recorded as an asset observation when it changes).")
    def _monitor(context: dg.SensorEvaluationContext):
        settings = context.resources.settings
        health = summarize(specs, context.resources.warehouse, settings)
        alerts.notify(health_events(health, settings.outbox_alert_threshold), settings)
        alerts.kick(settings)  # retries of alerts still pending, from any process
        seen = json.loads(context.cursor) if context.cursor else {}
        observations = []
        for row in health.assets:
            metadata = row.metadata()
            changing = {"age_hours", "freshness_reason"}  # change every tick: not a change of health
            state = {key: value for key, value in row.as_dict().items() if key not in changing}
            digest = hashlib.md5(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()
            if seen.get(row.asset) != digest:
                seen[row.asset] = digest
                observations.append(dg.AssetObservation(asset_key=dg.AssetKey(row.asset.split(".")), metadata=metadata))
        return dg.SensorResult(asset_events=observations, cursor=json.dumps(seen, sort_keys=True))

    return _monitor


def _where(run: dg.DagsterRun) -> str:
    """The partition (or range) a run built, '' for none."""
    tags = run.tags
    if ASSET_PARTITION_RANGE_START_TAG in tags:
        return f"{tags[ASSET_PARTITION_RANGE_START_TAG]}..{tags[ASSET_PARTITION_RANGE_END_TAG]}"
    return tags.get("dagster/partition", "")


@dg.run_failure_sensor(name="provline_run_failure_alert", default_status=dg.DefaultSensorStatus.RUNNING,
                       description="Alerts on each failed run (PROVLINE_ALERT_WEBHOOK_URL).")
def run_failure_alert(context: dg.RunFailureSensorContext, settings: Settings):
    run = context.dagster_run
    error = context.failure_event.message if context.failure_event else "failed"
    alerts.notify([alerts.Event(alerts.RUN_FAILURE, run.job_name, _where(run), "run", True, error,
                                f"run {run.run_id}")], settings)


@dg.run_status_sensor(name="provline_run_success_resolve", run_status=dg.DagsterRunStatus.SUCCESS,
                      default_status=dg.DefaultSensorStatus.RUNNING,
                      description="Resolves the run-failure alert of a job and partition when a run of them succeeds.")
def run_success_resolve(context: dg.RunStatusSensorContext, settings: Settings):
    run = context.dagster_run
    alerts.notify([alerts.Event(alerts.RUN_FAILURE, run.job_name, _where(run), "run", False, f"run {run.run_id}")],
                  settings)


def monitor_sensors(specs: Sequence[TableSpec]) -> list[dg.SensorDefinition]:
    return [monitor_sensor(specs), run_failure_alert, run_success_resolve]
