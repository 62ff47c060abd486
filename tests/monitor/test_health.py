"""`provline health`: per asset freshness, failing blocking checks, open anomalies, quarantined rows, pending
lineage events and undelivered alerts; the same summary as Dagster asset metadata (the monitor sensor)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from dagster._core.definitions.freshness import TimeWindowFreshnessPolicy

from pipelines.definitions import catalog, defs
from pipelines.domain import daily_partitions
from pipelines.factory import resources
from pipelines.lineage.delivery import enqueue
from pipelines.monitor import alerts
from pipelines.monitor.health import AssetHealth, Health, freshness
from pipelines.monitor.sensors import health_events, monitor_sensor
from pipelines.settings import get_settings
from tests.conftest import REPO, _isolate

from .conftest import Webhook, closed_port_url, eventually, flights_source
from .test_alerts import corrupt_day
from .test_anomaly import CUT, DAYS, run_raw_flights

WINDY_DAY = "2013-02-12"  # one wind reading of 1048 mph: quarantined by staging.weather
FACTS = catalog["marts.flight_facts"]
NOW = datetime(2026, 6, 1, 12, 0)


@pytest.fixture(scope="module")
def unwell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A warehouse with an anomaly (raw.flights, the 15th cut to a tenth), a blocking failure (the 16th with a
    bad origin), a quarantined row (staging.weather on the windy day), an event waiting in the lineage outbox
    and an undelivered alert."""
    base = tmp_path_factory.mktemp("unwell")
    home = base / "provline"
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, home)
        mp.setenv("PROVLINE_SOURCE_DIR", str(flights_source(base / "sources", DAYS, keep={CUT: 0.1})))
        assert run_raw_flights(DAYS[0], DAYS[-1]).success
        sources = corrupt_day(base / "bad")
        frame = pd.read_csv(sources / "flights.csv", dtype=str, keep_default_na=False).assign(day="16")
        frame.to_csv(sources / "flights.csv", index=False)
        mp.setenv("PROVLINE_SOURCE_DIR", str(sources))
        assert not run_raw_flights("2013-01-16", "2013-01-16").success
        mp.delenv("PROVLINE_SOURCE_DIR")
        weather = dg.AssetSelection.assets(catalog["raw.weather"].key, catalog["staging.weather"].key)
        assert dg.materialize(list(defs.assets), selection=weather, partition_key=WINDY_DAY,
                              resources=resources()).success
        enqueue(home / "outbox" / "default", json.dumps({"eventType": "COMPLETE", "job": {"name": "raw.flights"}}))
        mp.setenv("PROVLINE_ALERT_WEBHOOK_URL", closed_port_url())
        mp.setenv("PROVLINE_ALERT_MAX_ATTEMPTS", "1")
        alerts.notify([alerts.Event(alerts.ANOMALY, "raw.flights", CUT, "anomaly_volume", True, "too few")],
                      get_settings())
        assert alerts.sender.wait_idle(10)
        yield home


def health_json(home: Path) -> dict:
    env = {**os.environ, "PROVLINE_HOME": str(home)}
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "health", "--json"], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_health_names_what_fails_and_what_waits(unwell: Path):
    health = health_json(unwell)
    by_asset = {a["asset"]: a for a in health["assets"]}
    flights = by_asset["raw.flights"]
    assert flights["status"] == "FAIL"
    assert flights["latest_partition"] == CUT  # the 16th was refused: it keeps no version
    assert [(f["partition"], f["check"]) for f in flights["failing_blocking_checks"]] == [("2013-01-16",
                                                                                           "origin_isin")]
    assert "XYZ" in flights["failing_blocking_checks"][0]["message"]
    assert [(a["partition"], a["check"]) for a in flights["open_anomalies"]] == [(CUT, "anomaly_mean"),
                                                                                (CUT, "anomaly_volume")]
    assert flights["pending_lineage_events"] == 1 and flights["undelivered_alerts"] == 1
    assert by_asset["staging.weather"]["quarantined_rows"] == 1
    assert by_asset["raw.weather"]["quarantined_rows"] == 0
    facts = by_asset["marts.flight_facts"]
    assert (facts["freshness"], facts["latest_partition"], facts["last_partition"]) == \
        ("UNKNOWN", None, "2013-12-31")
    assert health["lineage_outbox"] == 1
    assert health["alerts"]["by_status"] == {"undelivered": 1}


def test_health_text_is_one_line_per_asset_then_the_details(unwell: Path):
    env = {**os.environ, "PROVLINE_HOME": str(unwell)}
    text = subprocess.run([sys.executable, "-m", "pipelines.cli", "health"], cwd=REPO, env=env, capture_output=True,
                          text=True, check=True).stdout.splitlines()
    assert text[0].split() == ["asset", "status", "latest", "age", "freshness", "blocking", "anomalies",
                               "quarantined", "lineage", "alerts"]
    flights = next(line for line in text if line.startswith("raw.flights "))
    assert flights.split()[:3] == ["raw.flights", "FAIL", CUT] and flights.split()[-5:] == ["1", "2", "0", "1", "1"]
    assert any(line.startswith("raw.flights [2013-01-16] origin_isin: ") for line in text)
    assert any(line.startswith(f"raw.flights [{CUT}] anomaly_volume: row_count 89 is outside") for line in text)
    assert "lineage outbox: 1 event(s) waiting" in text


