"""The production backend: DuckLake, its catalog in PostgreSQL, its data files in a folder or object storage.

    PROVLINE_WAREHOUSE=ducklake:postgres:dbname=lake host=db.internal port=5432 user=provline
    PROVLINE_LAKE_DATA_PATH=/mnt/lake/          (or s3://bucket/prefix/ with `pip install provline[s3]`)

- Offline: the ducklake and postgres_scanner extensions load by file path from their PyPI packages
  (duckdb-extension-*, built for exactly this DuckDB version); autoinstall and autoload stay off, so DuckDB
  never tries its extension server.
- No password in any message: a `password=` in the conninfo becomes an unnamed DuckDB postgres secret
  instead of part of the ATTACH string, which DuckDB echoes in its errors (libpq's PGPASSWORD / PGPASSFILE
  work too). Errors name host, port, database and user.
- Many writers: DuckLake commits are optimistic. Two transactions that delete from the same table
  (any partition of it) conflict at COMMIT; the loser's whole transaction is retried with full-jitter
  exponential backoff, each retry logged, for at most `wait_s` (PROVLINE_LOCK_TIMEOUT_S). DuckLake's own
  retry (`ducklake_max_retry_count`) only covers snapshot-id collisions in the catalog. Anything that is
  not a conflict (the catalog gone, a bad value) fails at once.
- Replacing one (table, partition) is serialized across hosts (`_serialized`): a partition's first write
  deletes nothing, and two inserts never conflict, so optimism alone let two hosts both commit a new
  partition (twice its rows). Each write takes a PostgreSQL advisory lock per (table, partition) in the
  catalog database, on a connection of its own, in a PostgreSQL transaction held open until the DuckDB
  transaction committed or rolled back; a process that dies takes its connection, and the lock, with it.
  We chose the lock over a write that always conflicts (a row each writer rewrites): that row would have
  its own first-write race, DuckLake detects conflicts per table, so writers of different partitions would
  redo each other's whole transactions, and a loser redoes its write where the lock lets it wait.
- Versions: DuckLake gives every row a virtual `snapshot_id` column, the snapshot that inserted it, so a
  version-log row's `snapshot_id` is exactly the commit of that version. `read_version` reads it back with
  time travel (`AT (VERSION => n)`); `maintain` runs DuckLake's CHECKPOINT, which expires snapshots older
  than the retention period and deletes the files nothing references any more.
- One DuckDB instance per process holds the attached lake (loading the extensions and attaching cost ~1 s);
  `connect()` hands out a cursor on it, in one read transaction.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import duckdb
import pyarrow as pa

from pipelines.sql import engine_config, partition_filter, path_literal, quote, transaction
from pipelines.warehouse.base import Receipt, VersionUnavailable, Write, meta_ddl, write_partitions

log = logging.getLogger("provline.warehouse")

PREFIX = "ducklake:postgres:"
OFFLINE = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
"""DuckDB never downloads an extension here: they are loaded from their PyPI packages (`_prepare`)."""
LAKE_META_DDL = meta_ddl(snapshot_column=False)  # the version log's snapshot_id is the lake's own
CONFLICT_MARKERS = ("Transaction conflict", "ducklake_max_retry_count")
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.05, 2.0
DELETE_OLDER_THAN = "1 day"
LIBPQ_OPTIONS = "https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-PARAMKEYWORDS"
PROBE = ".provline-write-probe"  # unreferenced files younger than this may belong to a commit in flight
T = TypeVar("T")


class WarehouseUnavailable(RuntimeError):
    """The catalog or the data path cannot be used; nothing was written."""


class CommitConflict(RuntimeError):
    """Other writers' commits kept conflicting with this one for longer than the budget; nothing was written."""


# --- the conninfo ----------------------------------------------------------------------------------

