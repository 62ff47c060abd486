"""The provline code location plus one test sensor that asks, once, for the reference tables: what the
Dagster daemon on the PostgreSQL instance loads in tests/backends/test_dagster_postgres.py."""

import dagster as dg

from pipelines import definitions


@dg.sensor(job_name="reference_tables", minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING)
def reference_once(context: dg.SensorEvaluationContext):
    return dg.RunRequest(run_key="reference-once")


defs = dg.Definitions.merge(definitions.defs, dg.Definitions(sensors=[reference_once]))
