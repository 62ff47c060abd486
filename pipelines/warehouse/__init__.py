"""The warehouse every asset writes through: a Dagster resource with one small interface.

    connect()            a DuckDB connection on the warehouse (reads, and writes inside commit)
    session()            calls inside it share one connection (a commit and the monitors after it)
    read(...)            the rows of some partitions of a table
    commit(write)        replace a set of partitions atomically; returns a Receipt per partition
    record_failures(...) keep the check results and failure cases of a write that was refused
    latest_versions(...), blocking_failures(...)   what the version log and check history say
    read_version(...)    the rows of one recorded version of (table, partition), for `provline verify`
    maintain()           retention: expire old versions (`provline maintain`)

Backends: the DuckDB file under PROVLINE_HOME (`url = "duckdb"`, the default; duckdb_file.py) and DuckLake
on a PostgreSQL catalog (`url = "ducklake:postgres:<libpq conninfo>"`, data under `lake_data_path`;
ducklake.py). Every backend speaks DuckDB SQL, so the write itself is shared (base.py).

Configure it in Definitions like any Dagster resource; `Warehouse.from_settings()` builds it from the
environment (pipelines/settings.py), and tests build their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa

from pipelines.settings import VARIABLES, Settings, get_settings, named
from pipelines.sql import table_exists
from pipelines.warehouse import base
from pipelines.warehouse.base import LATEST_FIRST, Receipt, VersionUnavailable, Write, insert_frame, quarantine_table
from pipelines.warehouse.duckdb_file import DuckDBFile, WarehouseLockTimeout
from pipelines.warehouse.ducklake import PREFIX as DUCKLAKE
from pipelines.warehouse.ducklake import CommitConflict, DuckLake, WarehouseUnavailable

__all__ = ["LATEST_FIRST", "TRANSIENT_ERRORS", "CommitConflict", "Receipt", "VersionUnavailable", "Warehouse",
           "WarehouseLockTimeout", "WarehouseUnavailable", "Write", "insert_frame", "quarantine_table"]

T = TypeVar("T")

TRANSIENT_ERRORS = (WarehouseLockTimeout, CommitConflict, WarehouseUnavailable, duckdb.IOException, OSError)
"""What may pass on a second try: a lock or a commit conflict that outlasted its wait, the catalog or a disk gone
for a moment. Anything else (a parse, a decode, a contract, a type error) fails the same way again."""


SETTINGS_OF = {"home": "provline_home", "name": "warehouse_name", "url": "warehouse_url",
               "lake_data_path": "lake_data_path", "lock_timeout_s": "lock_timeout_s",
               "snapshot_retention_days": "snapshot_retention_days", "memory_limit": "memory_limit"}
"""Each field of the resource, and the setting (pipelines/settings.py) it comes from."""


class Warehouse(dg.ConfigurableResource):
    """Where provline keeps tables, quarantine, failure cases, check results and the version log."""

    home: str
    """Folder of the DuckDB file, its lock and the version snapshots (PROVLINE_HOME)."""
    name: str = "warehouse"
    """The DuckDB file stem; also the OpenLineage dataset namespace `duckdb://<name>`."""
    url: str = "duckdb"
    """The backend: `duckdb` (a file under `home`) or `ducklake:postgres:<libpq conninfo>`."""
    lake_data_path: str = ""
    """DuckLake only: the folder or object-store prefix (s3://bucket/prefix/) of the data files."""
    lock_timeout_s: float = 600.0
    """How long a write waits for other writers: the file backend's lock, or DuckLake's commit conflicts."""
    snapshot_retention_days: int = 90
    """How long versions are kept for `provline verify` (Parquet snapshots, or DuckLake snapshots)."""
    memory_limit: str = "1GB"
    """DuckDB's memory limit for the warehouse's connection; past it DuckDB spills to `<home>/spill`."""

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Warehouse:
        settings = settings or get_settings()
        return cls(**{field: getattr(settings, setting) for field, setting in SETTINGS_OF.items()}
                   | {"home": str(settings.home)})  # (resolved where the settings are read)

    @classmethod
    def from_environment(cls) -> Warehouse:
        """The resource of the code location's Definitions: each field whose variable the environment sets is
        Dagster's EnvVar of it, which the UI shows by name (a conninfo may carry a password) and a step reads when it
        runs; the others are their defaults, as `from_settings` gives them."""
        defaults = cls.from_settings()
        return cls(**{field: named(VARIABLES[setting], getattr(defaults, field))
                      for field, setting in SETTINGS_OF.items()})

    @property
    def backend(self) -> DuckDBFile | DuckLake:
        """The backend of these settings, built once per process (Dagster makes an instance of the resource for
        every run and sensor tick; a copy with other values gets its own backend)."""
        return _backend(self.home, self.name, self.url, self.lake_data_path, self.lock_timeout_s,
                        self.snapshot_retention_days, self.memory_limit)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Dagster calls this before a step runs: an unreachable catalog or a data path that takes no file
        fails here, before anything is written."""
        self.backend.preflight()

    @property
    def location(self) -> str:
        """Where the data is, for messages (never a password)."""
        return self.backend.location

    @property
    def where(self) -> dict[str, str]:
        """Where the tables are, without credentials: the DuckDB file's path, or the lake's catalog (PostgreSQL
        host:port and database) and data path (for an exported data contract's server block)."""
        if self.url == "duckdb":
            return {"backend": "duckdb", "path": self.backend.location}
        lake = self.backend
        return {"backend": "ducklake", "server": lake.server, "database": lake.database, "data_path": lake.data_path}

    @property
    def lineage_namespace(self) -> str:
        """The OpenLineage namespace of the warehouse's tables (see pipelines/lineage/naming.py)."""
        return self.backend.lineage_namespace

    def exists(self) -> bool:
        """Whether anything was ever written (a read must not create an empty warehouse)."""
        return self.backend.exists()

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.backend.connect() as con:
            yield con

    @contextmanager
    def session(self) -> Iterator[None]:
        """Warehouse calls inside share one connection (the file backend's lock and open are paid once)."""
        with self.backend.session():
            yield

    def commit(self, write: Write) -> dict[str, Receipt]:
        return self.backend.commit(write)

    def record_failures(self, write: Write) -> None:
        """Check results of a write that was refused (a blocking failure): only the results and failure
        cases are committed, so the UI and later runs see why; the data stays."""
        at = datetime.now(UTC).replace(tzinfo=None)
        self.transact(lambda con: base.record_check_results(con, write, at),
                      f"check results of {write.table} {write.partitions}", write.table, write.partitions)

    def transact(self, body: Callable[[duckdb.DuckDBPyConnection], T], what: str, table: str,
                 partitions: list[str]) -> T:
        """Any other write of some partitions of `table` (the anomaly monitors' statistics and verdicts): `body`
        in one transaction, serialized with the partitions' other writers (DuckLake: retried whole on a commit
        conflict); `what` names it in messages."""
        return self.backend.transact(body, what, table, partitions)

    # the reads every backend shares
    read = staticmethod(base.read)
    table_exists = staticmethod(table_exists)
    latest_versions = staticmethod(base.latest_versions)
    latest_version = staticmethod(base.latest_version)
    blocking_failures = staticmethod(base.blocking_failures)
    content_hashes = staticmethod(base.content_hashes)

    def read_version(self, con: duckdb.DuckDBPyConnection, table: str, partition: str, content_hash: str,
                     partition_expr: str | None) -> pa.Table:
        """The rows of the recorded version `content_hash` of table [partition], read on `con` (a connection
        of this warehouse). Raises VersionUnavailable when it is no longer kept."""
        return self.backend.read_version(con, table, partition, content_hash, partition_expr)

    def maintain(self) -> str:
        """Retention: drop versions older than snapshot_retention_days (each partition's latest stays)."""
        return self.backend.maintain()

    def status(self) -> pd.DataFrame:
        """Per table: partitions, rows in their latest versions, last write (for `provline status`)."""
        with self.connect() as con:
            return con.execute(
                f"""SELECT asset, count(DISTINCT partition) AS partitions,
                          CAST(sum(row_count) FILTER (WHERE latest) AS BIGINT) AS rows, max(written_at) AS last_written
                   FROM (SELECT *, row_number() OVER (PARTITION BY asset, partition ORDER BY {base.LATEST_FIRST}) = 1
                         AS latest FROM provline.version_log)
                   GROUP BY asset ORDER BY asset"""
            ).df()


@lru_cache(maxsize=32)
def _backend(home: str, name: str, url: str, lake_data_path: str, lock_timeout_s: float, retention_days: int,
             memory_limit: str) -> DuckDBFile | DuckLake:
    if url == "duckdb":
        return DuckDBFile(Path(home), name, lock_timeout_s, retention_days, memory_limit)
    if url.startswith(DUCKLAKE):
        return DuckLake(url.removeprefix(DUCKLAKE), lake_data_path, name, lock_timeout_s, retention_days, memory_limit,
                        Path(home) / "spill")
    scheme = url.split(":")[0]  # (never the rest: it may hold a password)
    raise ValueError(f"unknown warehouse {scheme!r}: expected 'duckdb' or '{DUCKLAKE}<libpq conninfo>'")
