"""Anomaly monitors on real runs: a day of flights cut to a tenth, judged against the days before it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from pipelines.definitions import catalog, defs
from pipelines.factory import resources
from pipelines.monitor import alerts
from pipelines.monitor.anomaly import NO_VERDICT, MonitorConfig, _earlier_versions, expected
from tests.conftest import DAY, _isolate, query
from tests.lineage.lineage_support import read_events, validate

from .conftest import Webhook, eventually, flights_source

DAYS = [d.strftime("%Y-%m-%d") for d in pd.date_range("2013-01-01", "2013-01-15")]
CUT = "2013-01-15"  # a Tuesday: 894 flights, 89 kept
RAW_FLIGHTS = catalog["raw.flights"]


def run_raw_flights(first: str, last: str, instance: dg.DagsterInstance | None = None) -> dg.ExecuteInProcessResult:
    """raw.flights for a day or a range (after raw.airlines, which its carrier reference reads)."""
    airlines = dg.materialize(list(defs.assets), selection=dg.AssetSelection.assets(dg.AssetKey(["raw", "airlines"])),
                              resources=resources(), raise_on_error=False)
    assert airlines.success
    tags = {} if first == last else {"dagster/asset_partition_range_start": first,
                                     "dagster/asset_partition_range_end": last}
    return dg.materialize(list(defs.assets), selection=dg.AssetSelection.assets(RAW_FLIGHTS.key),
                          partition_key=first if first == last else None, tags=tags, instance=instance,
                          resources=resources(), raise_on_error=False)


def volume_evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    """Per partition, its `anomalies` check (the row count's verdict is in the open in its metadata)."""
    return {e.event_specific_data.partition: e.event_specific_data for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
            and e.event_specific_data.check_name == "anomalies"}


def volume_anomalous(evaluation: dg.AssetCheckEvaluation) -> bool:
    out_of_range = evaluation.metadata.get("out_of_range")
    return out_of_range is not None and "row_count" in out_of_range.value


@dataclass
class Cut:
    home: Path
    sources: Path
    result: dg.ExecuteInProcessResult
    webhook: Webhook


@pytest.fixture(scope="module")
def cut(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cut]:
    """raw.flights for 2013-01-01..15 in one range run, the 15th cut to a tenth of its flights; alerts to a
    real webhook."""
    base = tmp_path_factory.mktemp("cut")
    webhook = Webhook()
    threading.Thread(target=webhook.serve_forever, daemon=True).start()
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, base / "provline")
        sources = flights_source(base / "sources", DAYS, keep={CUT: 0.1})
        mp.setenv("PROVLINE_SOURCE_DIR", str(sources))
        mp.setenv("PROVLINE_ALERT_WEBHOOK_URL", webhook.url)
        result = run_raw_flights(DAYS[0], DAYS[-1])
        assert result.success
        yield Cut(base / "provline", sources, result, webhook)
        assert alerts.sender.wait_idle(30)
    webhook.shutdown()
    webhook.server_close()


def test_a_day_cut_to_a_tenth_raises_a_volume_anomaly_naming_the_expected_range(cut: Cut):
    evaluation = volume_evaluations(cut.result)[CUT]
    assert not evaluation.passed and volume_anomalous(evaluation)
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    metadata = {key: value.value for key, value in evaluation.metadata.items()}
    # Tuesdays before it: 842 (New Year's Day) and 899 -> 870.5; the spread within weekdays over the 14 days
    # is 21.4 (3σ = 64.2), under the 10% minimum change (87.05): 783.45..957.55.
    assert metadata["actual"] == "89"
    assert metadata["expected_low"] == pytest.approx(783.45)
    assert metadata["expected_high"] == pytest.approx(957.55)
    assert len(str(metadata["expected_low"])) <= 7  # six significant digits at most, never 15
    assert metadata["expected_range"] == \
        "783..958 (the same weekday's mean over the 14 previous partitions is 870)"
    assert metadata["problem"].startswith("anomaly_volume: row_count 89 is outside the expected range 783..958")
    assert evaluation.target_materialization_data is not None  # it judged the version just written


