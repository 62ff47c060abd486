"""The morning view: per asset, is it fresh, does anything fail, what is waiting (`provline health`).

Read from provline's own records only — the version log and check history through the `Warehouse`
interface (plain DuckDB SQL, so both backends), the lineage outbox and the alert store — never from a
Dagster instance, so it answers the same from a terminal, a sensor or a cron job.

Freshness. Dagster's FreshnessPolicy (declared on the marts, shown in the UI) measures the time since the
asset's last materialization: it asks whether the pipeline delivers, not how old the data is. That is
the right question for a source still delivering (open-ended partitions): yesterday's partition lands each
morning, and a mart not rebuilt within its window is late. For a source that has ended (its partitions have
an end date) the data can never get fresher: once its last partition is built the asset is `COMPLETE`,
however long ago that was. `provline health` also shows the data's side: the latest partition built against
the last partition there is (the partitions' end, or yesterday for an open-ended source).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import dagster as dg

from pipelines.dagster_internals import TimeWindowFreshnessPolicy
from pipelines.lineage.delivery import pending
from pipelines.monitor import alerts
from pipelines.settings import Settings
from pipelines.warehouse import LATEST_FIRST

if TYPE_CHECKING:
    from pipelines.spec import TableSpec
    from pipelines.warehouse import Warehouse

PASS, WARN, FAIL, COMPLETE, UNKNOWN, NO_POLICY = "PASS", "WARN", "FAIL", "COMPLETE", "UNKNOWN", "-"
DETAIL_ROWS = 5
LATEST_RESULTS = """WITH latest AS (
        SELECT asset, partition, max(recorded_at) AS recorded_at FROM quality.check_results GROUP BY ALL),
    latest_results AS (SELECT * FROM quality.check_results JOIN latest USING (asset, partition, recorded_at))"""
"""Each partition's results from its latest validation."""


@dataclass
class AssetHealth:
    asset: str
    latest_partition: str | None  # None: never written; "" for an unpartitioned asset
    last_partition: str | None  # the last partition there is (None: unpartitioned)
    last_materialized: str | None  # ISO UTC
    age_hours: float | None
    freshness: str
    freshness_reason: str
    failing_blocking_checks: list[dict] = field(default_factory=list)
    open_anomalies: list[dict] = field(default_factory=list)
    quarantined_rows: int = 0  # in the latest PROVLINE_HEALTH_PARTITIONS partitions
    pending_lineage_events: int = 0
    undelivered_alerts: int = 0
    acknowledged: list[dict] = field(default_factory=list)  # known defects the team accepts (quality/rules.py)

    @property
    def status(self) -> str:
        if self.failing_blocking_checks or self.freshness == FAIL:
            return FAIL
        if self.open_anomalies or self.freshness == WARN or self.undelivered_alerts:
            return WARN
        return PASS

    def as_dict(self) -> dict:
        return {"status": self.status, **asdict(self)}

    def metadata(self) -> dict:
        """The summary as Dagster asset metadata (an observation, see pipelines/monitor/sensors.py)."""
        return {
            "health/status": self.status,
            "health/latest_partition": self.latest_partition or "",
            "health/freshness": f"{self.freshness}: {self.freshness_reason}",
            "health/failing_blocking_checks": dg.MetadataValue.json(self.failing_blocking_checks[:DETAIL_ROWS]),
            "health/open_anomalies": dg.MetadataValue.json(self.open_anomalies[:DETAIL_ROWS]),
            "health/quarantined_rows": self.quarantined_rows,
            "health/pending_lineage_events": self.pending_lineage_events,
            "health/undelivered_alerts": self.undelivered_alerts,
            "health/acknowledged": dg.MetadataValue.json(self.acknowledged),
        }


def freshness(spec: TableSpec, latest: str | None, written_at: datetime | None, now: datetime) -> tuple[str, str]:
    """(state, why) of the asset against its freshness policy (see the module's docstring)."""
    policy = spec.freshness
    if policy is None:
        return NO_POLICY, "no freshness policy"
    if written_at is None:
        return UNKNOWN, "never materialized"
    if spec.partitioned and spec.partitions.end is not None and latest == spec.partitions.get_last_partition_key():
        return COMPLETE, f"the source ended: its last partition, {latest}, is built"
    if not isinstance(policy, TimeWindowFreshnessPolicy):
        return UNKNOWN, f"{type(policy).__name__} is evaluated in Dagster only"
    age = now - written_at
    fail, warn = policy.fail_window.to_timedelta(), policy.warn_window and policy.warn_window.to_timedelta()
    if age > fail:
        return FAIL, f"last materialized {_hours(age)} ago, over the {_hours(fail)} allowed"
    if warn and age > warn:
        return WARN, f"last materialized {_hours(age)} ago, over {_hours(warn)}"
    return PASS, f"last materialized {_hours(age)} ago"


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} h"


