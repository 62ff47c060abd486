"""Run-status sensors: the fallback for the Dagster run's terminal OpenLineage event.

The code location's executor emits the run's START and terminal event itself (runs.py), and `provline run`
finishes its own runs. These sensors, when the Dagster daemon runs (`dagster dev`, deployments), cover a
run whose process died before it could: once Dagster's run monitoring marks it failed, the failure sensor
emits its FAIL. Whoever comes first emits; the others find the marker (named as the run's START was).

The sensors watch every code location (`monitor_all_code_locations`): in-process runs (`provline run`,
`dagster asset materialize`, `dg.materialize`) belong to none, and a killed one is only marked FAILED
later by the daemon's run monitoring (deploy/dagster.yaml), after its process is gone. Runs of other
code locations' jobs are left alone.
"""

from __future__ import annotations

import dagster as dg

from pipelines.lineage.runs import RUN_TERMINAL, finish_run, run_job_name
from pipelines.settings import Settings

__all__ = ["finish_run", "lineage_sensors"]


def _sensor(status: dg.DagsterRunStatus) -> dg.SensorDefinition:
    @dg.run_status_sensor(
        run_status=status, name=f"openlineage_run_{RUN_TERMINAL[status].lower()}",
        default_status=dg.DefaultSensorStatus.RUNNING, monitor_all_code_locations=True,
        description=f"Emits the OpenLineage {RUN_TERMINAL[status]} event of each Dagster run that ends so.",
    )
    def _emit(context: dg.RunStatusSensorContext, settings: Settings):
        run, repository = context.dagster_run, context.repository_def
        job = repository.get_job(run.job_name) if repository.has_job(run.job_name) else None
        if job is None and run.remote_job_origin is not None:
            return  # another code location's job
        event = context.dagster_event  # for a failure: why (a step error, or run monitoring's verdict)
        finish_run(run, event.message if run.status == dg.DagsterRunStatus.FAILURE and event is not None else None,
                   job_name=run_job_name(run, job), settings=settings)

    return _emit


lineage_sensors = [_sensor(status) for status in RUN_TERMINAL]
