"""The DuckDB warehouse: atomic partition replace, content hashes, the version log.

Every write of an asset is one DuckDB transaction (`Warehouse.commit`): the partition's old
rows are deleted and the new ones inserted, quarantined rows and failure cases are replaced,
check results and the version-log row are appended; then COMMIT, or nothing changed. A
crash or kill -9 at any point before COMMIT leaves the previous version intact (DuckDB's WAL
rolls an uncommitted transaction back on the next open).

DuckDB allows one writing process per file. Dagster's multiprocess executor runs each step in
its own process, so every connection is taken under an inter-process file lock
(`<home>/<warehouse>.lock`): steps queue for the warehouse instead of failing on DuckDB's
lock. The lock is held only while reading inputs and while committing, never while a pandas
transform or validation runs.
"""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd

from pipelines.settings import Settings, get_settings

META_DDL = """
CREATE SCHEMA IF NOT EXISTS provline;
CREATE SCHEMA IF NOT EXISTS quality;
CREATE SCHEMA IF NOT EXISTS quarantine;
CREATE TABLE IF NOT EXISTS provline.version_log (
    asset VARCHAR NOT NULL,
    partition VARCHAR NOT NULL,          -- '' for unpartitioned assets
    content_hash VARCHAR NOT NULL,
    code_version VARCHAR NOT NULL,
    input_versions JSON NOT NULL,        -- {"<input table>": "<content hash read>"}
    run_id VARCHAR NOT NULL,
    row_count BIGINT NOT NULL,
    input_row_count BIGINT NOT NULL,     -- rows the transform produced = written + quarantined
    quarantined_count BIGINT NOT NULL,
    columns JSON NOT NULL,               -- [[name, type], ...] as written
    written_at TIMESTAMP NOT NULL        -- UTC
);
CREATE TABLE IF NOT EXISTS quality.failures (
    run_id VARCHAR, asset VARCHAR, partition VARCHAR, check_name VARCHAR, severity VARCHAR,
    "column" VARCHAR, failing_value VARCHAR, row_key VARCHAR, recorded_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS quality.check_results (
    run_id VARCHAR, asset VARCHAR, partition VARCHAR, check_name VARCHAR, severity VARCHAR,
    passed BOOLEAN, blocking BOOLEAN, failing_rows BIGINT, recorded_at TIMESTAMP
);
"""

UNPARTITIONED = ""

# a contract column's pandas dtype -> the DuckDB type it is stored as (and must parse as)
DUCKDB_TYPES = {
    "Int64": "BIGINT", "int64": "BIGINT", "Int32": "INTEGER", "int32": "INTEGER",
    "Float64": "DOUBLE", "float64": "DOUBLE", "string": "VARCHAR", "str": "VARCHAR",
    "string[pyarrow]": "VARCHAR", "string[python]": "VARCHAR", "boolean": "BOOLEAN", "bool": "BOOLEAN",
    "datetime64[ns]": "TIMESTAMP", "datetime64[us]": "TIMESTAMP",
}


def quote(identifier: str) -> str:
    """Quote a (possibly schema-qualified) identifier: raw.flights -> "raw"."flights"."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in identifier.split("."))


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """BEGIN ... COMMIT, or ROLLBACK on any exception (KeyboardInterrupt included)."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _column_ddl(columns: dict[str, str]) -> str:
    return ", ".join(f"{quote(name)} {sql_type}" for name, sql_type in columns.items())


def _typed(columns: dict[str, str]) -> str:
    """The select list that casts incoming rows to the contract's types."""
    return ", ".join(f"CAST({quote(name)} AS {sql_type}) AS {quote(name)}" for name, sql_type in columns.items())


def _literal(path: Path) -> str:
    """A path as the body of a SQL string literal (COPY ... TO takes no bound parameter)."""
    return str(path).replace("'", "''")


def quarantine_table(table: str) -> str:
    return "quarantine." + table.replace(".", "_")


class WarehouseLockTimeout(RuntimeError):
    pass


