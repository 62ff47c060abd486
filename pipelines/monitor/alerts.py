"""Alerts: a Slack-compatible JSON POST (`text` plus `blocks`) to PROVLINE_ALERT_WEBHOOK_URL.

Raised on a blocking check failure, an anomaly, a run failure, a freshness violation, a rejected landing
file and a lineage outbox backlog over its threshold (`Event.kind`).

- **De-duplicated** per (asset, partition, check): while a key is firing, the same alert is not sent again
  within PROVLINE_ALERT_WINDOW_S (after it, once more as a reminder); when the check passes again, one
  "resolved" message is sent and the key is closed.
- **Never in the way of a run**: `notify` records the alerts in `<PROVLINE_HOME>/alerts.duckdb` (a file lock
  held for the few statements) and a background thread of the process sends them. Each attempt has a timeout
  (PROVLINE_ALERT_TIMEOUT_S); a failed one is retried with backoff (0.5 s doubling, up to a minute) by this
  process or by the next one that sends (a step, the monitor sensor); after PROVLINE_ALERT_MAX_ATTEMPTS the
  alert is `undelivered`, which `provline health` shows. At exit a process waits at most the timeout.
- The webhook URL is a secret: it is never stored, logged or shown; delivery errors are scrubbed of it.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb

from pipelines.background import Worker, at_exit
from pipelines.lineage.delivery import redact
from pipelines.locks import file_lock, open_duckdb, try_lock
from pipelines.settings import Settings
from pipelines.sql import interrupted

log = logging.getLogger(__name__)

BLOCKING_FAILURE, ANOMALY, RUN_FAILURE = "blocking_failure", "anomaly", "run_failure"
FRESHNESS, LANDING_REJECTED, OUTBOX_BACKLOG = "freshness", "landing_rejected", "outbox_backlog"
TITLES = {
    BLOCKING_FAILURE: "Blocking check failed", ANOMALY: "Anomaly", RUN_FAILURE: "Run failed",
    FRESHNESS: "Not fresh", LANDING_REJECTED: "Landing file rejected", OUTBOX_BACKLOG: "Lineage outbox backlog",
}
PENDING, DELIVERED, UNDELIVERED = "pending", "delivered", "undelivered"
LOCK_TIMEOUT_S = 10.0
MAX_BACKOFF_S = 60.0

DDL = """
CREATE TABLE IF NOT EXISTS alerts (
    id VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL, asset VARCHAR NOT NULL, "partition" VARCHAR NOT NULL, check_name VARCHAR NOT NULL,
    firing BOOLEAN NOT NULL,          -- FALSE: the "resolved" message
    summary VARCHAR NOT NULL,
    payload VARCHAR NOT NULL,         -- the JSON body
    status VARCHAR NOT NULL,          -- pending | delivered | undelivered
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error VARCHAR,
    created_at TIMESTAMP NOT NULL,    -- UTC
    next_attempt_at TIMESTAMP,
    delivered_at TIMESTAMP
)"""


@dataclass(frozen=True)
class Event:
    """Something an alert may be about: `firing` True when it fails, False when the same check passes."""

    kind: str
    asset: str
    partition: str
    check: str
    firing: bool
    summary: str = ""
    details: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return self.asset, self.partition, self.check


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@contextmanager
def connect(settings: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    """The alert store, under its file lock."""
    with file_lock(settings.home / "alerts.lock", LOCK_TIMEOUT_S), \
            open_duckdb(str(settings.alerts_path), DDL) as con:
        yield con


def notify(events: Sequence[Event], settings: Settings) -> None:
    """Record the alerts these events call for and start sending them. Never raises: an alert that
    cannot even be recorded is logged."""
    if not events or settings.alert_webhook_url is None:
        return
    try:
        with connect(settings) as con:
            recorded = _record(con, events, settings)
    except Exception as error:  # noqa: BLE001 - alerting never fails what raised the alert
        if interrupted(error):  # (DuckDB's form of Ctrl-C: the step must end, not carry on)
            raise
        log.warning("%d alert(s) not recorded: %s", len(events), error)
        return
    if recorded:
        kick(settings)


def _record(con: duckdb.DuckDBPyConnection, events: Sequence[Event], settings: Settings) -> int:
    """Insert the messages: a key that starts failing (or still fails after the window), a key that passes
    again; returns how many."""
    latest = {
        (asset, partition, check): (firing, created_at)
        for asset, partition, check, firing, created_at in con.execute(
            """SELECT asset, "partition", check_name, firing, created_at FROM alerts
               WHERE list_contains($assets, asset)
               QUALIFY row_number() OVER (PARTITION BY asset, "partition", check_name ORDER BY created_at DESC) = 1""",
            {"assets": sorted({e.asset for e in events})},
        ).fetchall()
    }
    now = _now()
    window = timedelta(seconds=settings.alert_window_s)
    recorded = 0
    for event in events:
        firing, at = latest.get(event.key, (False, None))
        if not event.firing and not firing:
            continue  # passing, and nothing was open: nothing to say
        if event.firing and firing and now - at < window:
            continue  # already said
        con.execute(
            """INSERT INTO alerts (id, kind, asset, "partition", check_name, firing, summary, payload, status,
                                   created_at, next_attempt_at)
               VALUES ($id, $kind, $asset, $partition, $check, $firing, $summary, $payload, $status, $now, $now)""",
            {"id": str(uuid.uuid4()), "kind": event.kind, "asset": event.asset, "partition": event.partition,
             "check": event.check, "firing": event.firing, "summary": event.summary,
             "payload": json.dumps(slack_payload(event, now)), "status": PENDING, "now": now},
        )
        latest[event.key] = (event.firing, now)
        recorded += 1
    return recorded


def slack_payload(event: Event, at: datetime) -> dict:
    """Slack's incoming-webhook format: `text` (notifications, clients without blocks) and `blocks`."""
    title = f"Resolved: {TITLES[event.kind]}" if not event.firing else TITLES[event.kind]
    where = f"{event.asset} [{event.partition}]" if event.partition else event.asset
    summary = event.summary or ("passes again" if not event.firing else event.check)
    body = f"*{event.check}*: {summary}" + (f"\n```{event.details}```" if event.details else "")
    return {
        "text": f"[provline] {title}: {where} {event.check}: {summary}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": f"{title}: {where}"[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": body[:3000]}},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": f"provline · {event.kind} · {at:%Y-%m-%d %H:%M:%S} UTC"}]},
        ],
    }


