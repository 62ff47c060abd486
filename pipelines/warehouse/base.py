"""What every warehouse backend does the same way, in DuckDB SQL on an open connection: the metadata
tables, the partition filter, reads of versions and check results, the content hash and the one
write (`write_partitions`): one transaction replaces a set of partitions — rows, quarantined rows,
failure cases, check results and a version-log row per partition — or changes nothing.

A backend (duckdb_file.py, ducklake.py) only says how to get a connection, how a commit is retried
or serialized, and how a committed version is kept for `provline verify`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import pandas as pd
import pyarrow

from pipelines.rows import Rows
from pipelines.sql import (
    PARTITION,
    UNPARTITIONED,
    column_ddl,
    counts_of,
    partition_filter,
    partition_label,
    quote,
    typed_select,
)

VERSION_LOG_COLUMNS = {  # provline.version_log: one row per committed version of a partition
    "asset": "VARCHAR NOT NULL",
    "partition": "VARCHAR NOT NULL",  # '' for unpartitioned assets
    "content_hash": "VARCHAR NOT NULL",
    "code_version": "VARCHAR NOT NULL",
    "input_versions": "JSON NOT NULL",  # {"<input table>": "<content hash read>"}
    "run_id": "VARCHAR NOT NULL",
    "row_count": "BIGINT NOT NULL",
    "input_row_count": "BIGINT NOT NULL",  # rows the transform produced = written + quarantined
    "quarantined_count": "BIGINT NOT NULL",
    "columns": "JSON NOT NULL",  # [[name, type], ...] as written
    "written_at": "TIMESTAMP NOT NULL",  # UTC
    "snapshot_id": "BIGINT",  # the commit that wrote the version: NULL in the file; the lake's own (meta_ddl)
}


def meta_ddl(snapshot_column: bool) -> str:
    """The metadata tables. DuckLake gives every row a virtual `snapshot_id` column (the snapshot that inserted
    it), which a real column of that name would hide: the lake's version log is made without one."""
    version_log = ",\n    ".join(f"{quote(name)} {sql_type}" for name, sql_type in VERSION_LOG_COLUMNS.items()
                                  if snapshot_column or name != "snapshot_id")
    return f"""
CREATE SCHEMA IF NOT EXISTS provline;
CREATE SCHEMA IF NOT EXISTS quality;
CREATE SCHEMA IF NOT EXISTS quarantine;
CREATE TABLE IF NOT EXISTS provline.version_log (
    {version_log}
);
CREATE TABLE IF NOT EXISTS quality.failures (
    run_id VARCHAR, asset VARCHAR, partition VARCHAR, check_name VARCHAR, severity VARCHAR,
    "column" VARCHAR, failing_value VARCHAR, row_key VARCHAR, recorded_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS quality.check_results (
    run_id VARCHAR, asset VARCHAR, partition VARCHAR, check_name VARCHAR, severity VARCHAR,
    passed BOOLEAN, blocking BOOLEAN, failing_rows BIGINT, recorded_at TIMESTAMP,
    message VARCHAR                      -- what failed, in words (a table-level finding, a failing value)
);
ALTER TABLE quality.check_results ADD COLUMN IF NOT EXISTS message VARCHAR;  -- warehouses from before it
-- the contract version each version was checked against (Config.metadata["version"]); NULL before it was kept
ALTER TABLE provline.version_log ADD COLUMN IF NOT EXISTS contract_version VARCHAR;
"""


META_DDL = meta_ddl(snapshot_column=True)
LATEST_FIRST = "snapshot_id DESC NULLS LAST, written_at DESC"
"""The order of a partition's versions, newest first: by commit (DuckLake's snapshot), else by time (the file
backend records no snapshot). Every "latest version" query uses it, so they all agree."""
VERSION_COLUMNS = ("content_hash", "code_version", "run_id", "row_count", "columns", "written_at", "snapshot_id")


def quarantine_table(table: str) -> str:
    return "quarantine." + table.replace(".", "_")


@dataclass
class Write:
    """Everything one materialization commits for a set of partitions, in one transaction."""

    table: str
    partition_expr: str | None  # SQL over the table's columns that gives the partition date
    columns: dict[str, str]  # name -> DuckDB type, in order
    code_version: str
    run_id: str
    partitions: list[str]  # the partitions replaced; [UNPARTITIONED] for a full replace
    rows: Rows | None  # rows with a PARTITION column, these partitions' and maybe others' (None: checks only)
    quarantined: pyarrow.Table | None = None  # rows + PARTITION + `_quarantine_reasons`
    failures: pd.DataFrame | None = None  # quality.failures rows + PARTITION, without run/asset/at
    input_versions: dict[str, dict[str, str]] = field(default_factory=dict)  # partition -> {input: hash}
    check_results: dict[str, list[dict]] = field(default_factory=dict)  # partition -> stored results
    contract_version: str | None = None  # the version of the contract the rows were checked against


class VersionUnavailable(LookupError):
    """A recorded version can no longer be read (its snapshot expired or is missing); the message says where."""


