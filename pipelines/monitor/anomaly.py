"""Anomaly monitors: does a partition look like the partitions before it?

Per written partition, computed in DuckDB in one pass over the partitions just written (plus any earlier
partition whose statistics are not stored yet, or are of an older version):
- volume: the row count;
- the null rate of every column (except those the contract exempts: their nulls move with the business);
- the mean of each numeric (or boolean) column the contract declares.

Each statistic is compared with the same statistic of the previous `window` partitions (default 14) that
have a version: expected = their mean ± k standard deviations (k default 3). Where the statistic has a
weekly cycle — its spread within weekdays is under half its overall spread, as a daily volume often is
(fewer on Saturdays) — the expected value is the mean of the same weekday and the spread is the pooled
spread within weekdays. A change smaller than MIN_CHANGE never counts: over two quiet weeks a 3σ band
can be narrower than what matters. With fewer than MIN_HISTORY previous partitions there is no verdict
yet, and it is not reported as one: stored with `passed` NULL and a message saying why, and no evaluation
in Dagster (a check result is passed or failed there, and a passing one with a note showed as a green
"Passed"; with none, the UI shows the partition's check as not evaluated, or skipped in the run that planned
it), no assertion in OpenLineage and no alert.

Per table, in the contract's `Config.metadata["monitors"]`:
    {"means": ["distance"], "skip_null_rate": ["dep_time"], "k": 3, "window": 14}

A range is evaluated in partition order, each partition's baseline including the earlier partitions of
the range. The verdicts are WARN asset checks (anomaly_volume, anomaly_null_rate, anomaly_mean) with the
expected range and the actual value in their metadata; they are stored in quality.check_results with the
validation they follow, and the statistics in quality.partition_stats (the baseline of later partitions).
"""

from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import TYPE_CHECKING

import dagster as dg
import duckdb
import pandas as pd
import pandera.pandas as pa

from pipelines.quality import WARN, contract_metadata
from pipelines.sql import partition_filter, partition_label, quote
from pipelines.warehouse import LATEST_FIRST, insert_frame

if TYPE_CHECKING:
    from pipelines.spec import TableSpec
    from pipelines.warehouse import Receipt, Warehouse

log = logging.getLogger(__name__)

VOLUME, NULL_RATE, MEAN = "row_count", "null_rate", "mean"
CHECKS = {VOLUME: "anomaly_volume", NULL_RATE: "anomaly_null_rate", MEAN: "anomaly_mean"}
"""The verdicts as stored, alerted and emitted to OpenLineage: one per kind of statistic."""
ANOMALY_CHECK = "anomalies"
"""The Dagster asset check reporting all three."""
DESCRIPTIONS = {
    VOLUME: "The row count is within the expected range of the previous partitions (weekday-aware).",
    NULL_RATE: "Each column's share of nulls is within the expected range of the previous partitions.",
    MEAN: "The mean of each declared column is within the expected range of the previous partitions.",
}
DEFAULT_WINDOW, DEFAULT_K, MIN_HISTORY = 14, 3.0, 7
WEEKLY_SHARE = 0.5
"""A statistic has a weekly cycle when its variance within weekdays is under this share of its variance."""
MIN_CHANGE = {VOLUME: 0.10, NULL_RATE: 0.05, MEAN: 0.10}
"""The smallest change that counts: a share of the expected value (volume, mean) or, for null rates, an
absolute difference (5 percentage points). Measured on real data: docs/benchmarks.md."""
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "REAL", "DECIMAL", "BOOLEAN")
_PARTITION = "__monitor_partition"
NO_VERDICT = f"no verdict yet: fewer than {MIN_HISTORY} earlier partitions to compare with"

STATS_TABLE = "quality.partition_stats"
STATS_DDL = f"""
CREATE TABLE IF NOT EXISTS {STATS_TABLE} (
    asset VARCHAR, partition VARCHAR, content_hash VARCHAR, metric VARCHAR, "column" VARCHAR, value DOUBLE,
    recorded_at TIMESTAMP
)"""


@dataclass(frozen=True)
class MonitorConfig:
    window: int = DEFAULT_WINDOW
    k: float = DEFAULT_K
    means: tuple[str, ...] = ()
    skip_null_rate: tuple[str, ...] = ()