def test_the_range_is_judged_in_partition_order_each_day_against_the_earlier_days(cut: Cut):
    evaluations = volume_evaluations(cut.result)
    assert set(evaluations) == set(DAYS[7:])  # fewer than 7 previous partitions: no verdict yet, no evaluation
    assert [d for d, e in evaluations.items() if volume_anomalous(e)] == [CUT]
    monday = evaluations["2013-01-14"].metadata["expected_range"].value
    assert "over the 13 previous partitions" in monday  # the 13 earlier days of this same range
    counts = dict(query(cut.home, "SELECT partition, row_count FROM provline.version_log"))
    # the same verdict as the monitors' own function gives from the 14 earlier days' counts
    again = expected([(d, float(counts[d])) for d in DAYS[:-1]], CUT, "row_count", MonitorConfig())
    assert (again.low, again.high) == (pytest.approx(783.45), pytest.approx(957.55))


def test_the_verdicts_are_stored_with_the_validation_and_the_statistics_kept(cut: Cut):
    stored = query(cut.home, "SELECT partition, passed, message FROM quality.check_results "
                             "WHERE check_name = 'anomaly_volume' ORDER BY partition")
    assert [p for p, passed, _ in stored if passed is False] == [CUT]
    assert [(p, message) for p, passed, message in stored if passed is None] == [(d, NO_VERDICT) for d in DAYS[:7]]
    assert len(stored) == len(DAYS)
    # the anomaly belongs to the same validation as the contract's checks (same run, same time)
    assert query(cut.home, """SELECT count(DISTINCT recorded_at) FROM quality.check_results
                              WHERE partition = ? AND asset = 'raw.flights'""", [CUT]) == [(1,)]
    stats = dict(query(cut.home, """SELECT partition, value FROM quality.partition_stats
                                    WHERE metric = 'row_count' AND asset = 'raw.flights'"""))
    counts = dict(query(cut.home, "SELECT partition, row_count FROM provline.version_log"))
    assert stats == {d: float(counts[d]) for d in DAYS}
    # null rates: every column but the exempt ones; the declared mean
    metrics = {(m, c) for m, c in query(cut.home, """SELECT DISTINCT metric, "column" FROM quality.partition_stats
                                                     WHERE partition = ?""", [CUT])}
    assert ("mean", "distance") in metrics and ("null_rate", "carrier") in metrics
    assert ("null_rate", "dep_time") not in metrics  # cancellations drive it (checks/flights.py)


def test_the_verdicts_are_in_openlineage(cut: Cut):
    events = [e for e in read_events(cut.home / "lineage")
              if e["eventType"] == "COMPLETE" and e["job"]["name"] == "raw.flights"
              and any(t["key"] == "partition" and t["value"] == CUT for t in e["run"]["facets"]["tags"]["tags"])]
    (event,) = events
    facets = event["outputs"][0]["facets"]
    volume = [a for a in facets["dataQualityAssertions"]["assertions"] if a["assertion"] == "anomaly_volume"]
    assert volume == [{"assertion": "anomaly_volume", "success": False, "severity": "warn", "name": "anomaly_volume",
                       "expected": "783..958 (the same weekday's mean over the 14 previous partitions is 870)",
                       "actual": "89", "params": {}}]
    distance = facets["dataQualityMetrics"]["columnMetrics"]["distance"]
    flights = pd.read_csv(cut.sources / "flights.csv")
    day = flights[(flights["month"] == 1) & (flights["day"] == 15)]
    assert (distance["sum"], distance["count"]) == (pytest.approx(float(day["distance"].sum())), len(day))
    validate([event])


