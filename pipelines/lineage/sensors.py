"""The Dagster run's own terminal OpenLineage event (the parent of the asset runs).

Each asset step emits the parent START (once per run, see LineageEmitter.run_started); the
terminal event needs someone who sees the whole run end: these run-status sensors when the
Dagster daemon runs (`dagster dev`, schedules), and `provline run` for its own runs.

The sensors watch every code location (`monitor_all_code_locations`): in-process runs (`provline run`,
`dagster asset materialize`, `dg.materialize`) belong to none, and a killed one is only marked FAILED
later by the daemon's run monitoring (deploy/dagster.yaml), after its process is gone. Runs of other
code locations' jobs are left alone.
"""

from __future__ import annotations

import dagster as dg

from pipelines.lineage.emitter import LineageEmitter

_STATES = {
    dg.DagsterRunStatus.SUCCESS: "COMPLETE",
    dg.DagsterRunStatus.FAILURE: "FAIL",
    dg.DagsterRunStatus.CANCELED: "ABORT",
}


def finish_run(run: dg.DagsterRun, error: str | None = None) -> None:
    state = _STATES.get(run.status)
    if state is not None:
        LineageEmitter().run_finished(run.run_id, run.job_name, state, error)


def _sensor(status: dg.DagsterRunStatus) -> dg.SensorDefinition:
    @dg.run_status_sensor(
        run_status=status, name=f"openlineage_run_{_STATES[status].lower()}",
        default_status=dg.DefaultSensorStatus.RUNNING, monitor_all_code_locations=True,
        description=f"Emits the OpenLineage {_STATES[status]} event of each Dagster run that ends so.",
    )
    def _emit(context: dg.RunStatusSensorContext):
        run = context.dagster_run
        if run.remote_job_origin is not None and not context.repository_def.has_job(run.job_name):
            return  # another code location's job
        event = context.dagster_event  # for a failure: why (a step error, or run monitoring's verdict)
        finish_run(run, event.message if run.status == dg.DagsterRunStatus.FAILURE and event is not None else None)

    return _emit


lineage_sensors = [_sensor(status) for status in _STATES]