def config_of(contract: type[pa.DataFrameModel], columns: dict[str, str]) -> MonitorConfig:
    """The contract's monitor settings, checked against its columns (a typo fails at definition time)."""
    meta = contract_metadata(contract).get("monitors", {})
    unknown = set(meta) - {"window", "k", "means", "skip_null_rate"}
    if unknown:
        raise ValueError(f"{contract.__name__}: unknown monitors setting(s) {sorted(unknown)}")
    config = MonitorConfig(int(meta.get("window", DEFAULT_WINDOW)), float(meta.get("k", DEFAULT_K)),
                           tuple(meta.get("means", ())), tuple(meta.get("skip_null_rate", ())))
    for column in (*config.means, *config.skip_null_rate):
        if column not in columns:
            raise ValueError(f"{contract.__name__}: monitors name {column!r}, which is not one of its columns")
    for column in config.means:
        if not columns[column].upper().startswith(_NUMERIC):
            raise ValueError(f"{contract.__name__}: monitors average {column!r}, a {columns[column]} column")
    return config


@dataclass(frozen=True)
class Metric:
    kind: str
    column: str = ""

    @property
    def check(self) -> str:
        return CHECKS[self.kind]

    @property
    def is_mean(self) -> bool:
        """A column's mean (lineage carries it in the column's metrics, as their sum and count)."""
        return self.kind == MEAN

    @property
    def label(self) -> str:
        return f"{self.kind}({self.column})" if self.column else self.kind

    def sql(self) -> str:
        column = quote(self.column) if self.column else ""
        if self.kind == VOLUME:
            return "count(*)"
        if self.kind == NULL_RATE:
            return f"1 - count({column}) / count(*)"
        return f"avg(CAST({column} AS DOUBLE))"


def metrics_of(spec: TableSpec, config: MonitorConfig | None = None) -> list[Metric]:
    """Every statistic monitored for the table (null rates of the exempt columns are not)."""
    config = config or config_of(spec.contract, spec.columns)
    return ([Metric(VOLUME)] + [Metric(NULL_RATE, c) for c in spec.columns if c not in config.skip_null_rate]
            + [Metric(MEAN, c) for c in config.means])


def check_specs(spec: TableSpec) -> list[dg.AssetCheckSpec]:
    """The WARN check the monitors report, declared with the asset (a partitioned one only)."""
    if not spec.partitioned:
        return []
    kinds = dict.fromkeys(m.kind for m in metrics_of(spec))
    return [dg.AssetCheckSpec(ANOMALY_CHECK, asset=spec.key, partitions_def=spec.partitions, blocking=False,
                              description=f"[{WARN}] " + " ".join(DESCRIPTIONS[kind] for kind in kinds))]


# --- the verdict on one statistic -------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    center: float
    low: float
    high: float
    points: int
    weekly: bool

    def text(self, kind: str) -> str:
        basis = "the same weekday's mean" if self.weekly else "the mean"
        return f"{_show(self.low, kind)}..{_show(self.high, kind)} ({basis} over the {self.points} previous " \
               f"partitions is {_show(self.center, kind)})"


def _show(value: float, kind: str) -> str:
    if kind == VOLUME:
        return f"{value:.0f}"
    return f"{value:.2%}" if kind == NULL_RATE else f"{value:.4g}"


def expected(history: list[tuple[str, float]], partition: str, kind: str, config: MonitorConfig) -> Expected | None:
    """The range a statistic of `partition` is expected in, from its values in the previous partitions
    (`history`, oldest first); None while there are fewer than MIN_HISTORY of them. (Plain Python: on
    at most `window` values it is faster than numpy, and a year's range calls it ~34,000 times.)"""
    recent = [(p, v) for p, v in history if not math.isnan(v)][-config.window:]
    if len(recent) < MIN_HISTORY:
        return None
    values = [v for _, v in recent]
    weekdays = [_weekday(p) for p, _ in recent]
    center = math.fsum(values) / len(values)
    variance = math.fsum((v - center) ** 2 for v in values) / (len(values) - 1)
    spread, weekly = math.sqrt(variance), False
    weekday = _weekday(partition)
    by_weekday: dict[int, list[float]] = {}
    for day, value in zip(weekdays, values, strict=True):
        by_weekday.setdefault(day, []).append(value)
    if len(by_weekday.get(weekday, ())) >= 2 and min(map(len, by_weekday.values())) >= 2:
        # each weekday seen twice: a spread within it
        means = {day: math.fsum(seen) / len(seen) for day, seen in by_weekday.items()}
        within = math.fsum((v - means[day]) ** 2 for day, v in zip(weekdays, values, strict=True))
        pooled = math.sqrt(within / (len(values) - len(by_weekday)))
        if pooled ** 2 < WEEKLY_SHARE * variance:
            center, spread, weekly = means[weekday], pooled, True
    floor = MIN_CHANGE[kind] if kind == NULL_RATE else MIN_CHANGE[kind] * abs(center)
    margin = max(config.k * spread, floor)
    low, high = center - margin, center + margin
    if kind == VOLUME:
        low = max(low, 0.0)
    if kind == NULL_RATE:
        low, high = max(low, 0.0), min(high, 1.0)
    return Expected(float(center), float(low), float(high), len(recent), weekly)