def parse_conninfo(conninfo: str) -> dict[str, str]:
    """The fields of a libpq conninfo (`key=value ...`, or a postgresql:// URI), parsed by libpq itself. An unknown
    key is named; no other part of the text is ever shown (it may be a password)."""
    import psycopg  # (here, not at the top: only a DuckLake warehouse needs it, and it costs every process ~0.1 s)

    try:
        return psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as error:
        problem = str(error).strip()
        unknown = re.match(r'(?:invalid connection option|invalid URI query parameter:) "(\w+)"', problem)
        if unknown:
            raise ValueError(f"PROVLINE_WAREHOUSE: unknown libpq connection option {unknown[1]!r} (the options: "
                             f"{LIBPQ_OPTIONS})") from None
        # libpq quotes the text it stopped at, which may be part of the password: only a quoted "=" stays
        problem = re.sub(r'"([^"]*)"', lambda quoted: quoted[0] if quoted[1] == "=" else '"…"', problem)
        raise ValueError(f"PROVLINE_WAREHOUSE: not a libpq conninfo (key=value ... or postgresql://...): "
                         f"{problem}") from None


def format_conninfo(fields: dict[str, str]) -> str:
    """`key=value ...`, each value quoted as libpq needs."""
    import psycopg

    return psycopg.conninfo.make_conninfo("", **fields)


def extension_path(name: str) -> Path:
    """`<name>.duckdb_extension` from the PyPI package duckdb-extension-<name>, for this DuckDB version."""
    package = importlib.import_module(f"duckdb_extension_{name}")
    path = Path(package.__file__).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.exists():
        raise WarehouseUnavailable(f"the {name} extension for DuckDB {duckdb.__version__} is not installed: "
                                   f"pip install duckdb-extension-{name.replace('_', '-')}=={duckdb.__version__}")
    return path