@dataclass(frozen=True)
class Receipt:
    """One partition as committed."""

    content_hash: str
    row_count: int
    quarantined_count: int
    written_at: datetime
    snapshot_id: int | None = None


# --- reads ---------------------------------------------------------------------------------------


def read(con: duckdb.DuckDBPyConnection, table: str, partitions: list[str],
         partition_expr: str | None) -> pyarrow.Table:
    """The rows of some partitions of a table, as Arrow."""
    where, params = partition_filter(partitions, partition_expr)
    return con.execute(f"SELECT * FROM {quote(table)} WHERE {where}", params).to_arrow_table()


def latest_versions(con: duckdb.DuckDBPyConnection, table: str, partitions: list[str]) -> dict[str, dict]:
    """partition -> its latest version-log row (partitions never written are absent)."""
    rows = con.execute(
        f"""SELECT partition, {", ".join(VERSION_COLUMNS)} FROM provline.version_log
            WHERE asset = $asset AND list_contains($partitions, partition)
            QUALIFY row_number() OVER (PARTITION BY partition ORDER BY {LATEST_FIRST}) = 1""",
        {"asset": table, "partitions": partitions},
    ).fetchall()
    versions = {}
    for partition, *values in rows:
        version = dict(zip(VERSION_COLUMNS, values, strict=True))
        version["columns"] = [tuple(c) for c in json.loads(version["columns"])]
        versions[partition] = version
    return versions


def latest_version(con: duckdb.DuckDBPyConnection, table: str, partition: str) -> dict | None:
    return latest_versions(con, table, [partition]).get(partition)


def blocking_failures(con: duckdb.DuckDBPyConnection, table: str, partitions: list[str]) -> dict[str, list[tuple]]:
    """partition -> the blocking checks (name, failing rows, run id, message) that failed in its latest
    validation."""
    rows = con.execute(
        """WITH latest AS (
               SELECT partition, run_id, max(recorded_at) AS recorded_at FROM quality.check_results
               WHERE asset = $asset AND list_contains($partitions, partition) GROUP BY partition, run_id
               QUALIFY row_number() OVER (PARTITION BY partition ORDER BY max(recorded_at) DESC) = 1)
           SELECT r.partition, r.check_name, r.failing_rows, r.run_id, r.message FROM quality.check_results r
           JOIN latest USING (partition, run_id, recorded_at)
           WHERE r.asset = $asset AND r.blocking ORDER BY r.partition, r.check_name""",
        {"asset": table, "partitions": partitions},
    ).fetchall()
    failed: dict[str, list[tuple]] = {}
    for partition, *failure in rows:
        failed.setdefault(partition, []).append(tuple(failure))
    return failed


def content_hashes(
    con: duckdb.DuckDBPyConnection, table: str, partitions: list[str], partition_expr: str | None
) -> dict[str, str]:
    """Per partition, an order-independent hash of its rows (and the table's column names and types).

    Each row is rendered as text by DuckDB and hashed; the sorted row hashes of a partition are hashed
    again, so the result depends on the multiset of rows, not on their order — and a range, grouped by
    partition in one pass, gives each partition exactly the hash a run of that partition alone gives.
    """
    schema, name = table.split(".")
    columns = con.execute(
        """SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position)
           FROM information_schema.columns
           WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ?""",
        [schema, name],
    ).fetchone()[0]
    where, params = partition_filter(partitions, partition_expr)
    label = partition_label(partition_expr) if partition_expr and partitions != [UNPARTITIONED] else "''"
    rows = dict(con.execute(
        f"""SELECT p, md5($columns || '|' || md5(string_agg(h, '' ORDER BY h))) FROM (
               SELECT {label} AS p, md5(CAST(t AS VARCHAR)) AS h FROM {quote(table)} AS t WHERE {where})
            GROUP BY p""",
        {**params, "columns": columns},
    ).fetchall())
    empty = con.execute("SELECT md5($columns || '|' || md5(''))", {"columns": columns}).fetchone()[0]
    return {partition: rows.get(partition, empty) for partition in partitions}


# --- the one write -------------------------------------------------------------------------------


def write_partitions(con: duckdb.DuckDBPyConnection, write: Write) -> dict[str, Receipt]:
    """Replace `write.partitions` of the table, in the caller's open transaction. (A commit's snapshot id
    is known only after COMMIT: the backend adds it to the receipts.)"""
    target = quote(write.table)
    where, params = partition_filter(write.partitions, write.partition_expr)
    written_at = datetime.now(UTC).replace(tzinfo=None)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(write.table.split('.')[0])}")
    if write.partitions == [UNPARTITIONED]:
        con.execute(f"CREATE OR REPLACE TABLE {target} ({column_ddl(write.columns)})")
    else:
        con.execute(f"CREATE TABLE IF NOT EXISTS {target} ({column_ddl(write.columns)})")
        _align_columns(con, write.table, write.columns)
        con.execute(f"DELETE FROM {target} WHERE {where}", params)
    insert_rows(con, target, write.columns, write.rows.stream(*_of(write.partitions)))
    hashes = content_hashes(con, write.table, write.partitions, write.partition_expr)
    quarantined = _replace_quarantine(con, write, where, params)
    record_check_results(con, write, written_at)
    rows = _count(write.rows, write.partitions)
    log = pd.DataFrame({
        "asset": write.table, "partition": write.partitions,
        "content_hash": [hashes[p] for p in write.partitions], "code_version": write.code_version,
        "input_versions": [json.dumps(write.input_versions.get(p, {}), sort_keys=True) for p in write.partitions],
        "run_id": write.run_id, "row_count": [rows[p] for p in write.partitions],
        "input_row_count": [rows[p] + quarantined[p] for p in write.partitions],
        "quarantined_count": [quarantined[p] for p in write.partitions],
        "columns": json.dumps(list(write.columns.items())), "written_at": written_at,
        "contract_version": write.contract_version,
    })
    insert_frame(con, "provline.version_log", log)
    return {p: Receipt(hashes[p], rows[p], quarantined[p], written_at) for p in write.partitions}


