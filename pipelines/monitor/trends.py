"""Per-partition trends a user can look at (`provline health --trends trends.html`): one self-contained HTML page
(inline SVG, no script, nothing fetched) with, per asset and partition, the rows written, the rows quarantined,
the rows failing a contract rule, each column's null rate and each watched mean (the anomaly statistics), and
the partitions where an anomaly check fired.

Dagster's own plots do not serve here: its partition plots cover the 120 days before today (empty for a source
that ended), and its event plots put a range's partitions on one vertical line (one run, one time). Read from
provline's records only — the version log, quality.check_results and quality.partition_stats — through the
Warehouse interface (both backends); nothing is written but the page.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jinja2 import Environment, PackageLoader, StrictUndefined

from pipelines.monitor.anomaly import MEAN, NULL_RATE, STATS_TABLE
from pipelines.warehouse.base import LATEST_FIRST

if TYPE_CHECKING:
    from pipelines.spec import TableSpec
    from pipelines.warehouse import Warehouse

CHART_W, CHART_H, PAD = 760, 110, 28
_TEMPLATES = Environment(loader=PackageLoader("pipelines.monitor"), autoescape=True, undefined=StrictUndefined,
                         trim_blocks=True, lstrip_blocks=True)


@dataclass
class AssetTrends:
    asset: str
    series: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> partition -> value
    anomalies: dict[str, list[str]] = field(default_factory=dict)  # partition -> what fired


def collect(specs: Iterable[TableSpec], warehouse: Warehouse) -> list[AssetTrends]:
    """Per partitioned asset, its series over its partitions (each partition's latest version and validation)."""
    partitioned = [spec.table for spec in specs if spec.partitioned]
    found = {table: AssetTrends(table) for table in partitioned}
    if not warehouse.exists():
        return list(found.values())

    def add(name: str, rows) -> None:
        for asset, partition, value in rows:
            if asset in found and value is not None:
                found[asset].series.setdefault(name, {})[partition] = float(value)

    with warehouse.connect() as con:
        latest = con.execute(
            f"""SELECT asset, partition, row_count, quarantined_count FROM provline.version_log
                WHERE partition <> ''
                QUALIFY row_number() OVER (PARTITION BY asset, partition ORDER BY {LATEST_FIRST}) = 1""").fetchall()
        add("rows written", [(a, p, rows) for a, p, rows, _ in latest])
        add("rows quarantined", [(a, p, quarantined) for a, p, _, quarantined in latest])
        results = con.execute(
            """SELECT asset, partition, check_name, passed, failing_rows, message FROM quality.check_results
               WHERE partition <> ''
               QUALIFY recorded_at = max(recorded_at) OVER (PARTITION BY asset, partition)""").fetchall()
        failing: dict[tuple[str, str], int] = {}
        for asset, partition, check, passed, rows, message in results:
            if check.startswith("anomaly_"):
                if passed is False and asset in found:
                    found[asset].anomalies.setdefault(partition, []).append(message or check)
            else:
                failing[(asset, partition)] = failing.get((asset, partition), 0) + (rows or 0)
        add("rows failing a contract rule", [(a, p, n) for (a, p), n in failing.items()])
        if warehouse.table_exists(con, STATS_TABLE):
            stats = con.execute(f"""SELECT asset, partition, metric, "column", value FROM {STATS_TABLE}
                                    WHERE metric IN ($null_rate, $mean)""",
                                {"null_rate": NULL_RATE, "mean": MEAN}).fetchall()
            for metric, label in ((NULL_RATE, "null rate of {}"), (MEAN, "mean of {}")):
                by_column: dict[str, list] = {}
                for asset, partition, kind, column, value in stats:
                    if kind == metric:
                        by_column.setdefault(column, []).append((asset, partition, value))
                for column, rows in sorted(by_column.items()):
                    if metric == MEAN or any(value for _, _, value in rows):  # a column never null: no chart
                        add(label.format(column), rows)
    return list(found.values())


def chart(values: dict[str, float], partitions: list[str], marked: set[str]) -> dict:
    """One series as SVG geometry: a point per partition that has a value (x by partition, y scaled to the
    series' own range), the partitions where an anomaly fired marked."""
    points = [(i, p, values[p]) for i, p in enumerate(partitions) if p in values]
    low, high = min(v for *_, v in points), max(v for *_, v in points)
    span = (high - low) or 1.0
    step = (CHART_W - 2 * PAD) / max(len(partitions) - 1, 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        return round(PAD + i * step, 1), round(CHART_H - PAD / 2 - (v - low) / span * (CHART_H - PAD), 1)

    dots = [{"x": x, "y": y, "title": f"{p}: {_number(v)}", "marked": p in marked}
            for i, p, v in points for x, y in [xy(i, v)]]
    return {"points": " ".join(f"{d['x']},{d['y']}" for d in dots), "dots": dots, "low": _number(low),
            "high": _number(high), "first": points[0][1], "last": points[-1][1], "width": CHART_W, "height": CHART_H}


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 or value == int(value) else f"{value:.4g}"


def render(assets: list[AssetTrends]) -> str:
    sections = []
    for trend in assets:
        partitions = sorted({p for values in trend.series.values() for p in values})
        sections.append({
            "asset": trend.asset, "partitions": len(partitions),
            "first": partitions[0] if partitions else None, "last": partitions[-1] if partitions else None,
            "charts": [{"name": name, **chart(values, partitions, set(trend.anomalies))}
                       for name, values in trend.series.items()],
            "anomalies": sorted(trend.anomalies.items()),
        })
    return _TEMPLATES.get_template("trends.html").render(sections=sections)
