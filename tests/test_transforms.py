"""Each layer's transforms as plain functions: DataFrames in, DataFrames out; SQL on DuckDB."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from assets.flights import sources, staging
from checks.flights import RawAirlines, RawAirports, RawFlights, RawPlanes, RawWeather
from pipelines.definitions import defs  # noqa: F401  (registers every table)
from pipelines.factory import TABLES
from pipelines.sources import read_source

from .conftest import DAY, DAY_FLIGHTS

SQL = Path(__file__).resolve().parent.parent / "assets" / "flights" / "sql"


def _fn(table: str):
    return TABLES[table].transform


@pytest.fixture(scope="module")
def raw() -> dict[str, pd.DataFrame]:
    day = date.fromisoformat(DAY)
    return {
        "flights": _fn("raw.flights")(read_source("flights", RawFlights).frame, day),
        "weather": _fn("raw.weather")(read_source("weather", RawWeather).frame, day),
        "planes": _fn("raw.planes")(read_source("planes", RawPlanes).frame),
        "airports": _fn("raw.airports")(read_source("airports", RawAirports).frame),
        "airlines": _fn("raw.airlines")(read_source("airlines", RawAirlines).frame),
    }


def test_raw_flights_selects_the_local_day(raw):
    flights = raw["flights"]
    assert len(flights) == DAY_FLIGHTS
    assert set(zip(flights["year"], flights["month"], flights["day"], strict=True)) == {(2013, 1, 15)}
    assert len(raw["weather"]) == 72  # 3 stations x 24 hours


def test_staging_flights_keys_flags_and_timestamps(raw):
    flights = _fn("staging.flights")(raw["flights"])
    assert len(flights) == DAY_FLIGHTS
    assert flights["flight_id"].is_unique and flights["flight_id"].str.len().eq(16).all()
    assert (flights["cancelled"] == raw["flights"]["dep_time"].isna().to_numpy()).all()
    first = flights.iloc[0]
    hhmm = int(first["sched_dep_time"])
    assert first["scheduled_departure"] == pd.Timestamp(DAY) + pd.Timedelta(minutes=hhmm // 100 * 60 + hhmm % 100)
    departed = flights[~flights["cancelled"]]
    delay = (departed["actual_departure"] - departed["scheduled_departure"]).dt.total_seconds() / 60
    assert (delay == departed["dep_delay"].astype(float)).all()
    # the key is a pure function of the natural key: same rows in another order -> same ids
    shuffled = _fn("staging.flights")(raw["flights"].sample(frac=1, random_state=7))
    assert set(shuffled["flight_id"]) == set(flights["flight_id"])


def test_staging_weather_uses_utc_hour_and_local_date(raw):
    weather = _fn("staging.weather")(raw["weather"])
    assert (weather["obs_date"] == pd.Timestamp(DAY)).all()
    assert weather["time_hour"].min() == pd.Timestamp("2013-01-15 05:00")  # local midnight EST = 05:00 UTC
    assert not weather.duplicated(["origin", "time_hour"]).any()


def test_staging_reference_tables(raw):
    assert list(_fn("staging.planes")(raw["planes"]).columns) == list(TABLES["staging.planes"].columns)
    assert len(_fn("staging.airports")(raw["airports"])) == 1458
    assert _fn("staging.airlines")(raw["airlines"])["name"].str.strip().eq(
        _fn("staging.airlines")(raw["airlines"])["name"]).all()


def test_marts_sql_on_staging_frames(raw):
    """The marts' SQL files run by DuckDB on the staging frames, with the partition bound."""
    con = duckdb.connect()
    for schema in ("staging", "marts"):
        con.execute(f"CREATE SCHEMA {schema}")
    frames = {
        "staging.flights": _fn("staging.flights")(raw["flights"]),
        "staging.weather": _fn("staging.weather")(raw["weather"]),
        "staging.planes": _fn("staging.planes")(raw["planes"]),
        "staging.airports": _fn("staging.airports")(raw["airports"]),
        "staging.airlines": _fn("staging.airlines")(raw["airlines"]),
    }
    for name, frame in frames.items():
        con.register("frame", frame)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM frame")
    params = {"partition_date": DAY}
    con.execute("CREATE TABLE marts.flight_facts AS " + (SQL / "flight_facts.sql").read_text(), params)
    facts = con.execute("SELECT count(*), count(DISTINCT flight_id), count(*) FILTER (WHERE has_weather) "
                        "FROM marts.flight_facts").fetchone()
    assert facts[0] == facts[1] == DAY_FLIGHTS
    assert facts[2] > 0.9 * DAY_FLIGHTS
    perf = con.execute((SQL / "carrier_daily_performance.sql").read_text(), params).df()
    assert perf["flights"].sum() == DAY_FLIGHTS
    assert perf["cancelled"].sum() == frames["staging.flights"]["cancelled"].sum()
    assert perf["on_time_rate"].between(0, 1).all()
    routes = con.execute((SQL / "route_daily.sql").read_text(), params).df()
    assert routes["flights"].sum() == DAY_FLIGHTS
    assert not routes.duplicated(["origin", "dest"]).any()


def test_every_transform_is_registered_once():
    assert {t.split(".")[0] for t in TABLES} == {"raw", "staging", "marts"}
    assert len(TABLES) == 13
    assert sources.raw_flights is not None and staging.staging_flights is not None