def record_check_results(con: duckdb.DuckDBPyConnection, write: Write, at: datetime) -> None:
    """Replace the failure cases of `write`'s partitions and append their check results."""
    con.execute("DELETE FROM quality.failures WHERE asset = $asset AND list_contains($partitions, partition)",
                {"asset": write.table, "partitions": write.partitions})
    failures = write.failures
    if failures is not None and not failures.empty:
        cases = pd.DataFrame({
            "run_id": write.run_id, "asset": write.table, "partition": failures[PARTITION].to_numpy(),
            **{c: failures[c].to_numpy() for c in ("check_name", "severity", "column", "failing_value", "row_key")},
            "recorded_at": at,
        })
        insert_frame(con, "quality.failures", cases)
    results = [
        {"run_id": write.run_id, "asset": write.table, "partition": partition, **result, "recorded_at": at}
        for partition, stored in write.check_results.items() for result in stored
    ]
    if results:
        insert_frame(con, "quality.check_results", pd.DataFrame(results))


def insert_rows(con: duckdb.DuckDBPyConnection, target: str, columns: dict[str, str],
                rows: pyarrow.Table | pyarrow.RecordBatchReader) -> None:
    """Insert rows (scanned in place, or streamed batch by batch; cast to the contract's types)."""
    con.register("incoming_rows", rows)
    try:
        con.execute(f"INSERT INTO {target} BY NAME SELECT {typed_select(columns)} FROM incoming_rows")
    finally:
        con.unregister("incoming_rows")


def insert_frame(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame) -> None:
    """Append a frame's rows to `table`, matching columns by name (the metadata tables' small writes)."""
    con.register("incoming_frame", frame)
    try:
        con.execute(f"INSERT INTO {quote(table)} BY NAME SELECT * FROM incoming_frame")
    finally:
        con.unregister("incoming_frame")


def _count(rows: Rows | pyarrow.Table | None, partitions: list[str]) -> dict[str, int]:
    counts = {} if rows is None else rows.counts() if isinstance(rows, Rows) else counts_of(rows)
    return {p: int(counts.get(p, 0)) for p in partitions}


def _of(partitions: list[str]) -> tuple[str, dict]:
    """The rows of some partitions: a filter on the PARTITION column and its parameters."""
    return f"list_contains($partitions, {quote(PARTITION)})", {"partitions": partitions}


def _align_columns(con: duckdb.DuckDBPyConnection, table: str, columns: dict[str, str]) -> None:
    """Schema evolution of a partitioned table: add new columns (older partitions get NULL);
    a retyped column is altered in place (fails clearly if old values do not convert)."""
    schema, name = table.split(".")
    existing = dict(con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ?",
        [schema, name],
    ).fetchall())
    for column, sql_type in columns.items():
        if column not in existing:
            con.execute(f"ALTER TABLE {quote(table)} ADD COLUMN {quote(column)} {sql_type}")
        elif existing[column] != sql_type:
            con.execute(f"ALTER TABLE {quote(table)} ALTER {quote(column)} TYPE {sql_type}")


def _replace_quarantine(con: duckdb.DuckDBPyConnection, write: Write, where: str, params: dict) -> dict[str, int]:
    """Replace the partitions' quarantined rows. The quarantine table always exists (empty when nothing
    was quarantined), so downstream SQL may read it."""
    table = quote(quarantine_table(write.table))
    con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({column_ddl(write.columns)}, "
                "_quarantine_reasons VARCHAR, _run_id VARCHAR)")
    if write.partitions == [UNPARTITIONED]:
        con.execute(f"DELETE FROM {table}")
    else:
        con.execute(f"DELETE FROM {table} WHERE {where}", params)
    quarantined = write.quarantined
    if quarantined is None or quarantined.num_rows == 0:
        return _count(None, write.partitions)
    con.register("incoming_quarantine", quarantined)
    try:
        con.execute(
            f"""INSERT INTO {table} BY NAME SELECT {typed_select(write.columns)}, _quarantine_reasons,
                $run_id AS _run_id FROM incoming_quarantine""",
            {"run_id": write.run_id},
        )
    finally:
        con.unregister("incoming_quarantine")
    return _count(quarantined, write.partitions)
