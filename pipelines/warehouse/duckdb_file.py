"""The default backend: one DuckDB file under PROVLINE_HOME.

DuckDB allows one writing process per file, and runs (a backfill's, a CLI's beside `dagster dev`, a
multiprocess run's steps) are separate processes, so every connection is taken under an inter-process file
lock (`<home>/<name>.lock`): they queue for the warehouse instead of failing on DuckDB's lock. The lock is
held only while reading inputs and while committing (with the anomaly monitors that read the commit:
`session()`), never while a pandas transform or validation runs.
A crash or kill -9 before COMMIT leaves the previous version intact (DuckDB's WAL rolls the transaction
back on the next open).

Each committed version is also kept as Parquet under `<home>/snapshots/<table>/<partition>/<hash>.parquet`
so `provline verify` can re-derive downstream versions from their inputs as they were.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TypeVar

import duckdb
import pyarrow as pa

from pipelines.locks import LockTimeout, file_lock, open_duckdb
from pipelines.sql import (
    PARTITION,
    UNPARTITIONED,
    engine_config,
    partition_filter,
    partition_label,
    path_literal,
    quote,
    transaction,
)
from pipelines.warehouse.base import META_DDL, Receipt, VersionUnavailable, Write, write_partitions

T = TypeVar("T")


# the connection of the open session(), per thread and task: (file, connection)
_session: ContextVar[tuple[Path, duckdb.DuckDBPyConnection] | None] = ContextVar("warehouse_session", default=None)


class WarehouseLockTimeout(LockTimeout):
    pass


class DuckDBFile:
    def __init__(self, home: Path, name: str, lock_timeout_s: float, retention_days: int, memory_limit: str):
        self.name = name
        self.config = engine_config(memory_limit, home / "spill")
        self.path = home / f"{name}.duckdb"
        self.lock_path = home / f"{name}.lock"
        self.snapshot_dir = home / "snapshots"
        self.lock_timeout_s = lock_timeout_s
        self.retention_days = retention_days

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def lineage_namespace(self) -> str:
        """The logical warehouse name, never a path (see pipelines/lineage/naming.py)."""
        return f"duckdb://{self.name}"

    def exists(self) -> bool:
        return self.path.exists()

    def preflight(self) -> None:
        """Nothing to check before a step: the file and its folder are created on first connect."""

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection under the inter-process writer lock, with the metadata tables in place (inside
        `session()`, the session's)."""
        held = _session.get()
        if held is not None and held[0] == self.path:
            yield held[1]
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        timeout = WarehouseLockTimeout(
            f"waited {self.lock_timeout_s:.0f}s for the warehouse lock {self.lock_path}; another step holds it "
            "(raise PROVLINE_LOCK_TIMEOUT_S for long backfills)")
        # (the time zone: hashes must not depend on the machine's)
        with file_lock(self.lock_path, self.lock_timeout_s, timeout), \
                open_duckdb(str(self.path), "SET TimeZone = 'UTC'", META_DDL, config=self.config) as con:
            yield con

    @contextmanager
    def session(self) -> Iterator[None]:
        """Every connection taken inside (in this thread) is one: the lock, the open and the checkpoint at
        close are paid once, where each costs ~20-40 ms. For steps that follow each other closely (a commit
        and the monitors that read it), never around a transform: the lock is held throughout."""
        with self.connect() as con:
            token = _session.set((self.path, con))
            try:
                yield
            finally:
                _session.reset(token)

    def commit(self, write: Write) -> dict[str, Receipt]:
        with self.connect() as con:
            with transaction(con):
                receipts = write_partitions(con, write)
            self._snapshot(con, write, receipts)
        return receipts

    def transact(self, body: Callable[[duckdb.DuckDBPyConnection], T], what: str, table: str,
                 partitions: list[str]) -> T:
        """Any other write, in one transaction under the lock (which serializes every writer: `what`, `table` and
        `partitions` are for the lake's)."""
        with self.connect() as con, transaction(con):
            return body(con)

    def snapshot_path(self, table: str, partition: str, content_hash: str) -> Path:
        return self.snapshot_dir / table / (partition or "_all") / f"{content_hash}.parquet"

    def read_version(self, con: duckdb.DuckDBPyConnection, table: str, partition: str, content_hash: str,
                     partition_expr: str | None) -> pa.Table:
        """The rows of a recorded version, from its Parquet snapshot."""
        path = self.snapshot_path(table, partition, content_hash)
        if not path.exists():
            raise VersionUnavailable(str(path))
        return con.execute("SELECT * FROM read_parquet($path)", {"path": str(path)}).to_arrow_table()

    def maintain(self) -> str:
        return (f"{self.path}: nothing to do (Parquet snapshots older than {self.retention_days} days are "
                "removed at each commit)")

    def _snapshot(self, con: duckdb.DuckDBPyConnection, write: Write, receipts: dict[str, Receipt]) -> None:
        """Keep each committed version as Parquet (after COMMIT: a version is never snapshotted unless
        committed). A range is written in one COPY partitioned by partition key, then each file moves to
        its content-addressed name. Older snapshots expire after the retention period, except each
        partition's latest."""
        todo = {p: self.snapshot_path(write.table, p, r.content_hash) for p, r in receipts.items()}
        todo = {p: path for p, path in todo.items() if not path.exists()}
        if list(todo) == [UNPARTITIONED]:
            self._copy(con, f"SELECT * FROM {quote(write.table)}", {}, todo[UNPARTITIONED])
        elif todo:
            self.snapshot_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".copy-", dir=self.snapshot_dir))
            try:
                where, params = partition_filter(list(todo), write.partition_expr)
                con.execute(
                    f"""COPY (SELECT *, {partition_label(write.partition_expr)} AS {quote(PARTITION)}
                              FROM {quote(write.table)} WHERE {where})
                        TO {path_literal(tmp)} (FORMAT parquet, PARTITION_BY ({quote(PARTITION)}))""",
                    params,
                )
                for partition, target in todo.items():
                    files = sorted((tmp / f"{PARTITION}={partition}").glob("*.parquet"))
                    if len(files) == 1:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        files[0].replace(target)
                    elif files:
                        self._copy(con, "SELECT * FROM read_parquet($files, hive_partitioning = false)",
                                   {"files": [str(f) for f in files]}, target)
                    else:  # an empty partition: an empty file with the table's columns
                        self._copy(con, f"SELECT * FROM {quote(write.table)} LIMIT 0", {}, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        cutoff = time.time() - self.retention_days * 86400
        for partition, receipt in receipts.items():
            path = self.snapshot_path(write.table, partition, receipt.content_hash)
            path.touch()
            for old in path.parent.glob("*.parquet"):
                if old != path and old.stat().st_mtime < cutoff:
                    old.unlink(missing_ok=True)

    @staticmethod
    def _copy(con: duckdb.DuckDBPyConnection, query: str, params: dict, target: Path) -> None:
        """COPY a query to `target` as Parquet, via a temp file and rename."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".parquet.tmp")
        con.execute(f"COPY ({query}) TO {path_literal(tmp)} (FORMAT parquet)", params)
        tmp.replace(target)
