"""marts: what analysts read. SQL files run by DuckDB over the staging tables."""

from __future__ import annotations

from assets.flights.partitions import DAILY, FLIGHTS
from assets.flights.staging import (
    staging_airlines,
    staging_airports,
    staging_flights,
    staging_planes,
    staging_weather,
)
from checks.flights import CarrierDailyPerformance, FlightFacts, RouteDaily
from pipelines.factory import sql_asset

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
)