@dataclass
class Health:
    assets: list[AssetHealth]
    lineage_outbox: int  # events waiting, all jobs
    alerts: dict

    def as_dict(self) -> dict:
        return {"assets": [a.as_dict() for a in self.assets], "lineage_outbox": self.lineage_outbox,
                "alerts": self.alerts}


def summarize(specs: Iterable[TableSpec], warehouse: Warehouse, settings: Settings,
              now: datetime | None = None) -> Health:
    now = now or datetime.now(UTC).replace(tzinfo=None)
    latest, failing, quarantined, accepted = _warehouse_facts(warehouse, settings.health_partitions)
    lineage = pending_lineage(settings)
    undelivered = _undelivered_alerts(settings)
    rows = []
    for spec in specs:
        partition, written_at = latest.get(spec.table, (None, None))
        state, why = freshness(spec, partition, written_at, now)
        found = failing.get(spec.table, [])
        rows.append(AssetHealth(
            asset=spec.table, latest_partition=partition,
            last_partition=spec.partitions.get_last_partition_key() if spec.partitioned else None,
            last_materialized=written_at.isoformat() + "Z" if written_at else None,
            age_hours=round((now - written_at).total_seconds() / 3600, 2) if written_at else None,
            freshness=state, freshness_reason=why,
            failing_blocking_checks=[f for f in found if f["blocking"]],
            open_anomalies=[f for f in found if not f["blocking"]],
            quarantined_rows=quarantined.get(spec.table, 0), pending_lineage_events=lineage[spec.table],
            undelivered_alerts=undelivered[spec.table],
            acknowledged=[_acknowledged(rule.acknowledgement, accepted.get((spec.table, rule.name), 0), now)
                          for rule in spec.rules if rule.acknowledgement is not None],
        ))
    return Health(rows, sum(lineage.values()), alert_summary(settings))


def _acknowledged(ack, accepted: int, now: datetime) -> dict:
    return {"rule": ack.rule, "note": ack.note, "until": ack.expires.isoformat(), "active": ack.active(now.date()),
            "partitions_accepted": accepted}


def _warehouse_facts(warehouse: Warehouse, partitions: int):
    """Per asset: (latest partition, when its asset was last written); the failing blocking checks and open
    anomalies of each partition's latest validation; quarantined rows in its latest `partitions` partitions; per
    (asset, rule) the partitions whose latest validation found failing rows and passed them (a threshold or an
    acknowledgement)."""
    if not warehouse.exists():
        return {}, {}, {}, {}
    with warehouse.connect() as con:
        latest = {asset: (partition, written_at) for asset, partition, written_at in con.execute(
            "SELECT asset, max(partition), max(written_at) FROM provline.version_log GROUP BY asset").fetchall()}
        failing: dict[str, list[dict]] = {}
        for asset, partition, check, blocking, message in con.execute(
            f"""{LATEST_RESULTS}
               SELECT asset, partition, check_name, blocking, message FROM latest_results
               WHERE NOT passed AND (blocking OR check_name LIKE 'anomaly\\_%' ESCAPE '\\')
               ORDER BY asset, partition DESC, check_name"""
        ).fetchall():
            failing.setdefault(asset, []).append(
                {"partition": partition, "check": check, "blocking": blocking, "message": message})
        quarantined = dict(con.execute(
            f"""SELECT asset, CAST(sum(quarantined_count) AS BIGINT) FROM (
                   SELECT asset, partition, quarantined_count, dense_rank() OVER (PARTITION BY asset
                       ORDER BY partition DESC) AS recent
                   FROM provline.version_log
                   QUALIFY row_number() OVER (PARTITION BY asset, partition ORDER BY {LATEST_FIRST}) = 1)
               WHERE recent <= $partitions GROUP BY asset""",
            {"partitions": partitions},
        ).fetchall())
        accepted = _accepted(con)
    return latest, failing, quarantined, accepted


