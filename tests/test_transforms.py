"""Each layer's transforms as plain functions: DataFrames in, DataFrames out; SQL on DuckDB."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from assets.flights import domain
from assets.flights.sources import raw_airlines, raw_airports, raw_flights, raw_planes, raw_weather
from assets.flights.staging import staging_airlines, staging_airports, staging_flights, staging_planes, staging_weather

from .conftest import DAY, DAY_FLIGHTS

SQL = Path(__file__).resolve().parent.parent / "assets" / "flights" / "sql"


def _on(frame: pd.DataFrame, day: date) -> pd.DataFrame:
    """The rows of one local day, as the factory hands them to a raw transform."""
    return frame[(frame["year"] == day.year) & (frame["month"] == day.month) & (frame["day"] == day.day)]


@pytest.fixture(scope="module")
def raw(raw_year) -> dict[str, pd.DataFrame]:
    day = date.fromisoformat(DAY)
    return {
        "flights": raw_flights(flights=_on(raw_year["flights"], day)),
        "weather": raw_weather(weather=_on(raw_year["weather"], day)),
        "planes": raw_planes(planes=raw_year["planes"]),
        "airports": raw_airports(airports=raw_year["airports"]),
        "airlines": raw_airlines(airlines=raw_year["airlines"]),
    }


def test_raw_flights_is_the_day_as_delivered(raw):
    flights = raw["flights"]
    assert len(flights) == DAY_FLIGHTS
    assert set(zip(flights["year"], flights["month"], flights["day"], strict=True)) == {(2013, 1, 15)}
    assert len(raw["weather"]) == 72  # 3 stations x 24 hours


def test_staging_flights_keys_flags_and_timestamps(raw):
    flights = staging_flights(raw_flights=raw["flights"])
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
    shuffled = staging_flights(raw_flights=raw["flights"].sample(frac=1, random_state=7))
    assert set(shuffled["flight_id"]) == set(flights["flight_id"])


def test_staging_weather_uses_utc_hour_and_local_date(raw):
    weather = staging_weather(raw_weather=raw["weather"])
    assert (weather["obs_date"] == pd.Timestamp(DAY)).all()
    assert weather["time_hour"].min() == pd.Timestamp("2013-01-15 05:00")  # local midnight EST = 05:00 UTC
    assert not weather.duplicated(["origin", "time_hour"]).any()


def test_staging_reference_tables(raw):
    assert list(staging_planes(raw_planes=raw["planes"]).columns) == list(staging_planes.columns)
    assert len(staging_airports(raw_airports=raw["airports"])) == 1458
    airlines = staging_airlines(raw_airlines=raw["airlines"])
    assert len(airlines) == 16 and airlines["name"].str.strip().eq(airlines["name"]).all()
    padded = pd.DataFrame({"carrier": ["AA"], "name": ["  American Airlines Inc. "]}, dtype="string")
    assert staging_airlines(raw_airlines=padded)["name"].tolist() == ["American Airlines Inc."]


def test_marts_sql_on_staging_frames(raw):
    """The marts' SQL files run by DuckDB on the staging frames, with the day bound as a one-day range."""
    con = duckdb.connect()
    for schema in ("staging", "marts"):
        con.execute(f"CREATE SCHEMA {schema}")
    frames = {
        "staging.flights": staging_flights(raw_flights=raw["flights"]),
        "staging.weather": staging_weather(raw_weather=raw["weather"]),
        "staging.planes": staging_planes(raw_planes=raw["planes"]),
        "staging.airports": staging_airports(raw_airports=raw["airports"]),
        "staging.airlines": staging_airlines(raw_airlines=raw["airlines"]),
    }
    for name, frame in frames.items():
        con.register("frame", frame)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM frame")
    day = date.fromisoformat(DAY)
    params = {"partition_start": day, "partition_end": day + timedelta(days=1)}
    con.execute("CREATE TABLE marts.flight_facts AS " + (SQL / "flight_facts.sql").read_text(), params)
    facts = con.execute("SELECT count(*), count(DISTINCT flight_id), count(*) FILTER (WHERE has_weather) "
                        "FROM marts.flight_facts").fetchone()
    assert facts[0] == facts[1] == DAY_FLIGHTS
    assert facts[2] == DAY_FLIGHTS  # every flight of 2013-01-15 left in an hour with a valid observation
    perf = con.execute((SQL / "carrier_daily_performance.sql").read_text(), params).df()
    assert perf["flights"].sum() == DAY_FLIGHTS
    assert perf["cancelled"].sum() == frames["staging.flights"]["cancelled"].sum()
    assert perf["on_time_rate"].between(0, 1).all()
    routes = con.execute((SQL / "route_daily.sql").read_text(), params).df()
    assert routes["flights"].sum() == DAY_FLIGHTS
    assert not routes.duplicated(["origin", "dest"]).any()


def test_the_domain_declares_each_table_once():
    tables = [spec.table for spec in domain.tables]
    assert len(tables) == len(set(tables)) == 13
    assert {t.split(".")[0] for t in tables} == {"raw", "staging", "marts"}
    # every input of a table is itself a table of the domain (the graph is closed)
    assert {i.table for spec in domain.tables for i in spec.inputs} <= set(tables)


# Values nothing downstream expects, one at a time in one row: far outside any plausible range, a fraction where
# a whole number belongs, a time_hour that is no timestamp or none pandas can hold (issue 20).
EXTREMES = {"Float64": [1e12, -1e12, 0.5], "Int64": [10**12, -(10**12)]}
TIME_HOURS = ["not a time", "9999-12-31T23:00:00Z"]


def _extremes(frame: pd.DataFrame):
    for column, dtype in frame.dtypes.items():
        for value in EXTREMES.get(str(dtype), []):
            yield column, value
    yield from (("time_hour", value) for value in TIME_HOURS)


@pytest.mark.parametrize("table", ["flights", "weather"])
def test_no_staging_transform_crashes_on_a_row_its_raw_contract_passed(raw, table):
    """Each extreme value is refused (the day blocked) or quarantined at raw, or the staging transform and its
    contract take it: none makes them raise."""
    from pipelines.definitions import catalog
    from pipelines.quality import validate
    from pipelines.sql import PARTITION

    raw_spec, staging_spec = catalog[f"raw.{table}"], catalog[f"staging.{table}"]
    references = {"carrier_in_raw_airlines": set(raw["airlines"]["carrier"])} if table == "flights" else {}
    outcomes = {}
    for column, value in _extremes(raw[table]):
        frame = raw[table].copy()
        frame.loc[frame.index[0], column] = value
        checked = validate(frame, raw_spec.contract, key_columns=raw_spec.key_columns, rules=raw_spec.rules,
                           reference_values=references)
        if checked.blocking(""):
            outcomes[column, value] = "refused"
            continue
        staged = staging_spec(**{f"raw_{table}": checked.valid.to_pandas().drop(columns=PARTITION)})
        validate(staged, staging_spec.contract, key_columns=staging_spec.key_columns, rules=staging_spec.rules)
        outcomes[column, value] = "quarantined" if len(checked.quarantined) else "passed"
    # the documentation's own limits hold at raw: delays agree with the clock times, times are whole HHMM,
    # time_hour is the row's hour in UTC
    for column, value in outcomes:
        if column in ("dep_delay", "arr_delay", "time_hour") or (column in ("dep_time", "arr_time") and value == 0.5):
            assert outcomes[column, value] != "passed", (column, value)
    assert outcomes  # (every column was tried)
