"""Alerts to a real Slack-compatible webhook on 127.0.0.1: the message, de-duplication and resolution, a
webhook that is down or hangs (runs unaffected, alerts retried then undelivered), run failures."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from pipelines.factory import resources
from pipelines.monitor import alerts
from pipelines.monitor.health import summarize
from pipelines.monitor.sensors import run_failure_alert, run_success_resolve
from pipelines.settings import get_settings
from pipelines.warehouse import Warehouse

from .conftest import Webhook, closed_port_url, eventually, flights_source
from .test_anomaly import RAW_FLIGHTS, run_raw_flights

DAY = "2013-01-15"
EVENT = alerts.Event(alerts.ANOMALY, "marts.route_daily", DAY, "anomaly_volume", True,
                     "row_count 17 is outside the expected range 150..186", "details")


def stored(home: Path) -> list[tuple]:
    with alerts.connect(get_settings()) as con:  # under the store's lock, as the sender
        return con.execute("SELECT check_name, firing, status, attempts, last_error FROM alerts "
                           "ORDER BY created_at").fetchall()


def corrupt_day(folder: Path) -> Path:
    """flights.csv of DAY with one origin that is not a NYC airport (a blocking failure of raw.flights)."""
    flights_source(folder, [DAY])
    frame = pd.read_csv(folder / "flights.csv", dtype=str, keep_default_na=False)
    frame.loc[3, "origin"] = "XYZ"
    frame.to_csv(folder / "flights.csv", index=False)
    return folder


def test_an_alert_is_a_slack_message(home: Path, webhook: Webhook):
    alerts.notify([EVENT], get_settings())
    (message,) = eventually(lambda: list(webhook.received), what="the message")
    assert message == {
        "text": f"[provline] Anomaly: marts.route_daily [{DAY}] anomaly_volume: row_count 17 is outside the "
                "expected range 150..186",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": f"Anomaly: marts.route_daily [{DAY}]"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "*anomaly_volume*: row_count 17 is outside the "
                                                                   "expected range 150..186\n```details```"}},
            message["blocks"][2],
        ],
    }
    assert message["blocks"][2]["type"] == "context"
    assert message["blocks"][2]["elements"][0]["text"].startswith("provline · anomaly · ")
    assert webhook.url not in (home / "alerts.duckdb").read_bytes().decode("latin-1")  # the secret is not stored


def test_a_repeat_is_sent_once_within_the_window_and_the_recovery_once(home: Path, webhook: Webhook,
                                                                        monkeypatch: pytest.MonkeyPatch):
    alerts.notify([EVENT], get_settings())
    alerts.notify([EVENT], get_settings())
    recovered = alerts.Event(EVENT.kind, EVENT.asset, EVENT.partition, EVENT.check, False)
    assert alerts.sender.wait_idle(10)
    assert len(webhook.received) == 1
    monkeypatch.setenv("PROVLINE_ALERT_WINDOW_S", "0")  # the window has passed: said again
    alerts.notify([EVENT], get_settings())
    alerts.notify([recovered], get_settings())
    alerts.notify([recovered], get_settings())  # already resolved: nothing more
    assert alerts.sender.wait_idle(10)
    assert [m["text"].split(":")[0] for m in webhook.received] == \
        ["[provline] Anomaly", "[provline] Anomaly", "[provline] Resolved"]
    assert webhook.received[2]["text"] == f"[provline] Resolved: Anomaly: marts.route_daily [{DAY}] anomaly_volume: " \
                                          "passes again"
    assert [(firing, status) for _, firing, status, _, _ in stored(home)] == \
        [(True, "delivered"), (True, "delivered"), (False, "delivered")]


def test_a_webhook_that_is_down_is_retried_then_recorded_undelivered(home: Path, monkeypatch: pytest.MonkeyPatch):
    url = closed_port_url()
    monkeypatch.setenv("PROVLINE_ALERT_WEBHOOK_URL", url)
    monkeypatch.setenv("PROVLINE_ALERT_MAX_ATTEMPTS", "3")
    alerts.notify([EVENT], get_settings())
    rows = eventually(lambda: [r for r in stored(home) if r[2] == "undelivered"], what="undelivered")
    (_, _, _, attempts, error), = rows
    assert attempts == 3 and "Connection refused" in error and url not in error
    health = summarize([], Warehouse.from_settings(), get_settings())
    assert health.alerts["by_status"] == {"undelivered": 1}
    assert health.alerts["undelivered"][0]["asset"] == "marts.route_daily"


@pytest.mark.slow
def test_a_hanging_webhook_never_holds_up_a_run(home: Path, tmp_path: Path, webhook: Webhook,
                                               monkeypatch: pytest.MonkeyPatch):
    webhook.mode = "hang"
    monkeypatch.setenv("PROVLINE_ALERT_TIMEOUT_S", "3")
    monkeypatch.setenv("PROVLINE_ALERT_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("PROVLINE_SOURCE_DIR", str(corrupt_day(tmp_path / "sources")))
    result = run_raw_flights(DAY, DAY)
    # the run ends as it would without alerts (a blocking failure), before the first attempt has timed out
    assert not result.success
    assert [(c, s) for c, _, s, _, _ in stored(home)] == [("contract", "pending")]
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "origin_isin" in failure.event_specific_data.error.message
    rows = eventually(lambda: [r for r in stored(home) if r[2] == "undelivered"], what="undelivered")
    assert rows[0][3] == 2 and rows[0][4] == "TimeoutError: timed out"
    assert webhook.attempts == 2
    health = summarize([RAW_FLIGHTS], Warehouse.from_settings(), get_settings())
    assert health.assets[0].undelivered_alerts == 1


@pytest.mark.slow
def test_a_failed_run_alerts_and_the_next_success_resolves_it(home: Path, tmp_path: Path, webhook: Webhook,
                                                             monkeypatch: pytest.MonkeyPatch):
    instance = dg.DagsterInstance.ephemeral()
    monkeypatch.setenv("PROVLINE_SOURCE_DIR", str(corrupt_day(tmp_path / "sources")))
    failed = run_raw_flights(DAY, DAY, instance)
    assert not failed.success
    context = dg.build_run_status_sensor_context(
        sensor_name="provline_run_failure_alert", dagster_event=failed.get_run_failure_event(),
        dagster_instance=instance, dagster_run=failed.dagster_run, resources=resources()).for_run_failure()
    run_failure_alert(context)
    flights_source(tmp_path / "sources", [DAY])
    fixed = run_raw_flights(DAY, DAY, instance)
    assert fixed.success
    success = next(e for e in fixed.all_events if e.event_type_value == "PIPELINE_SUCCESS")
    run_success_resolve(dg.build_run_status_sensor_context(
        sensor_name="provline_run_success_resolve", dagster_event=success, dagster_instance=instance,
        dagster_run=fixed.dagster_run, resources=resources()))
    assert alerts.sender.wait_idle(10)
    texts = webhook.texts()
    assert len(texts) == 4
    # from the step, and from the run-failure sensor
    assert f"[provline] Blocking check failed: raw.flights [{DAY}] contract: origin_isin: 1 of 894 rows" in texts
    assert any(t.startswith(f"[provline] Run failed: __ephemeral_asset_job__ [{DAY}] run: ") for t in texts)
    # from the fixed run's step, and from the run-success sensor
    assert f"[provline] Resolved: Blocking check failed: raw.flights [{DAY}] contract: passes again" in texts
    assert f"[provline] Resolved: Run failed: __ephemeral_asset_job__ [{DAY}] run: run {fixed.run_id}" in texts


SECRET = "T0000/B0000/s3cr3t-w3bh00k-t0k3n"


@pytest.mark.slow
def test_no_secret_setting_shows_in_a_repr_a_log_or_an_event(home: Path, tmp_path: Path, monkeypatch,
                                                            caplog: pytest.LogCaptureFixture):
    """The webhook URL (its path is the credential) and a conninfo's password: not in Settings' repr, nor in any
    log record, Dagster event or lineage event of a run that sends an alert to a webhook that is down."""
    import logging


    monkeypatch.setenv("PROVLINE_ALERT_WEBHOOK_URL", f"{closed_port_url()}/services/{SECRET}")
    monkeypatch.setenv("PROVLINE_ALERT_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("PROVLINE_SOURCE_DIR", str(corrupt_day(tmp_path / "sources")))
    lake = get_settings(warehouse_url=f"ducklake:postgres:host=h password={SECRET}")
    assert SECRET not in repr(get_settings()) and SECRET not in str(lake) and "services" not in repr(get_settings())
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("provline.test").info("settings: %s; %r", get_settings(), lake)
        result = run_raw_flights(DAY, DAY)
        rows = eventually(lambda: [r for r in stored(home) if r[2] == "undelivered"], what="undelivered")
    assert not result.success and rows  # the alert was attempted (and failed): its error is stored
    assert "settings: provline_home=" in caplog.text  # (the log has the settings: their text, then repr)
    events = "\n".join(repr(event) for event in result.all_events)
    lineage = "\n".join(path.read_text() for path in (home / "lineage").glob("*.jsonl"))
    for where, text in [("logs", caplog.text), ("Dagster events", events), ("lineage", lineage),
                        ("the alerts store", repr(stored(home)))]:
        assert SECRET not in text, where
