"""staging: typed, cleaned, keyed. Pure pandas functions of the raw tables."""

from __future__ import annotations

import hashlib

import pandas as pd

from assets.flights.partitions import DAILY, FLIGHTS, REFERENCE
from assets.flights.sources import raw_airlines, raw_airports, raw_flights, raw_planes, raw_weather
from checks.flights import StagingAirlines, StagingAirports, StagingFlights, StagingPlanes, StagingWeather
from pipelines.factory import production_asset


def _local_date(frame: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(frame[["year", "month", "day"]].astype("int64"))


def _minutes_of_hhmm(hhmm: pd.Series) -> pd.Series:
    return (hhmm // 100) * 60 + hhmm % 100


def _utc(iso: pd.Series) -> pd.Series:
    """ISO 8601 UTC text -> naive UTC timestamps (stored naive so hashes do not depend on the zone)."""
    return pd.to_datetime(iso, utc=True).dt.tz_localize(None).astype("datetime64[ns]")


def flight_key(frame: pd.DataFrame) -> pd.Series:
    """16 hex characters of sha256(date|carrier|flight|origin|sched_dep_time): stable everywhere."""
    natural = (
        frame["flight_date"].dt.strftime("%Y-%m-%d") + "|" + frame["carrier"] + "|" + frame["flight"].astype("string")
        + "|" + frame["origin"] + "|" + frame["sched_dep_time"].astype("string")
    )
    return natural.map(lambda key: hashlib.sha256(key.encode()).hexdigest()[:16]).astype("string")


@production_asset(
    "staging.flights", contract=StagingFlights, inputs=[raw_flights], partitions=DAILY, daily_on="flight_date",
    key_columns=["flight_id"], group=FLIGHTS,
    column_lineage={
        "flight_id": [
            ("raw.flights", c) for c in ("year", "month", "day", "carrier", "flight", "origin", "sched_dep_time")
        ],
        "flight_date": [("raw.flights", c) for c in ("year", "month", "day")],
        "scheduled_departure": [("raw.flights", c) for c in ("year", "month", "day", "sched_dep_time")],
        "actual_departure": [("raw.flights", c) for c in ("year", "month", "day", "sched_dep_time", "dep_delay")],
        "cancelled": [("raw.flights", "dep_time")],
        "diverted": [("raw.flights", "dep_time"), ("raw.flights", "arr_time")],
    },
)
def staging_flights(raw_flights: pd.DataFrame) -> pd.DataFrame:
    """One row per scheduled flight: keyed, with cancelled/diverted flags and departure timestamps."""
    flights = raw_flights.copy()
    flights["flight_date"] = _local_date(flights)
    flights["flight_id"] = flight_key(flights)
    flights["scheduled_departure"] = flights["flight_date"] + pd.to_timedelta(
        _minutes_of_hhmm(flights["sched_dep_time"]).astype("int64"), unit="min"
    )
    flights["actual_departure"] = flights["scheduled_departure"] + pd.to_timedelta(
        flights["dep_delay"].astype("float64"), unit="min"
    )
    flights["time_hour"] = _utc(flights["time_hour"])
    flights["dep_time"] = flights["dep_time"].astype("Int64")
    flights["arr_time"] = flights["arr_time"].astype("Int64")
    flights["cancelled"] = flights["dep_time"].isna().astype(bool)
    flights["diverted"] = (flights["dep_time"].notna() & flights["arr_time"].isna()).astype(bool)
    flights["tailnum"] = flights["tailnum"].str.strip().str.upper()
    return flights.drop(columns=["year", "month", "day", "hour", "minute"])


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
                  group=REFERENCE)
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
