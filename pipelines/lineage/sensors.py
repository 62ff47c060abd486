"""Run-status sensors: the fallback for the Dagster run's terminal OpenLineage event.

The code location's executor emits the run's START and terminal event itself (runs.py), and `provline run`
finishes its own runs. These sensors, when the Dagster daemon runs (`dagster dev`, deployments), cover a
run whose orchestrating process died before it could: once Dagster's run monitoring marks it failed, the
failure sensor emits its FAIL. Whoever comes first emits; the others find the marker.
"""

from __future__ import annotations

import dagster as dg

from pipelines.lineage.runs import RUN_TERMINAL, finish_run, run_job_name

__all__ = ["finish_run", "lineage_sensors"]


def _sensor(status: dg.DagsterRunStatus) -> dg.SensorDefinition:
    @dg.run_status_sensor(
        run_status=status, name=f"openlineage_run_{RUN_TERMINAL[status].lower()}",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Emits the OpenLineage {RUN_TERMINAL[status]} event of each Dagster run that ends so.",
    )
    def _emit(context: dg.RunStatusSensorContext):
        failure = getattr(context, "failure_event", None)
        run, repository = context.dagster_run, context.repository_def
        job = repository.get_job(run.job_name) if repository and repository.has_job(run.job_name) else None
        finish_run(run, failure.message if failure is not None else None, job_name=run_job_name(run, job))

    return _emit


lineage_sensors = [_sensor(status) for status in RUN_TERMINAL]
