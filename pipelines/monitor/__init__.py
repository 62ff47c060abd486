"""Watching the pipeline over time: anomaly monitors (anomaly.py), alerts (alerts.py), freshness and the
health view (health.py), the landing zone and its sensor (landing.py), and the runtime's sensors (sensors.py).

The factory calls `evaluate` once per materialization, after the commit; the domain only declares what to
watch (its contracts' `Config.metadata["monitors"]`, freshness policies, the landing-zone sensor).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import dagster as dg

from pipelines.monitor import alerts
from pipelines.monitor.anomaly import Finding, by_check, check_result, check_specs, findings
from pipelines.quality import BLOCKING, RuleResult, group_by_check
from pipelines.sql import interrupted

if TYPE_CHECKING:
    from pipelines.settings import Settings
    from pipelines.spec import TableSpec
    from pipelines.warehouse import Receipt, Warehouse

__all__ = ["Monitors", "check_specs", "evaluate"]

log = logging.getLogger(__name__)


@dataclass
class Monitors:
    """The anomaly verdicts of one materialization, per written partition."""

    key: dg.AssetKey
    findings: dict[str, list[Finding]] = field(default_factory=dict)

    def check_results(self, partition: str) -> list[dg.AssetCheckResult]:
        """The partition's `anomalies` check result; none while there is no verdict yet (anomaly.py says why)."""
        result = check_result(self.key, self.findings.get(partition, []))
        return [result] if result is not None else []


def evaluate(spec: TableSpec, warehouse: Warehouse, settings: Settings, results: dict[str, list[RuleResult]],
             receipts: dict[str, Receipt], run_id: str) -> Monitors:
    """After the commit: the anomaly verdicts of the written partitions, and the alerts this materialization
    raises or resolves (blocking failures, anomalies); `results` are the rule results of each partition validated.
    Never fails the materialization: a monitor that cannot run logs why and reports nothing."""
    monitors = Monitors(spec.key)
    try:
        if spec.partitioned and receipts:
            monitors.findings = findings(spec, warehouse, receipts, run_id)
    except Exception as error:  # noqa: BLE001 - the write is committed; the monitors are a report on it
        if interrupted(error):  # (DuckDB's form of Ctrl-C: the step must end, not carry on)
            raise
        log.exception("anomaly monitors of %s could not run", spec.table)
    alerts.notify(_blocking_events(spec, results) + _anomaly_events(spec, monitors), settings)
    return monitors


def _blocking_events(spec: TableSpec, results: dict[str, list[RuleResult]]) -> list[alerts.Event]:
    """Per validated partition, each blocking check: failing (an alert) or passing (resolves an open one)."""
    events = []
    for partition, validated in results.items():
        for check, group in group_by_check(validated).items():
            failed = [r for r in group if r.blocking]
            if not failed and not any(r.rule.behaviour == BLOCKING for r in group):
                continue  # a WARN or quarantining check: not alerted on
            summary = "; ".join(f"{r.rule.name}: {r.message or f'{r.failing_rows} of {r.rows_checked} rows'}"
                                for r in failed)
            events.append(alerts.Event(alerts.BLOCKING_FAILURE, spec.table, partition, check, bool(failed), summary))
    return events


def _anomaly_events(spec: TableSpec, monitors: Monitors) -> list[alerts.Event]:
    return [
        alerts.Event(alerts.ANOMALY, spec.table, partition, check, bool(failed),
                     "; ".join(f.describe() for f in failed))
        for partition, found in monitors.findings.items() for check, group in by_check(found).items()
        if any(f.judged for f in group)  # no verdict yet: neither an alert nor a resolution
        for failed in [[f for f in group if f.anomalous]]
    ]
