"""marts: what analysts read. SQL files run by DuckDB over the staging tables."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from assets.flights.partitions import DAILY, FLIGHTS
from assets.flights.staging import (
    staging_airlines,
    staging_airports,
    staging_flights,
    staging_planes,
    staging_weather,
)
from checks.flights import CarrierDailyPerformance, FlightFacts, RouteDaily
from pipelines.domain import sql_asset

# What analysts read is rebuilt once a day (the 06:00 schedule, or the landing sensor as each day's files
# arrive): a mart not materialized for 25 hours warns, for 27 hours fails. Dagster measures it from the last
# materialization (the UI's Freshness); `provline health` also says how far the data is from its last day.
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=27), warn_window=timedelta(hours=25))

flight_facts = sql_asset(
    "marts.flight_facts",
    sql="sql/flight_facts.sql",
    inputs=[staging_flights, staging_weather, staging_airlines, staging_planes, staging_airports],
    contract=FlightFacts,
    partitions=DAILY,
    daily_on="flight_date",
    key_columns=["flight_id"],
    group=FLIGHTS,
    relative_to=__file__,
    freshness=DAILY_FRESHNESS,
)

carrier_daily_performance = sql_asset(
    "marts.carrier_daily_performance",
    sql="sql/carrier_daily_performance.sql",
    inputs=[flight_facts],
    contract=CarrierDailyPerformance,
    partitions=DAILY,
    daily_on="flight_date",
    key_columns=["flight_date", "carrier"],
    group=FLIGHTS,
    relative_to=__file__,
    freshness=DAILY_FRESHNESS,
)

route_daily = sql_asset(
    "marts.route_daily",
    sql="sql/route_daily.sql",
    inputs=[flight_facts],
    contract=RouteDaily,
    partitions=DAILY,
    daily_on="flight_date",
    key_columns=["flight_date", "origin", "dest"],
    group=FLIGHTS,
    relative_to=__file__,
    freshness=DAILY_FRESHNESS,
)