def test_an_anomaly_alerts_once_then_resolves_once(cut: Cut, monkeypatch: pytest.MonkeyPatch):
    sent = eventually(lambda: [m for m in cut.webhook.received if "anomaly_volume" in m["text"]], what="the alert")
    assert [m["text"] for m in sent] == [
        f"[provline] Anomaly: raw.flights [{CUT}] anomaly_volume: row_count 89 is outside the expected range "
        "783..958 (the same weekday's mean over the 14 previous partitions is 870)"]
    assert [b["type"] for b in sent[0]["blocks"]] == ["header", "section", "context"]
    # the same day again, still cut: the same anomaly, not said twice
    assert run_raw_flights(CUT, CUT).success
    assert alerts.sender.wait_idle(30)
    assert len([m for m in cut.webhook.received if "anomaly_volume" in m["text"]]) == 1
    # the full day arrives: one "resolved"
    flights_source(cut.sources, DAYS)
    result = run_raw_flights(CUT, CUT)
    assert not volume_anomalous(volume_evaluations(result)[CUT])
    resolved = eventually(lambda: [t for t in cut.webhook.texts() if t.startswith("[provline] Resolved")
                                   and "anomaly_volume" in t], what="the resolution")
    assert resolved == [f"[provline] Resolved: Anomaly: raw.flights [{CUT}] anomaly_volume: passes again"]


def test_no_verdict_yet_is_stored_as_such_and_never_shown_as_passed(home: Path):
    """A table's first partition has nothing to be compared with: `passed` NULL and the reason in the store, no
    `anomalies` evaluation in Dagster (which resolves the planned check as skipped, not succeeded), no OpenLineage
    assertion and no alert."""
    import asyncio

    from dagster._core.loader import LoadingContextForTest
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionResolvedStatus as Resolved

    with dg.DagsterInstance.ephemeral() as instance:
        result = run_raw_flights(DAY, DAY, instance=instance)
        assert result.success and volume_evaluations(result) == {}
        status = {}
        for check in ("anomalies", "contract"):
            (record,) = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(RAW_FLIGHTS.key, check), limit=1)
            status[check] = asyncio.run(record.resolve_status(LoadingContextForTest(instance)))
    assert status == {"anomalies": Resolved.SKIPPED, "contract": Resolved.SUCCEEDED}
    stored = query(home, "SELECT check_name, passed, message FROM quality.check_results "
                         "WHERE check_name LIKE 'anomaly%' ORDER BY check_name")
    assert stored == [(check, None, NO_VERDICT) for check in ("anomaly_mean", "anomaly_null_rate", "anomaly_volume")]
    (complete,) = [e for e in read_events(home / "lineage") if e["eventType"] == "COMPLETE"
                   and e["job"]["name"] == "raw.flights"]
    names = {a["assertion"] for a in complete["outputs"][0]["facets"]["dataQualityAssertions"]["assertions"]}
    assert names and not any(name.startswith("anomaly") for name in names)


def test_each_written_partition_gets_the_window_before_it_however_far_apart():
    """Written partitions far apart (a range whose middle was refused keeps older versions there): each is
    judged against the `window` partitions with a version before it."""
    with duckdb.connect() as con:
        con.execute("CREATE SCHEMA provline; CREATE TABLE provline.version_log (asset VARCHAR, partition VARCHAR, "
                    "content_hash VARCHAR, written_at TIMESTAMP, snapshot_id BIGINT)")  # as the warehouse has it
        days = [d.strftime("%Y-%m-%d") for d in pd.date_range("2013-01-01", "2013-04-30")]
        con.executemany("INSERT INTO provline.version_log VALUES ('t', ?, ?, now(), NULL)",
                        [[d, f"h{d}"] for d in days])
        needed = _earlier_versions(con, "t", ["2013-01-03", "2013-04-20"], 14)
    expected_days = ["2013-01-01", "2013-01-02"] + [d.strftime("%Y-%m-%d")
                                                   for d in pd.date_range("2013-04-06", "2013-04-19")]
    assert needed == {d: f"h{d}" for d in expected_days}