def test_the_monitor_sensor_puts_the_summary_in_each_assets_metadata_when_it_changes(unwell: Path,
                                                                                     monkeypatch: pytest.MonkeyPatch):
    _isolate(monkeypatch, unwell)
    sensor = monitor_sensor(list(catalog))
    instance = dg.DagsterInstance.ephemeral()

    def tick(cursor: str | None = None):
        return sensor.evaluate_tick(dg.build_sensor_context(
            instance=instance, cursor=cursor, resources=resources()))

    first = tick()
    observed = {e.asset_key.to_user_string(): e.metadata for e in first.asset_events}
    assert set(observed) == {spec.key.to_user_string() for spec in catalog}
    flights = observed["raw/flights"]
    assert flights["health/status"].value == "FAIL"
    assert flights["health/latest_partition"].value == CUT
    assert flights["health/pending_lineage_events"].value == 1
    assert [f["check"] for f in flights["health/failing_blocking_checks"].value] == ["origin_isin"]
    again = tick(first.cursor)
    assert again.asset_events == []  # nothing changed: nothing recorded
    for path in (unwell / "outbox" / "default").glob("*.json"):
        path.unlink()  # the lineage event was delivered
    third = tick(again.cursor)
    assert [e.asset_key.to_user_string() for e in third.asset_events] == ["raw/flights"]


def test_the_marts_carry_a_dagster_freshness_policy():
    policies = {s.key.to_user_string(): s.freshness_policy for s in defs.resolve_all_asset_specs()}
    marts = {key: policy for key, policy in policies.items() if key.startswith("marts/")}
    assert len(marts) == 3 and all(isinstance(p, TimeWindowFreshnessPolicy) for p in marts.values())
    assert {(p.fail_window.to_timedelta(), p.warn_window.to_timedelta()) for p in marts.values()} == \
        {(timedelta(hours=27), timedelta(hours=25))}
    assert {key for key, policy in policies.items() if policy is not None} == set(marts)


def test_freshness_is_the_time_since_the_last_materialization_until_the_source_ends():
    written = NOW - timedelta(hours=2)
    assert freshness(FACTS, "2013-03-31", written, NOW) == ("PASS", "last materialized 2.0 h ago")
    assert freshness(FACTS, "2013-03-31", NOW - timedelta(hours=26), NOW) == \
        ("WARN", "last materialized 26.0 h ago, over 25.0 h")
    assert freshness(FACTS, "2013-03-31", NOW - timedelta(hours=30), NOW) == \
        ("FAIL", "last materialized 30.0 h ago, over the 27.0 h allowed")
    assert freshness(FACTS, "2013-12-31", NOW - timedelta(days=400), NOW) == \
        ("COMPLETE", "the source ended: its last partition, 2013-12-31, is built")
    assert freshness(FACTS, None, None, NOW) == ("UNKNOWN", "never materialized")
    assert freshness(catalog["raw.flights"], "2013-03-31", written, NOW) == ("-", "no freshness policy")
    delivering = dataclasses.replace(FACTS, partitions=daily_partitions("2024-01-01"))  # open-ended: never complete
    assert freshness(delivering, "2026-05-31", NOW - timedelta(days=3), NOW)[0] == "FAIL"


def test_a_freshness_violation_and_an_outbox_backlog_alert_and_resolve(home: Path, webhook: Webhook):
    late = AssetHealth("marts.flight_facts", "2013-03-31", "2013-12-31", None, 30.0, "FAIL",
                       "last materialized 30.0 h ago, over the 27.0 h allowed")
    alerts.notify(health_events(Health([late], lineage_outbox=1500, alerts={}), threshold=1000), get_settings())
    fresh = dataclasses.replace(late, freshness="PASS", freshness_reason="last materialized 0.5 h ago")
    alerts.notify(health_events(Health([fresh], lineage_outbox=10, alerts={}), threshold=1000), get_settings())
    assert alerts.sender.wait_idle(10)
    assert webhook.texts() == [
        "[provline] Not fresh: marts.flight_facts freshness: last materialized 30.0 h ago, over the 27.0 h allowed",
        "[provline] Lineage outbox backlog: lineage outbox_backlog: 1500 event(s) wait in the lineage outbox "
        "(threshold 1000); see `provline lineage replay`",
        "[provline] Resolved: Not fresh: marts.flight_facts freshness: last materialized 0.5 h ago",
        "[provline] Resolved: Lineage outbox backlog: lineage outbox_backlog: passes again",
    ]
    assert eventually(lambda: webhook.received)[0]["blocks"][0]["text"]["text"] == "Not fresh: marts.flight_facts"
