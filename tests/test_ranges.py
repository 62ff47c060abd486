"""A range of partitions in one run: set-based inside the factory, per-partition truth everywhere."""

from __future__ import annotations

from collections import Counter

import dagster as dg
import pandas as pd
import pytest
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from pipelines.definitions import catalog, defs
from pipelines.monitor.anomaly import ANOMALY_CHECK, MIN_HISTORY
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
                          resources={"warehouse": Warehouse.from_settings()}, raise_on_error=False,
                          tags=range_tags(first, last), **kwargs)


@pytest.fixture(scope="module")
def february(tmp_path_factory: pytest.TempPathFactory):
    """The reference tables and February 2013 in one range run, on an instance kept for inspection; built
    ten days at a time (chunks of a range must give what the whole range gives)."""
    home = tmp_path_factory.mktemp("february") / "provline"
    instance = dg.DagsterInstance.ephemeral()
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, home)
        mp.setenv("PROVLINE_RANGE_CHUNK_DAYS", "10")
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


def test_a_range_with_one_corrupt_day_writes_every_other_day_and_names_it(home, tmp_path, monkeypatch, delivered):
    days = ["2013-01-14", "2013-01-15", "2013-01-16"]
    folder = write_sources(tmp_path / "sources", delivered, days)
    flights = pd.read_csv(folder / "flights.csv", dtype=str, keep_default_na=False)
    bad = flights.index[(flights["day"] == "15")][3]
    flights.loc[bad, "origin"] = "XYZ"
    flights.to_csv(folder / "flights.csv", index=False)
    monkeypatch.setenv("PROVLINE_SOURCE_DIR", str(folder))
    assert materialize("reference").success
    result = materialize_range(days[0], days[-1])
    assert not result.success
    message = "\n".join(e.event_specific_data.error.message for e in result.all_events
                        if e.event_type_value == "STEP_FAILURE")
    assert "raw.flights [2013-01-15]" in message and "origin_isin" in message and "XYZ" in message
    written = query(home, "SELECT asset, list_sort(list(partition)) FROM provline.version_log "
                          "WHERE partition <> '' GROUP BY asset")
    good = ["2013-01-14", "2013-01-16"]
    assert dict(written) == {**{spec.table: good for spec in FLIGHTS_GROUP}, "raw.weather": days,
                             "staging.weather": days}
    failed = query(home, "SELECT partition, check_name FROM quality.check_results WHERE asset = 'raw.flights' "
                         "AND blocking")
    assert failed == [("2013-01-15", "origin_isin")]