def _accepted(con) -> dict[tuple[str, str], int]:
    """(asset, rule) -> partitions whose latest validation passed the rule although rows failed it."""
    return {(asset, rule): n for asset, rule, n in con.execute(
        f"""{LATEST_RESULTS}
            SELECT asset, check_name, count(*) FROM latest_results WHERE passed AND failing_rows > 0 GROUP BY ALL"""
    ).fetchall()}


def pending_lineage(settings: Settings) -> Counter:
    """Lineage events waiting in the outbox, per job name (an asset's runs are named after the asset)."""
    counts: Counter = Counter()
    outbox = settings.outbox_dir
    for queue in outbox.iterdir() if outbox.is_dir() else []:
        for path in pending(queue):
            try:
                counts[json.loads(path.read_text())["job"]["name"]] += 1
            except (OSError, ValueError, KeyError):
                counts["(unreadable)"] += 1
    return counts


def _undelivered_alerts(settings: Settings) -> Counter:
    if not settings.alerts_path.exists():
        return Counter()
    with alerts.connect(settings) as con:
        return Counter(dict(con.execute(
            "SELECT asset, count(*) FROM alerts WHERE status = 'undelivered' GROUP BY asset").fetchall()))


def alert_summary(settings: Settings) -> dict:
    """The alert store at a glance: delivery per status, and the undelivered ones."""
    if settings.alert_webhook_url is None:
        return {"webhook": "not configured (PROVLINE_ALERT_WEBHOOK_URL)"}
    summary: dict = {"webhook": "configured"}
    if settings.alerts_path.exists():
        with alerts.connect(settings) as con:
            summary["by_status"] = dict(con.execute("SELECT status, count(*) FROM alerts GROUP BY 1").fetchall())
            summary["undelivered"] = [
                dict(zip(("kind", "asset", "partition", "check", "attempts", "last_error", "created_at"), row,
                         strict=True))
                for row in con.execute(
                    """SELECT kind, asset, "partition", check_name, attempts, last_error, CAST(created_at AS VARCHAR)
                       FROM alerts WHERE status = 'undelivered' ORDER BY created_at DESC LIMIT 20""").fetchall()
            ]
    return summary


def render(health: Health) -> str:
    """The text view: one line per asset, then what fails or waits."""
    rows = health.assets
    lines = [f"{'asset':34} {'status':6} {'latest':10} {'age':>7}  {'freshness':9} {'blocking':>8} "
             f"{'anomalies':>9} {'quarantined':>11} {'lineage':>7} {'alerts':>6}"]
    for row in rows:
        latest = "-" if row.latest_partition is None else row.latest_partition or "(all)"
        age = "-" if row.age_hours is None else f"{row.age_hours:.1f}h"
        lines.append(f"{row.asset:34} {row.status:6} {latest:10} {age:>7}  {row.freshness:9} "
                     f"{len(row.failing_blocking_checks):>8} {len(row.open_anomalies):>9} {row.quarantined_rows:>11} "
                     f"{row.pending_lineage_events:>7} {row.undelivered_alerts:>6}")
    for row in rows:
        if row.freshness in (WARN, FAIL):
            lines.append(f"{row.asset}: freshness {row.freshness}: {row.freshness_reason}")
        for found in (row.failing_blocking_checks + row.open_anomalies)[:DETAIL_ROWS]:
            lines.append(f"{row.asset} [{found['partition'] or 'unpartitioned'}] {found['check']}: {found['message']}")
        for ack in row.acknowledged:
            state = f"acknowledged until {ack['until']}" if ack["active"] else f"acknowledgement EXPIRED {ack['until']}"
            lines.append(f"{row.asset} {ack['rule']}: {state}: {ack['note']} "
                         f"({ack['partitions_accepted']} partition(s) passed with failing rows)")
    lines.append(f"lineage outbox: {health.lineage_outbox} event(s) waiting")
    lines.append("alerts: " + ", ".join(f"{k} {v}" for k, v in health.alerts.items() if k != "undelivered"))
    for alert in health.alerts.get("undelivered", [])[:DETAIL_ROWS]:
        lines.append(f"  undelivered {alert['kind']} {alert['asset']} [{alert['partition']}] {alert['check']} "
                     f"after {alert['attempts']} attempt(s): {alert['last_error']}")
    return "\n".join(lines)
