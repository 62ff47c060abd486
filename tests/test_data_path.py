"""The warehouse-native data path gives what the frame path it replaced gave, on the real year.

Rows stay Arrow tables that DuckDB scans in place (pipelines/derive.py, quality/validate.py): each computation that
used to run on pandas frames is compared here with that frame computation, kept as the oracle."""

from __future__ import annotations

import duckdb
import pandas as pd
import pyarrow
import pytest

from pipelines.definitions import catalog
from pipelines.derive import Derived, Inputs
from pipelines.lineage.model import ColumnMetrics
from pipelines.lineage.step import PartitionStats, partition_stats
from pipelines.monitor.anomaly import compute_stats, metrics_of
from pipelines.quality import QUARANTINE_REASONS, validate
from pipelines.sources import read_source
from pipelines.sql import PARTITION, arrow_table, column_ddl, quote
from pipelines.warehouse import base

pytestmark = pytest.mark.slow  # the whole year, table by table
STAGED = ["staging.flights", "staging.weather", "staging.planes", "staging.airports", "staging.airlines"]


def _labelled(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows with their partition key, as the factory labels them."""
    spec = catalog[table]
    if not spec.partitioned:
        return frame.assign(**{PARTITION: ""})
    return frame.assign(**{PARTITION: pd.to_datetime(frame[spec.daily_on]).dt.strftime("%Y-%m-%d")})


def _coerced(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """What the frame path wrote: the rows coerced to the contract's dtypes by pandera."""
    return catalog[table].contract.to_schema().coerce_dtype(frame)


# --- the oracle: the frame computations the data path replaced ---------------------------------------------


def frame_partition_stats(valid: pd.DataFrame, columns: list[str]) -> dict[str, PartitionStats]:
    groups = valid.groupby(PARTITION, sort=False)
    nulls = valid[columns].isna().groupby(valid[PARTITION], sort=False).sum()
    distinct = groups[columns].nunique(dropna=True)
    return {partition: PartitionStats(int(rows), {c: ColumnMetrics(int(nulls.at[partition, c]),
                                                                   int(distinct.at[partition, c])) for c in columns})
            for partition, rows in groups.size().items()}


def frame_previews(valid: pd.DataFrame, rows: int = 5) -> dict[str, str]:
    head = valid.groupby(PARTITION, sort=False).head(rows)
    columns = [c for c in valid.columns if c != PARTITION]
    text = head[columns].astype("string").fillna("")
    previews: dict[str, str] = {}
    for partition, row in zip(head[PARTITION], text.itertuples(index=False), strict=True):
        previews.setdefault(partition, "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n")
        previews[partition] += "| " + " | ".join(row) + " |\n"
    return previews


def _hashes(table: str, rows: pd.DataFrame | pyarrow.Table) -> dict[str, str]:
    """Per partition, the content hash of `rows` written as the warehouse writes them."""
    spec = catalog[table]
    keys = rows[PARTITION] if isinstance(rows, pd.DataFrame) else rows.column(PARTITION).to_pylist()
    partitions = sorted(set(keys))
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"CREATE SCHEMA {quote(table.split('.')[0])}")
        con.execute(f"CREATE TABLE {quote(table)} ({column_ddl(spec.columns)})")
        base.insert_rows(con, quote(table), spec.columns, rows)
        return base.content_hashes(con, table, partitions if spec.partitioned else [""], spec.daily_on)


# --- the tests -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", STAGED)
def test_the_write_from_arrow_hashes_as_the_coerced_frame_did(year, table):
    frame = _labelled(table, year[table])
    assert _hashes(table, arrow_table(frame)) == _hashes(table, _coerced(table, frame.drop(columns=PARTITION))
                                                         .assign(**{PARTITION: frame[PARTITION]}))