@lru_cache(maxsize=4096)
def _weekday(partition: str) -> int:
    return date.fromisoformat(partition).weekday()


@dataclass(frozen=True)
class Finding:
    """One statistic of one partition and its verdict."""

    metric: Metric
    actual: float
    expected: Expected | None

    @property
    def judged(self) -> bool:
        """Whether there was a baseline to judge the statistic against (else: no verdict yet)."""
        return self.expected is not None

    @property
    def anomalous(self) -> bool:
        return self.expected is not None and not math.isnan(self.actual) and \
            not self.expected.low <= self.actual <= self.expected.high

    @property
    def actual_text(self) -> str:
        return "no values" if math.isnan(self.actual) else _show(self.actual, self.metric.kind)

    @property
    def expected_text(self) -> str:
        return self.expected.text(self.metric.kind) if self.expected else "no baseline yet"

    def describe(self) -> str:
        return f"{self.metric.label} {self.actual_text} is outside the expected range {self.expected_text}"


# --- one materialization ------------------------------------------------------------------------


def findings(
    spec: TableSpec, warehouse: Warehouse, receipts: dict[str, Receipt], run_id: str
) -> dict[str, list[Finding]]:
    """Statistics and verdicts for the partitions just written, in partition order; stored with them (read on
    one snapshot of the warehouse, written in one transaction: DuckLake retries it whole on a conflict)."""
    config = config_of(spec.contract, spec.columns)
    metrics = metrics_of(spec, config)
    written = sorted(receipts)
    with warehouse.connect() as con:
        earlier = _earlier_versions(con, spec.table, written, config.window)
        stored = _stored_stats(con, spec.table, list(earlier)) if warehouse.table_exists(con, STATS_TABLE) else {}
        stale = [p for p, content_hash in earlier.items() if p not in stored or stored[p][0] != content_hash]
        fresh = compute_stats(con, spec, metrics, written + stale)
    hashes = {**earlier, **{p: r.content_hash for p, r in receipts.items()}}
    stats = {**{p: values for p, (_, values) in stored.items()}, **fresh}
    verdicts = judge(stats, written, metrics, config)

    def store(con: duckdb.DuckDBPyConnection) -> None:
        con.execute(STATS_DDL)
        _store_stats(con, spec.table, fresh, hashes)
        _store_results(con, spec.table, verdicts, receipts, run_id)

    warehouse.transact(store, f"anomaly monitors of {spec.table} {written[0]}..{written[-1]}", spec.table, written)
    return verdicts


def _earlier_versions(con: duckdb.DuckDBPyConnection, table: str, written: list[str], window: int) -> dict[str, str]:
    """The partitions not written now in the baseline of a written one (the `window` partitions with a version
    before it): partition -> its latest content hash."""
    versions = dict(con.execute(
        f"""SELECT partition, content_hash FROM provline.version_log WHERE asset = $asset AND partition < $last
           QUALIFY row_number() OVER (PARTITION BY partition ORDER BY {LATEST_FIRST}) = 1""",
        {"asset": table, "last": written[-1]},
    ).fetchall())
    days = sorted(set(versions) | set(written))
    position = {day: i for i, day in enumerate(days)}
    needed = {p for w in written for p in days[max(0, position[w] - window):position[w]]} - set(written)
    return {p: versions[p] for p in sorted(needed)}


def _stored_stats(con, table: str, partitions: list[str]) -> dict[str, tuple[str, dict[Metric, float]]]:
    """partition -> (the content hash its statistics were computed on, the statistics)."""
    rows = con.execute(
        """SELECT partition, content_hash, metric, "column", value FROM quality.partition_stats
           WHERE asset = $asset AND list_contains($partitions, partition)""",
        {"asset": table, "partitions": partitions},
    ).fetchall()
    stored: dict[str, tuple[str, dict[Metric, float]]] = {}
    for partition, content_hash, kind, column, value in rows:
        stored.setdefault(partition, (content_hash, {}))[1][Metric(kind, column)] = math.nan if value is None else value
    return stored


def compute_stats(
    con: duckdb.DuckDBPyConnection, spec: TableSpec, metrics: list[Metric], partitions: list[str]
) -> dict[str, dict[Metric, float]]:
    """Every statistic of every partition, in one scan of the table."""
    if not partitions:
        return {}
    where, params = partition_filter(partitions, spec.daily_on)
    aggregates = ", ".join(metric.sql() for metric in metrics)
    rows = con.execute(
        f"""SELECT {_PARTITION}, {aggregates} FROM (
                SELECT {partition_label(spec.daily_on)} AS {_PARTITION}, * FROM {quote(spec.table)} WHERE {where})
            GROUP BY {_PARTITION}""",
        params,
    ).fetchall()
    found = {row[0]: row[1:] for row in rows}
    empty = [0.0] + [math.nan] * (len(metrics) - 1)  # a partition with no rows: volume 0, no rates or means
    return {p: {m: math.nan if v is None else float(v) for m, v in zip(metrics, found.get(p, empty), strict=True)}
            for p in partitions}


