"""The one Definitions of the provline code location: `dagster dev` and the CLI load this."""

from __future__ import annotations

import dagster as dg

from assets.flights import marts, sources, staging
from pipelines.factory import DAILY
from pipelines.lineage.sensors import lineage_sensors

all_assets = dg.load_assets_from_modules([sources, staging, marts])

reference_job = dg.define_asset_job(
    "reference_tables", selection=dg.AssetSelection.groups("reference"),
    description="The unpartitioned reference tables (airlines, airports, planes).",
)
flights_daily_job = dg.define_asset_job(
    "flights_daily", selection=dg.AssetSelection.groups("flights"), partitions_def=DAILY,
    description="One day of flights and weather, raw to marts.",
)

# Stopped by default: turn it on in the UI (Automation) or with
# `dagster schedule start flights_daily_schedule -m pipelines.definitions`.
flights_daily_schedule = dg.build_schedule_from_partitioned_job(
    flights_daily_job, hour_of_day=6, default_status=dg.DefaultScheduleStatus.STOPPED,
)

# Each step of a run is its own process (steps run in parallel); a forkserver that has imported
# the project once forks them, instead of every step paying the pandas/dagster import again.
executor = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["pipelines.definitions"]}}}
)

defs = dg.Definitions(
    assets=all_assets,
    jobs=[reference_job, flights_daily_job],
    schedules=[flights_daily_schedule],
    sensors=lineage_sensors,
    executor=executor,
)