# --- delivery -------------------------------------------------------------------------------------


def post(url: str, payload: str, timeout_s: float) -> str | None:
    """One attempt; the error in words (without the URL), or None when the webhook accepted it."""
    request = urllib.request.Request(url, data=payload.encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
        return None
    except Exception as error:  # noqa: BLE001 - any failure is a failed attempt, retried
        return redact(error, {url})


def deliver_due(settings: Settings, stop: threading.Event | None = None) -> float | None:
    """Send every alert that is due, one attempt each; return the seconds until the next retry is due
    (None: nothing left to send). Another process already sending: leave it to that one."""
    url = settings.alert_webhook_url
    if url is None:
        return None
    with try_lock(settings.home / "alert-sender" / ".lock") as mine:  # one sender at a time: none sent twice
        if not mine:
            return None
        with connect(settings) as con:
            due = con.execute(
                "SELECT id, payload, attempts FROM alerts WHERE status = 'pending' AND next_attempt_at <= $now "
                "ORDER BY created_at, rowid", {"now": _now()}).fetchall()
        for alert_id, payload, attempts in due:
            if stop is not None and stop.is_set():
                break
            error = post(url, payload, settings.alert_timeout_s)
            _attempted(settings, alert_id, attempts + 1, error)
        with connect(settings) as con:
            (wait,) = con.execute(
                "SELECT min(next_attempt_at) - $now FROM alerts WHERE status = 'pending'", {"now": _now()}
            ).fetchone()
    return None if wait is None else max(0.0, wait.total_seconds())


def _attempted(settings: Settings, alert_id: str, attempts: int, error: str | None) -> None:
    now = _now()
    if error is None:
        status, retry_at = DELIVERED, None
    elif attempts >= settings.alert_max_attempts:
        status, retry_at = UNDELIVERED, None
        log.warning("alert %s undelivered after %d attempts: %s", alert_id, attempts, error)
    else:
        status, retry_at = PENDING, now + timedelta(seconds=min(MAX_BACKOFF_S, 0.5 * 2 ** (attempts - 1)))
    with connect(settings) as con:
        con.execute(
            """UPDATE alerts SET status = $status, attempts = $attempts, last_error = $error,
                                 next_attempt_at = $retry_at, delivered_at = $delivered_at WHERE id = $id""",
            {"status": status, "attempts": attempts, "error": error, "retry_at": retry_at,
             "delivered_at": now if error is None else None, "id": alert_id},
        )


def kick(settings: Settings) -> None:
    """Have this process's sender send what is due in the alert store of `settings`, to its webhook."""
    global _sending
    _sending = settings
    sender.kick()


def _send_due(stopping: threading.Event) -> float | None:
    return deliver_due(_sending, stopping) if _sending is not None else None


def _failed(error: Exception) -> None:  # e.g. the store locked too long: the next kick retries
    url = _sending.alert_webhook_url if _sending is not None else None
    log.warning("alert delivery stopped: %s", redact(error, {url} if url else set()))


_sending: Settings | None = None
"""The settings of the latest kick: the sender's store and webhook (a process serves one PROVLINE_HOME)."""
sender = Worker("provline-alerts", _send_due, _failed)
"""This process's background sender: runs while alerts are due or being retried; never keeps the process alive
(waited for at exit at most PROVLINE_ALERT_TIMEOUT_S)."""
at_exit(lambda: sender.stop(_sending.alert_timeout_s if _sending is not None else 0.0))