@contextmanager
def _file_lock(path: Path, timeout_s: float) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WarehouseLockTimeout(
                        f"waited {timeout_s:.0f}s for the warehouse lock {path}; another step holds it "
                        "(raise PROVLINE_LOCK_TIMEOUT_S for long backfills)"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class Write:
    """Everything one materialization commits, in one transaction."""

    table: str
    partition: str  # UNPARTITIONED for a full replace
    partition_expr: str | None  # SQL over the table's columns that gives the partition date
    rows: pd.DataFrame
    columns: dict[str, str]  # name -> DuckDB type, in order
    code_version: str
    run_id: str
    input_versions: dict[str, str] = field(default_factory=dict)
    quarantined: pd.DataFrame | None = None  # rows + a `_quarantine_reasons` column
    failures: pd.DataFrame | None = None  # quality.failures rows, without run/asset/partition/at
    check_results: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Receipt:
    content_hash: str
    row_count: int
    quarantined_count: int
    size_bytes: int
    written_at: datetime


class Warehouse:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.path = self.settings.warehouse_path

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection under the inter-process writer lock, with the metadata tables in place."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.settings.lock_path, self.settings.lock_timeout_s):
            con = duckdb.connect(str(self.path))
            try:
                con.execute("SET TimeZone = 'UTC'")  # hashes must not depend on the machine's zone
                con.execute(META_DDL)
                yield con
            finally:
                con.close()

    # --- reads ---------------------------------------------------------------------------

    @staticmethod
    def partition_filter(partition: str, partition_expr: str | None) -> tuple[str, dict]:
        if partition == UNPARTITIONED or partition_expr is None:
            return "TRUE", {}
        return f"({partition_expr}) = CAST($partition AS DATE)", {"partition": partition}

    def read(
        self, con: duckdb.DuckDBPyConnection, table: str, partition: str, partition_expr: str | None
    ) -> pd.DataFrame:
        where, params = self.partition_filter(partition, partition_expr)
        return con.execute(f"SELECT * FROM {quote(table)} WHERE {where}", params).df()

    @staticmethod
    def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
        schema, name = table.split(".")
        return bool(con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchone()[0])

    @staticmethod
    def latest_version(con: duckdb.DuckDBPyConnection, table: str, partition: str) -> dict | None:
        row = con.execute(
            """SELECT content_hash, code_version, run_id, row_count, columns, written_at
               FROM provline.version_log WHERE asset = ? AND partition = ?
               ORDER BY written_at DESC LIMIT 1""",
            [table, partition],
        ).fetchone()
        if row is None:
            return None
        keys = ("content_hash", "code_version", "run_id", "row_count", "columns", "written_at")
        version = dict(zip(keys, row, strict=True))
        version["columns"] = [tuple(c) for c in json.loads(version["columns"])]
        return version

    @staticmethod
    def blocking_failures(con: duckdb.DuckDBPyConnection, table: str, partition: str) -> list[tuple]:
        """The blocking checks that failed in the latest validation of (table, partition), if any."""
        return con.execute(
            """WITH latest AS (
                   SELECT run_id, max(recorded_at) AS recorded_at FROM quality.check_results
                   WHERE asset = ? AND partition = ? GROUP BY run_id ORDER BY recorded_at DESC LIMIT 1)
               SELECT r.check_name, r.failing_rows, r.run_id, r.recorded_at FROM quality.check_results r
               JOIN latest USING (run_id, recorded_at)
               WHERE r.asset = ? AND r.partition = ? AND r.blocking ORDER BY r.check_name""",
            [table, partition, table, partition],
        ).fetchall()

    @staticmethod
    def content_hash(con: duckdb.DuckDBPyConnection, table: str, where: str, params: dict) -> str:
        """Order-independent hash of the rows (and column names and types) of a table slice.

        Each row is rendered as text by DuckDB and hashed; the sorted row hashes are hashed
        again, so the result depends on the multiset of rows, not on their order.
        """
        schema, name = table.split(".")
        columns = con.execute(
            """SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position)
               FROM information_schema.columns WHERE table_schema = ? AND table_name = ?""",
            [schema, name],
        ).fetchone()[0]
        rows = con.execute(
            f"""SELECT coalesce(string_agg(h, '' ORDER BY h), '') FROM (
                   SELECT md5(CAST(t AS VARCHAR)) AS h FROM {quote(table)} AS t WHERE {where})""",
            params,
        ).fetchone()[0]
        return con.execute("SELECT md5(? || '|' || md5(?))", [columns, rows]).fetchone()[0]

    # --- the one write -------------------------------------------------------------------

    def commit(self, write: Write) -> Receipt:
        with self.connect() as con:
            return self.commit_on(con, write)

    def commit_on(self, con: duckdb.DuckDBPyConnection, write: Write) -> Receipt:
        target = quote(write.table)
        where, params = self.partition_filter(write.partition, write.partition_expr)
        ddl = _column_ddl(write.columns)
        written_at = datetime.now(UTC).replace(tzinfo=None)
        con.register("incoming_rows", write.rows)
        try:
            with transaction(con):
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(write.table.split('.')[0])}")
                if write.partition == UNPARTITIONED:
                    con.execute(f"CREATE OR REPLACE TABLE {target} ({ddl})")
                else:
                    con.execute(f"CREATE TABLE IF NOT EXISTS {target} ({ddl})")
                    self._align_columns(con, write.table, write.columns)
                    con.execute(f"DELETE FROM {target} WHERE {where}", params)
                self._insert(con, target, write.columns)
                content_hash = self.content_hash(con, write.table, where, params)
                quarantined = self._replace_quarantine(con, write, where, params)
                self._replace_failures(con, write, written_at)
                row_count = len(write.rows)
                con.execute(
                    "INSERT INTO provline.version_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [write.table, write.partition, content_hash, write.code_version,
                     json.dumps(write.input_versions, sort_keys=True), write.run_id, row_count,
                     row_count + quarantined, quarantined, json.dumps(list(write.columns.items())), written_at],
                )
        finally:
            con.unregister("incoming_rows")
        self._snapshot(con, write.table, write.partition, where, params, content_hash)
        size = con.execute(
            "SELECT estimated_size FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?",
            write.table.split("."),
        ).fetchone()
        return Receipt(content_hash, row_count, quarantined, int(size[0] or 0) if size else 0, written_at)

    def snapshot_path(self, table: str, partition: str, content_hash: str) -> Path:
        return self.settings.snapshot_dir / table / (partition or "_all") / f"{content_hash}.parquet"

    def _snapshot(self, con: duckdb.DuckDBPyConnection, table: str, partition: str, where: str, params: dict,
                  content_hash: str) -> None:
        """Keep each committed version as Parquet, so `provline verify` can re-derive downstream
        versions from the inputs as they were. Written after COMMIT (a version is never snapshotted
        unless committed), via a temp file and rename; older snapshots expire after the retention
        period, except the partition's latest."""
        path = self.snapshot_path(table, partition, content_hash)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".parquet.tmp")
            con.execute(f"COPY (SELECT * FROM {quote(table)} WHERE {where}) TO '{_literal(tmp)}' (FORMAT parquet)",
                        params)
            tmp.replace(path)
        path.touch()
        cutoff = time.time() - self.settings.snapshot_retention_days * 86400
        for old in path.parent.glob("*.parquet"):
            if old != path and old.stat().st_mtime < cutoff:
                old.unlink(missing_ok=True)

    def record_check_results(self, write: Write) -> None:
        """Check results of a write that was refused (a blocking failure): only the results
        and failure cases are committed, so the UI and later runs see why; the data stays."""
        written_at = datetime.now(UTC).replace(tzinfo=None)
        with self.connect() as con:
            with transaction(con):
                self._replace_failures(con, write, written_at)

    def _insert(self, con: duckdb.DuckDBPyConnection, target: str, columns: dict[str, str]) -> None:
        con.execute(f"INSERT INTO {target} BY NAME SELECT {_typed(columns)} FROM incoming_rows")

    @staticmethod
    def _align_columns(con: duckdb.DuckDBPyConnection, table: str, columns: dict[str, str]) -> None:
        """Schema evolution of a partitioned table: add new columns (older partitions get NULL);
        a retyped column is altered in place (fails clearly if old values do not convert)."""
        schema, name = table.split(".")
        existing = dict(con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchall())
        for column, sql_type in columns.items():
            if column not in existing:
                con.execute(f"ALTER TABLE {quote(table)} ADD COLUMN {quote(column)} {sql_type}")
            elif existing[column] != sql_type:
                con.execute(f"ALTER TABLE {quote(table)} ALTER {quote(column)} TYPE {sql_type}")

    def _replace_quarantine(self, con: duckdb.DuckDBPyConnection, write: Write, where: str, params: dict) -> int:
        """Replace the partition's quarantined rows. The quarantine table always exists (empty
        when nothing was quarantined), so downstream SQL may read it."""
        table = quote(quarantine_table(write.table))
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({_column_ddl(write.columns)}, "
                    "_quarantine_reasons VARCHAR, _run_id VARCHAR)")
        con.execute(f"DELETE FROM {table} WHERE {where}", params)
        quarantined = write.quarantined
        if quarantined is None or quarantined.empty:
            return 0
        con.register("incoming_quarantine", quarantined)
        try:
            con.execute(
                f"""INSERT INTO {table} BY NAME SELECT {_typed(write.columns)}, _quarantine_reasons, $run_id AS _run_id
                    FROM incoming_quarantine""",
                {"run_id": write.run_id},
            )
        finally:
            con.unregister("incoming_quarantine")
        return len(quarantined)

    def _replace_failures(self, con: duckdb.DuckDBPyConnection, write: Write, at: datetime) -> None:
        con.execute("DELETE FROM quality.failures WHERE asset = ? AND partition = ?", [write.table, write.partition])
        failures = write.failures
        if failures is not None and not failures.empty:
            con.register("incoming_failures", failures)
            try:
                con.execute(
                    """INSERT INTO quality.failures
                       SELECT $run_id, $asset, $partition, check_name, severity, "column",
                              failing_value, row_key, $at FROM incoming_failures""",
                    {"run_id": write.run_id, "asset": write.table, "partition": write.partition, "at": at},
                )
            finally:
                con.unregister("incoming_failures")
        for result in write.check_results:
            con.execute(
                "INSERT INTO quality.check_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [write.run_id, write.table, write.partition, result["check_name"], result["severity"],
                 result["passed"], result["blocking"], result["failing_rows"], at],
            )