def lock_key(table: str, partition: str) -> int:
    """The advisory-lock key of (table, partition): 64 bits of a hash (a collision only serializes two writes
    that need not be)."""
    digest = hashlib.blake2b(f"{table}\x00{partition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _is_conflict(error: BaseException) -> bool:
    return isinstance(error, duckdb.TransactionException) and any(m in str(error) for m in CONFLICT_MARKERS)


def _last_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__


# One attached DuckDB instance per (process, lake): forked step processes open their own.
_instances: dict[tuple, duckdb.DuckDBPyConnection] = {}
_instances_lock = threading.Lock()
_probed: set[tuple] = set()  # the lakes whose object-store data path this process wrote its probe to


def close_all() -> None:
    """Close this process's lake connections (tests; the next connect() attaches again, the next preflight
    probes again)."""
    with _instances_lock:
        for con in _instances.values():
            con.close()
        _instances.clear()
        _probed.clear()


class DuckLake:
    def __init__(self, conninfo: str, data_path: str, name: str, wait_s: float, retention_days: int,
                 memory_limit: str, spill_dir: Path):
        fields = parse_conninfo(conninfo)
        self.password = fields.pop("password", None)
        fields.setdefault("connect_timeout", "10")  # an unanswering host fails in seconds, not minutes
        self.fields = fields
        self.conninfo = format_conninfo(fields)  # never holds the password
        if not data_path:
            raise WarehouseUnavailable("PROVLINE_LAKE_DATA_PATH is not set: the DuckLake warehouse needs the folder "
                                       "or object-store prefix (s3://bucket/prefix/) of its data files")
        remote = "://" in data_path
        self.data_path = (data_path if remote else str(Path(data_path).resolve())).rstrip("/") + "/"
        self.remote = remote
        self.name = name  # the catalog's alias in DuckDB: current_database()
        self.wait_s = wait_s
        self.retention_days = retention_days
        self.config = engine_config(memory_limit, spill_dir)

    @property
    def server(self) -> str:
        host = self.fields.get("host") or self.fields.get("hostaddr") or "localhost"
        return f"{host}:{self.fields.get('port', '5432')}"

    @property
    def database(self) -> str:
        return self.fields.get("dbname") or self.fields.get("user") or "postgres"

    @property
    def location(self) -> str:
        return f"DuckLake {self.database} on PostgreSQL {self.server}, data in {self.data_path}"

    @property
    def lineage_namespace(self) -> str:
        """See pipelines/lineage/naming.py: the catalog database is the data source."""
        return f"ducklake://{self.server}/{self.database}"

    # --- connections ------------------------------------------------------------------------------

    def _explain(self, error: BaseException) -> str:
        """DuckDB's message without the conninfo it echoes (and without the password, should one slip in)."""
        text = str(error).replace(self.conninfo, "<conninfo>")
        if self.password and len(self.password) > 3:  # (it is never in the conninfo DuckDB sees)
            text = text.replace(self.password, "<password>")
        text = re.sub(r"password\s*=\s*\S+", "password=<redacted>", text)
        return f"{self.location} (user {self.fields.get('user', 'default')}): {text}"

    @property
    def _instance_key(self) -> tuple:
        return os.getpid(), self.conninfo, self.password, self.data_path, self.name

    def _instance(self) -> duckdb.DuckDBPyConnection:
        key = self._instance_key
        with _instances_lock:
            if key not in _instances:
                _instances[key] = self._open()
            return _instances[key]

    def _open(self) -> duckdb.DuckDBPyConnection:
        if not self.remote:
            self._probe_local_path()
        con = duckdb.connect(config=OFFLINE | self.config)
        try:
            self._prepare(con, "postgres_scanner", "ducklake", *(("httpfs",) if self.remote else ()))
            self._attach(con)
            con.execute(f"USE {quote(self.name)}")
            self._retrying(con, lambda c: c.execute(LAKE_META_DDL), "the metadata tables")
        except duckdb.Error as error:
            con.close()
            raise WarehouseUnavailable(self._explain(error)) from None
        except BaseException:
            con.close()
            raise
        return con

    def _prepare(self, con: duckdb.DuckDBPyConnection, *extensions: str) -> None:
        """Load the extensions from their PyPI packages and give PostgreSQL's password as a secret (never in
        the conninfo DuckDB sees, so never in its messages)."""
        for extension in extensions:
            con.execute(f"LOAD {path_literal(extension_path(extension))}")
        if self.password:
            con.execute(f"CREATE SECRET (TYPE postgres, PASSWORD {path_literal(self.password)})")

    def _attach(self, con: duckdb.DuckDBPyConnection) -> None:
        target = path_literal(PREFIX + self.conninfo)
        for attempt in range(5):
            try:
                con.execute(f"ATTACH {target} AS {quote(self.name)} (DATA_PATH {path_literal(self.data_path)})")
                return
            except duckdb.Error as error:
                # two hosts attaching an empty catalog at once race on creating its tables: the loser retries
                if "Failed to initialize DuckLake" not in str(error) or attempt == 4:
                    raise
                time.sleep(0.2 + random.random() * 0.5)

    @contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        cursor = self._instance().cursor()
        try:
            cursor.execute(f"USE {quote(self.name)}")
            cursor.execute("SET TimeZone = 'UTC'")  # hashes must not depend on the machine's zone
            yield cursor
        except duckdb.IOException as error:  # the catalog or the data files went away mid-step
            raise WarehouseUnavailable(self._explain(error)) from None
        finally:
            cursor.close()

    @contextmanager
    def session(self) -> Iterator[None]:
        """Nothing to hold: the lake keeps one connection per process (its cursors are cheap)."""
        yield

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside one transaction: every read sees the same snapshot (a step's inputs are
        consistent with each other), and DuckLake looks the snapshot up once instead of per statement."""
        with self._cursor() as cursor, transaction(cursor):
            yield cursor

    def exists(self) -> bool:
        """Whether the catalog database holds a lake, asked of PostgreSQL itself: ATTACHing the lake would
        create an empty one, and bind its data path for good, on a mere `provline status`."""
        if self._instance_key in _instances:
            return True  # opened (so created) by this process
        con = duckdb.connect(config=OFFLINE)
        try:
            self._prepare(con, "postgres_scanner")
            con.execute(f"ATTACH {path_literal(self.conninfo)} AS catalog_db (TYPE postgres, READ_ONLY)")
            return con.execute(
                "SELECT count(*) > 0 FROM duckdb_tables() WHERE database_name = 'catalog_db' "
                "AND table_name = 'ducklake_metadata'").fetchone()[0]
        except duckdb.Error as error:
            raise WarehouseUnavailable(self._explain(error)) from None
        finally:
            con.close()

    def preflight(self) -> None:
        """Before a step writes anything: the data path takes a file, and the catalog answers. Once per process
        and lake: Dagster sets the resource up for every step and every sensor tick (`provline_monitor`, each
        minute): the object-store write is paid once, not every minute."""
        self._instance()
        if self.remote and self._instance_key not in _probed:  # (a local path is probed before the first ATTACH)
            try:
                with self.connect() as con:
                    con.execute(f"COPY (SELECT 1 AS probe) TO {path_literal(self.data_path + PROBE + '.parquet')} "
                                "(FORMAT parquet)")
            except (duckdb.Error, WarehouseUnavailable) as error:
                raise WarehouseUnavailable(f"the lake's data path {self.data_path} is not writable: {error}") from None
            _probed.add(self._instance_key)

    def _probe_local_path(self) -> None:
        """The first ATTACH stores DATA_PATH in the catalog for good: check it before."""
        probe = Path(self.data_path) / f"{PROBE}-{uuid.uuid4().hex}"
        try:
            probe.parent.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise WarehouseUnavailable(f"the lake's data path {self.data_path} is not writable: {error}") from None

    # --- writes -------------------------------------------------------------------------------------

    @contextmanager
    def _serialized(self, table: str, partitions: list[str], what: str) -> Iterator[None]:
        """While inside, no other host replaces these partitions of `table`: their advisory locks in the catalog
        database, taken in one order (no deadlock between overlapping ranges) on a connection of our own and
        held by its open transaction. Enter it before the DuckDB transaction begins, so that transaction reads
        what the previous holder committed."""
        import psycopg

        try:
            con = psycopg.connect(self.conninfo, password=self.password, application_name="provline-writer")
        except psycopg.Error as error:
            raise WarehouseUnavailable(self._explain(error)) from None
        with con:  # commits (releasing the locks) at exit, or rolls back; then closes
            con.execute("SELECT set_config('lock_timeout', %s, true)", [f"{max(1, int(self.wait_s * 1000))}ms"])
            try:
                for key in sorted({lock_key(table, partition) for partition in partitions}):
                    con.execute("SELECT pg_advisory_xact_lock(%s)", [key])
            except psycopg.errors.LockNotAvailable:
                raise CommitConflict(
                    f"{what}: another writer of the same partitions held them for {self.wait_s:g}s; nothing of "
                    "this write was written. Raise PROVLINE_LOCK_TIMEOUT_S, or run fewer writers of the same "
                    "partitions at once.") from None
            except psycopg.OperationalError as error:
                raise WarehouseUnavailable(self._explain(error)) from None
            yield

    def _retrying(self, con: duckdb.DuckDBPyConnection, body: Callable[[duckdb.DuckDBPyConnection], T],
                  what: str) -> T:
        """BEGIN; body; COMMIT — the whole transaction again after a commit conflict, until wait_s is spent."""
        deadline, attempt = time.monotonic() + self.wait_s, 0
        while True:
            attempt += 1
            try:
                with transaction(con):
                    return body(con)
            except duckdb.TransactionException as error:  # after a failed COMMIT no transaction is open
                if not _is_conflict(error):
                    raise
                delay = random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))
                if time.monotonic() + delay > deadline:
                    raise CommitConflict(
                        f"{what}: other writers' commits conflicted with this one for {self.wait_s:g}s "
                        f"({attempt} attempts); nothing of it was written. Last conflict: {_last_line(error)}. "
                        "Raise PROVLINE_LOCK_TIMEOUT_S, or run fewer writers of the same tables at once."
                    ) from None
                log.warning("%s: commit conflict (attempt %d), retrying in %.2fs: %s", what, attempt, delay,
                            _last_line(error))
                time.sleep(delay)

    def commit(self, write: Write) -> dict[str, Receipt]:
        span = write.partitions[0] if len(write.partitions) == 1 else \
            f"{write.partitions[0]}..{write.partitions[-1]}, {len(write.partitions)} partitions"
        what = f"{write.table} [{span or 'unpartitioned'}]"

        def body(con: duckdb.DuckDBPyConnection) -> dict[str, Receipt]:
            receipts = write_partitions(con, write)
            con.execute(f"CALL {quote(self.name)}.set_commit_message('provline', $what, extra_info => $run)",
                        {"what": what, "run": write.run_id})
            return receipts

        with self._cursor() as con, self._serialized(write.table, write.partitions, what):
            receipts = self._retrying(con, body, what)
            snapshot = con.execute(f"FROM {quote(self.name)}.last_committed_snapshot()").fetchone()[0]
        return {p: replace(r, snapshot_id=snapshot) for p, r in receipts.items()}

    def transact(self, body: Callable[[duckdb.DuckDBPyConnection], T], what: str, table: str,
                 partitions: list[str]) -> T:
        """Any other write of some partitions of `table` (the check results of a refused write, the monitors'
        statistics): one transaction, serialized with the partitions' other writers, retried on conflicts."""
        with self._cursor() as con, self._serialized(table, partitions, what):
            return self._retrying(con, body, what)

    # --- versions -----------------------------------------------------------------------------------

    def read_version(self, con: duckdb.DuckDBPyConnection, table: str, partition: str, content_hash: str,
                     partition_expr: str | None) -> pa.Table:
        """The rows of `table` [partition] as of the commit that wrote `content_hash` (time travel), or the
        current rows when that is still the partition's latest version."""
        snapshot, latest = con.execute(
            """SELECT max(snapshot_id) FILTER (WHERE content_hash = $hash), arg_max(content_hash, snapshot_id)
               FROM provline.version_log WHERE asset = $asset AND partition = $partition""",
            {"hash": content_hash, "asset": table, "partition": partition},
        ).fetchone()
        if snapshot is None:
            raise VersionUnavailable(f"the version log of {self.location} has no such version")
        where, params = partition_filter([partition], partition_expr)
        if latest == content_hash:
            return con.execute(f"SELECT * FROM {quote(table)} WHERE {where}", params).to_arrow_table()
        # (asked first: a failed AT would abort the caller's transaction)
        kept = con.execute(f"SELECT count(*) FROM {quote(self.name)}.snapshots() WHERE snapshot_id = $snapshot",
                           {"snapshot": snapshot}).fetchone()[0]
        if not kept:
            raise VersionUnavailable(f"lake snapshot {snapshot} expired (retention {self.retention_days} days)")
        return con.execute(f"SELECT * FROM {quote(table)} AT (VERSION => $snapshot) WHERE {where}",
                           {**params, "snapshot": snapshot}).to_arrow_table()

    def maintain(self) -> str:
        """DuckLake's CHECKPOINT: flush inlined rows, expire snapshots older than the retention period, merge
        small files, delete the files no snapshot needs any more."""
        with self._cursor() as con:
            catalog = quote(self.name)
            before = con.execute(f"SELECT count(*) FROM {catalog}.snapshots()").fetchone()[0]
            con.execute(f"CALL {catalog}.set_option('expire_older_than', $v)", {"v": f"{self.retention_days} days"})
            con.execute(f"CALL {catalog}.set_option('delete_older_than', $v)", {"v": DELETE_OLDER_THAN})
            con.execute(f"CHECKPOINT {catalog}")
            after = con.execute(f"SELECT count(*) FROM {catalog}.snapshots()").fetchone()[0]
        return (f"{self.location}: {before} snapshots before, {after} after (kept {self.retention_days} days); "
                f"files unreferenced for {DELETE_OLDER_THAN} deleted")