@pytest.mark.parametrize("name", ["flights", "weather", "planes"])
def test_a_source_read_by_duckdb_hashes_as_the_parsed_frame_did(name):
    spec = catalog[f"raw.{name}"]
    source = read_source(spec.source, spec.contract)
    frame = source.frame
    days = sorted(pd.to_datetime(frame[["year", "month", "day"]]).dt.strftime("%Y-%m-%d").unique()) \
        if spec.partitioned else [""]
    rows = source.rows(spec.daily_on, days).drop_columns(["_source_line"])
    assert rows.num_rows == len(frame)
    if spec.partitioned:
        labels = pd.to_datetime(frame[["year", "month", "day"]]).dt.strftime("%Y-%m-%d")
        arrow_labels = pd.to_datetime(rows.select(["year", "month", "day"]).to_pandas()).dt.strftime("%Y-%m-%d")
        assert _hashes(spec.table, rows.append_column(PARTITION, pyarrow.array(arrow_labels))) == \
            _hashes(spec.table, frame.assign(**{PARTITION: labels}))
    else:
        assert _hashes(spec.table, rows.append_column(PARTITION, pyarrow.repeat("", rows.num_rows))) == \
            _hashes(spec.table, frame.assign(**{PARTITION: ""}))


@pytest.mark.parametrize("table", ["staging.flights", "staging.weather"])
def test_validation_statistics_and_previews_equal_the_frame_path(year, table):
    spec = catalog[table]
    frame = _labelled(table, year[table])
    days = sorted(frame[PARTITION].unique())
    validation = validate(arrow_table(frame), spec.contract, key_columns=spec.key_columns, partitions=days,
                          columns=spec.columns, rules=spec.rules)
    # the split: every row is valid or quarantined, and the quarantined ones are those a quarantining rule failed
    quarantining = {r.name for r in spec.rules if r.quarantine}
    flagged = validation.failures[validation.failures["check_name"].isin(quarantining)]
    assert validation.valid.num_rows + validation.quarantined.num_rows == len(frame)
    assert validation.quarantined.num_rows == flagged.drop_duplicates(["row_key"]).shape[0]
    assert set(validation.quarantined.column(QUARANTINE_REASONS).to_pylist()) <= \
        {",".join(sorted(q)) for q in [quarantining, *({r} for r in quarantining)]} | {None}
    # the statistics OpenLineage gets, per partition: one grouped SQL pass against pandas' groupby
    valid = validation.valid.to_pandas()
    coerced = _coerced(table, valid.drop(columns=PARTITION)).assign(**{PARTITION: valid[PARTITION]})
    assert validation.unique_columns == [c for c, column in spec.contract.to_schema().columns.items() if column.unique]
    expected = frame_partition_stats(coerced, list(spec.columns))
    assert partition_stats(validation.valid, spec.columns) == expected
    assert partition_stats(validation.valid, spec.columns, validation.unique_columns) == expected
    # the previews: the same markdown, rendered from the few rows they show
    derived = Derived(spec, days, Inputs(versions={}, blocked={}, causes={}, previous={}), validation)
    assert derived.previews == frame_previews(coerced)


def test_anomaly_statistics_equal_pandas(year):
    spec = catalog["staging.flights"]
    frame = year["staging.flights"]
    days = sorted(frame["flight_date"].dt.strftime("%Y-%m-%d").unique())
    metrics = metrics_of(spec)
    with duckdb.connect() as con:
        con.execute("CREATE SCHEMA staging")
        con.execute(f"CREATE TABLE staging.flights ({column_ddl(spec.columns)})")
        base.insert_rows(con, "staging.flights", spec.columns, arrow_table(_labelled(spec.table, frame)))
        stats = compute_stats(con, spec, metrics, days)
    by_day = _coerced(spec.table, frame).groupby(frame["flight_date"].dt.strftime("%Y-%m-%d"))
    for metric in metrics:
        if metric.kind == "row_count":
            expected = by_day.size()
        elif metric.kind == "null_rate":
            expected = by_day[metric.column].apply(lambda v: v.isna().mean())
        else:
            expected = by_day[metric.column].apply(lambda v: v.astype(float).mean())
        assert {day: stats[day][metric] for day in days} == pytest.approx(expected.to_dict(), rel=1e-12, abs=1e-12)