def _store_stats(con, table: str, stats: dict[str, dict[Metric, float]], hashes: dict[str, str]) -> None:
    """Replace the statistics of these partitions (the latest version's are the only ones kept)."""
    frame = pd.DataFrame(
        [(table, p, hashes[p], m.kind, m.column, None if math.isnan(v) else v)
         for p, values in stats.items() for m, v in values.items()],
        columns=["asset", "partition", "content_hash", "metric", "column", "value"],
    ).assign(recorded_at=datetime.now(UTC).replace(tzinfo=None))
    con.execute("DELETE FROM quality.partition_stats WHERE asset = $asset AND list_contains($partitions, partition)",
                {"asset": table, "partitions": list(stats)})
    insert_frame(con, "quality.partition_stats", frame)


def judge(stats: dict[str, dict[Metric, float]], written: list[str], metrics: list[Metric],
          config: MonitorConfig) -> dict[str, list[Finding]]:
    """Each written partition's statistics against their baselines: per statistic, its last `window` known
    values before the partition (found by bisection: a year's range is one pass, not a scan per day)."""
    order = sorted(stats)
    verdicts: dict[str, list[Finding]] = {partition: [] for partition in written}
    for metric in metrics:
        known = [(p, value) for p in order if not math.isnan(value := stats[p].get(metric, math.nan))]
        days = [p for p, _ in known]
        for partition in written:
            end = bisect.bisect_left(days, partition)
            baseline = known[max(0, end - config.window):end]
            verdicts[partition].append(
                Finding(metric, stats[partition][metric], expected(baseline, partition, metric.kind, config)))
    return verdicts


def _store_results(con, table: str, verdicts: dict[str, list[Finding]], receipts: dict[str, Receipt],
                   run_id: str) -> None:
    """One check_results row per partition and check, recorded with (at the time of) the validation it follows;
    `passed` NULL where there is no verdict yet."""
    rows = [
        {"run_id": run_id, "asset": table, "partition": p, "check_name": check, "severity": WARN,
         "passed": not failed if judged else None, "blocking": False, "failing_rows": 0,
         "message": "; ".join(f.describe() for f in failed) or None if judged else NO_VERDICT,
         "recorded_at": receipts[p].written_at}
        for p, found in verdicts.items() for check, group in by_check(found).items()
        for failed, judged in [([f for f in group if f.anomalous], any(f.judged for f in group))]
    ]
    insert_frame(con, "quality.check_results", pd.DataFrame(rows))


def by_check(found: list[Finding]) -> dict[str, list[Finding]]:
    groups: dict[str, list[Finding]] = {}
    for finding in found:
        groups.setdefault(finding.metric.check, []).append(finding)
    return groups


def _shown(value: float) -> float | None:
    """A statistic as metadata: six significant digits (1152.06, not 1152.060338550447); none (not NaN, which is
    no JSON) when there were no values."""
    return None if math.isnan(value) else float(f"{value:.6g}")


def check_result(key: dg.AssetKey, found: list[Finding]) -> dg.AssetCheckResult | None:
    """The `anomalies` check of one partition: which statistics are out of range, each with its expected
    range and actual value; the row count's always in the open. None while there is no verdict yet."""
    failed = [f for f in found if f.anomalous]
    judged = [f for f in found if f.judged]
    if not judged:
        return None
    metadata: dict = {"judged": len(judged), "anomalies": len(failed)}
    for finding in found:
        if finding.metric.kind == VOLUME:
            metadata.update(actual=finding.actual_text, expected_range=finding.expected_text)
            if finding.expected is not None:
                metadata.update(expected_low=_shown(finding.expected.low), expected_high=_shown(finding.expected.high))
    if failed:
        metadata["problem"] = "; ".join(f"{f.metric.check}: {f.describe()}" for f in failed)
        metadata["out_of_range"] = dg.MetadataValue.json({
            f.metric.label: {"actual": _shown(f.actual), "expected_low": _shown(f.expected.low),
                             "expected_high": _shown(f.expected.high), "baseline_partitions": f.expected.points,
                             "weekday": f.expected.weekly}
            for f in failed
        })
    return dg.AssetCheckResult(asset_key=key, check_name=ANOMALY_CHECK, passed=not failed,
                               severity=dg.AssetCheckSeverity.WARN, metadata=metadata)
