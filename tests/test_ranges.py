"""A range of partitions in one run: set-based inside the factory, per-partition truth everywhere."""

from __future__ import annotations

from collections import Counter

import dagster as dg
import pandas as pd
import pytest
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from pipelines.definitions import catalog, defs
from pipelines.factory import CHECKS_PER_RUN_TAG, resources
from pipelines.monitor.anomaly import ANOMALY_CHECK, MIN_HISTORY
from pipelines.settings import get_settings
from pipelines.verify import REPRODUCED, verify
from pipelines.warehouse import Warehouse

from .conftest import _isolate, local_day, materialize, query, write_sources

pytestmark = pytest.mark.slow  # a month in one run, and days one by one
FIRST, LAST = "2013-02-01", "2013-02-28"
WINDY_DAY = "2013-02-12"  # EWR 03:00 reported 1048 mph
DAYS = [d.strftime("%Y-%m-%d") for d in pd.date_range(FIRST, LAST)]
FLIGHTS_GROUP = [spec for spec in catalog if spec.group == "flights"]


def range_tags(first: str, last: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def materialize_range(first: str, last: str, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(list(defs.assets), selection=dg.AssetSelection.groups("flights"),
                          resources=resources(), raise_on_error=False,
                          tags=range_tags(first, last), **kwargs)


SMALL_MEMORY = "64MB"


@pytest.fixture(scope="module")
def february(tmp_path_factory: pytest.TempPathFactory):
    """The reference tables and February 2013 in one range run, on an instance kept for inspection; built
    about ten thousand rows (some ten days) at a time, DuckDB held to a small memory limit: chunks of a range
    must give what the whole range gives."""
    home = tmp_path_factory.mktemp("february") / "provline"
    instance = dg.DagsterInstance.ephemeral()
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, home)
        mp.setenv("PROVLINE_RANGE_CHUNK_ROWS", "10000")
        mp.setenv("PROVLINE_MEMORY_LIMIT", SMALL_MEMORY)
        assert materialize("reference").success
        result = materialize_range(FIRST, LAST, instance=instance)
        assert result.success
        yield home, instance, result


@pytest.fixture(scope="module")
def flights(delivered) -> pd.DataFrame:
    frame = delivered["flights"].assign(day=local_day(delivered["flights"]))
    return frame[frame["day"].between(FIRST, LAST)]


def test_the_marts_hold_what_bare_aggregation_gives(february, flights):
    home, _, _ = february

    def per_day(sql: str) -> dict[str, int]:
        return {day: n for day, n in query(home, sql)}

    expected = flights.groupby("day").size().to_dict()
    assert len(expected) == len(DAYS)
    assert per_day("SELECT strftime(flight_date, '%Y-%m-%d'), count(*) FROM marts.flight_facts GROUP BY 1") == expected
    assert per_day("SELECT strftime(flight_date, '%Y-%m-%d'), sum(flights) FROM marts.carrier_daily_performance "
                   "GROUP BY 1") == expected
    carriers = flights.groupby("day")["carrier"].nunique().to_dict()
    assert per_day("SELECT strftime(flight_date, '%Y-%m-%d'), count(*) FROM marts.carrier_daily_performance "
                   "GROUP BY 1") == carriers
    routes = flights.groupby("day")[["origin", "dest"]].apply(lambda g: len(g.drop_duplicates())).to_dict()
    assert per_day("SELECT strftime(flight_date, '%Y-%m-%d'), count(*) FROM marts.route_daily GROUP BY 1") == routes


def test_per_partition_hashes_equal_day_by_day_runs(february, tmp_path, monkeypatch):
    home, _, _ = february
    day_home = tmp_path / "days"
    _isolate(monkeypatch, day_home)
    assert materialize("reference").success
    days = [FIRST, WINDY_DAY, LAST]
    for day in days:
        assert materialize("flights", day).success
    sql = "SELECT asset, partition, content_hash FROM provline.version_log WHERE list_contains(?, partition)"
    by_day = sorted(query(day_home, sql, [days]))
    assert len(by_day) == len(FLIGHTS_GROUP) * len(days)
    assert sorted(query(home, sql, [days])) == by_day


def test_a_chunked_range_under_a_small_memory_limit_gives_the_unchunked_hashes(february, tmp_path, monkeypatch):
    home, _, _ = february
    whole = tmp_path / "whole"
    _isolate(monkeypatch, whole)  # the defaults: chunks of a million rows (February is one), 1GB for DuckDB
    assert materialize("reference").success
    assert materialize_range(FIRST, LAST).success
    sql = "SELECT asset, partition, content_hash, row_count, quarantined_count FROM provline.version_log"
    assert sorted(query(whole, sql)) == sorted(query(home, sql))
    commits = "SELECT count(DISTINCT written_at) FROM provline.version_log WHERE asset = 'raw.flights'"
    assert query(whole, commits) == [(1,)] and query(home, commits)[0][0] >= 3  # ~25,000 rows, 10,000 a chunk


def test_dagster_records_one_materialization_per_asset_and_partition(february):
    home, instance, result = february
    counted = Counter(
        (e.asset_key.to_user_string(), e.partition)
        for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"
    )
    assert counted == Counter({(spec.key.to_user_string(), day): 1 for spec in FLIGHTS_GROUP for day in DAYS})
    logged = dict(((a, p), h) for a, p, h in query(home, "SELECT asset, partition, content_hash "
                                                          "FROM provline.version_log"))
    for spec in FLIGHTS_GROUP:
        records = instance.fetch_materializations(spec.key, limit=100).records
        assert len(records) == len(DAYS)
        for record in records:
            event = record.asset_materialization
            assert event.tags["dagster/data_version"] == logged[(spec.table, event.partition)]
            assert event.metadata["content_hash"].value == logged[(spec.table, event.partition)]
        assert instance.get_materialized_partitions(spec.key) == set(DAYS)


def test_check_results_are_per_partition(february):
    _, instance, result = february
    evaluations = Counter(
        (e.event_specific_data.asset_key.to_user_string(), e.event_specific_data.check_name,
         e.event_specific_data.partition)
        for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    )
    assert set(evaluations.values()) == {1}  # each check once per partition
    checks = {(s.asset_key.to_user_string(), s.name) for a in defs.assets for s in a.check_specs
              if a.partitions_def is not None}
    judged = DAYS[MIN_HISTORY:]  # the anomaly monitors' first days have no verdict yet: no evaluation
    assert set(evaluations) == {(asset, check, day) for asset, check in checks
                                for day in (judged if check == ANOMALY_CHECK else DAYS)}
    key = dg.AssetCheckKey(dg.AssetKey(["staging", "weather"]), "quarantine")
    status = {info.partition_key: info.latest_execution_status
              for info in instance.event_log_storage.get_asset_check_partition_info([key], partition_keys=DAYS)}
    failed = AssetCheckExecutionRecordStatus.FAILED
    assert {day for day, s in status.items() if s == failed} == {WINDY_DAY}
    assert set(status) == set(DAYS)


def test_the_windy_reading_is_quarantined_in_its_partition(february):
    home, _, _ = february
    assert query(home, "SELECT strftime(obs_date, '%Y-%m-%d'), origin, round(wind_speed, 2), _quarantine_reasons "
                       "FROM quarantine.staging_weather") == [(WINDY_DAY, "EWR", 1048.36, "wind_speed_in_range")]
    assert query(home, "SELECT partition, quarantined_count FROM provline.version_log WHERE asset = 'staging.weather' "
                       "AND quarantined_count > 0") == [(WINDY_DAY, 1)]


def test_verify_reproduces_a_partition_in_the_middle_of_the_range(february, monkeypatch):
    home, _, _ = february
    _isolate(monkeypatch, home)
    for dataset in ("marts.flight_facts", "marts.carrier_daily_performance", "staging.weather"):
        verdict = verify(dataset, "2013-02-14", None, tables=catalog.specs, warehouse=Warehouse.from_settings())
        assert verdict.verdict == REPRODUCED, verdict.text()


CORRUPT_DAYS = ["2013-01-14", "2013-01-15", "2013-01-16"]  # the middle one with a flight from "XYZ"


@pytest.fixture
def corrupt_day(home, tmp_path, monkeypatch, delivered) -> list[str]:
    """Sources of three days, one flight of the middle day from an origin that does not exist; the reference
    tables built."""
    folder = write_sources(tmp_path / "sources", delivered, CORRUPT_DAYS)
    flights = pd.read_csv(folder / "flights.csv", dtype=str, keep_default_na=False)
    bad = flights.index[(flights["day"] == "15")][3]
    flights.loc[bad, "origin"] = "XYZ"
    flights.to_csv(folder / "flights.csv", index=False)
    monkeypatch.setenv("PROVLINE_SOURCE_DIR", str(folder))
    assert materialize("reference").success
    return CORRUPT_DAYS


def _written_and_blocked(home) -> None:
    """Every day but the corrupt one written downstream of raw.flights, and raw.flights' failure recorded."""
    written = query(home, "SELECT asset, list_sort(list(partition)) FROM provline.version_log "
                          "WHERE partition <> '' GROUP BY asset")
    good = [CORRUPT_DAYS[0], CORRUPT_DAYS[2]]
    assert dict(written) == {**{spec.table: good for spec in FLIGHTS_GROUP}, "raw.weather": CORRUPT_DAYS,
                             "staging.weather": CORRUPT_DAYS}
    failed = query(home, "SELECT partition, check_name FROM quality.check_results WHERE asset = 'raw.flights' "
                         "AND blocking")
    assert failed == [("2013-01-15", "origin_isin")]
    assert query(home, "SELECT count(*) FROM quality.check_results WHERE asset = 'staging.flights' "
                       "AND partition = '2013-01-15' AND check_name = 'upstream_failed' AND blocking") == [(1,)]


def test_a_range_with_one_corrupt_day_writes_every_other_day_and_names_it(home, corrupt_day):
    result = materialize_range(corrupt_day[0], corrupt_day[-1])
    assert not result.success
    message = "\n".join(e.event_specific_data.error.message for e in result.all_events
                        if e.event_type_value == "STEP_FAILURE")
    assert "raw.flights [2013-01-15]" in message and "origin_isin" in message and "XYZ" in message
    _written_and_blocked(home)


@pytest.mark.parametrize("opted_in_by", ["run tag", "settings resource"])
def test_checks_per_run_record_one_evaluation_per_check_and_run_and_still_block(home, corrupt_day, opted_in_by):
    """The opt-in for big backfills: Dagster plans no check per partition and gets one evaluation per check and
    run, naming the partition that failed; materializations stay per partition, and so does blocking. Opted in by
    the run's tag, or by the run's settings resource (which a step reads, not the environment: none is set here)."""
    tags = range_tags(corrupt_day[0], corrupt_day[-1])
    settings = get_settings()
    assert not settings.checks_per_run
    if opted_in_by == "run tag":
        tags[CHECKS_PER_RUN_TAG] = "true"
    else:
        settings = get_settings(checks_per_run=True)
    result = dg.materialize(list(defs.assets), selection=dg.AssetSelection.groups("flights").without_checks(),
                            resources=resources(settings=settings), raise_on_error=False, tags=tags)
    assert not result.success
    evaluations = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    # (the anomaly monitors have no verdict yet on 3 days: no evaluation, per run as per partition)
    checks = {(s.asset_key.to_user_string(), s.name) for a in defs.assets for s in a.check_specs
              if a.partitions_def is not None and s.name != ANOMALY_CHECK}
    assert Counter((e.asset_key.to_user_string(), e.check_name, e.partition) for e in evaluations) == \
        Counter({(asset, check, None): 1 for asset, check in checks})
    contract = next(e for e in evaluations
                    if e.asset_key.to_user_string() == "raw/flights" and e.check_name == "contract")
    assert not contract.passed and contract.metadata["partitions"].value == 3
    failures = contract.metadata["failures"].value
    assert list(failures) == ["2013-01-15"] and "origin_isin" in failures["2013-01-15"]
    planned = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION_PLANNED"]
    assert planned == []
    materialized = Counter(e.asset_key.to_user_string() for e in result.all_events
                           if e.event_type_value == "ASSET_MATERIALIZATION")
    assert materialized["raw/weather"] == 3 and materialized["marts/flight_facts"] == 2
    _written_and_blocked(home)
