"""SQL helpers shared by the warehouse, the quality runner and the lineage store: quoting, the type
map, transactions. Identifiers are quoted here; values are always bound parameters."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pyarrow
import pyarrow.compute as pc

from pipelines.settings import get_settings

UNPARTITIONED = ""
"""The partition key of an unpartitioned table's only version."""
PARTITION = "_partition"
"""The column, in the frames the factory hands around, that names each row's partition key."""

# a contract column's pandas dtype -> the DuckDB type it is stored as (and must parse as)
DUCKDB_TYPES = {
    "Int64": "BIGINT", "int64": "BIGINT", "Int32": "INTEGER", "int32": "INTEGER",
    "Float64": "DOUBLE", "float64": "DOUBLE", "string": "VARCHAR", "str": "VARCHAR",
    "string[pyarrow]": "VARCHAR", "string[python]": "VARCHAR", "boolean": "BOOLEAN", "bool": "BOOLEAN",
    "datetime64[ns]": "TIMESTAMP", "datetime64[us]": "TIMESTAMP",
}


def quote(identifier: str) -> str:
    """Quote a (possibly schema-qualified) identifier: raw.orders -> "raw"."orders"."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in identifier.split("."))


def column_ddl(columns: dict[str, str]) -> str:
    return ", ".join(f"{quote(name)} {sql_type}" for name, sql_type in columns.items())


def typed_select(columns: dict[str, str]) -> str:
    """The select list that casts incoming rows to the contract's types."""
    return ", ".join(f"CAST({quote(name)} AS {sql_type}) AS {quote(name)}" for name, sql_type in columns.items())


def path_literal(path: Path | str) -> str:
    """A path (or any text) as a SQL string literal: COPY ... TO, ATTACH and CREATE SECRET take no bound
    parameter."""
    return "'" + str(path).replace("'", "''") + "'"


def engine_config(memory_limit: str, spill_dir: Path) -> dict[str, str]:
    """How every DuckDB database provline opens is set up: its memory bounded, spilling to `spill_dir` past it
    (DuckDB creates that folder when it first spills, not its parents: where PROVLINE_HOME does not exist yet, a
    read-only command's spill goes to the system's temporary folder rather than create a home)."""
    if not spill_dir.parent.is_dir():
        spill_dir = Path(tempfile.gettempdir()) / f"provline-spill-{os.getuid()}"
    return {"memory_limit": memory_limit, "temp_directory": str(spill_dir)}


_scratch_database: tuple[int, duckdb.DuckDBPyConnection] | None = None
_scratch_config: dict[str, str] | None = None


def configure_scratch(memory_limit: str, spill_dir: Path) -> None:
    """How the process's scratch database is held (each step says so, from its settings resource): a scratch database
    opened with other limits is reopened at its next use."""
    global _scratch_config, _scratch_database
    config = engine_config(memory_limit, spill_dir)
    if config != _scratch_config:
        _scratch_config, _scratch_database = config, None


def scratch_database() -> duckdb.DuckDBPyConnection:
    """The process's scratch DuckDB database: in memory, held to PROVLINE_MEMORY_LIMIT, spilling to
    PROVLINE_HOME/spill (as the step's settings configured it; outside a run, as the environment says).
    Work on rows happens in its cursors (`scratch()`); opening a new in-memory database costs ~17 ms and a cursor
    ~0.01 ms."""
    global _scratch_database
    if _scratch_config is None:
        settings = get_settings()
        configure_scratch(settings.memory_limit, settings.spill_dir)
    if _scratch_database is None or _scratch_database[0] != os.getpid():  # never a parent's, after a fork
        _scratch_database = (os.getpid(), duckdb.connect(config=_scratch_config))
    return _scratch_database[1]


@contextmanager
def scratch() -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor of the scratch database (see `scratch_database`): the frames it registers are its own; the tables
    it creates are the database's. It is closed on exit."""
    global _scratch_database
    con = scratch_database().cursor()
    try:
        yield con
    except duckdb.FatalException:  # DuckDB has invalidated the database: the next use opens a new one
        _scratch_database = None
        raise
    finally:
        con.close()


def arrow_table(frame: pd.DataFrame) -> pyarrow.Table:
    """A pandas frame as an Arrow table (the index dropped): Arrow-backed columns are not copied, NaN in a float
    column is a null. A column of mixed Python objects, which Arrow cannot type, is typed by DuckDB's own
    analysis of the frame, as when DuckDB scans it."""
    try:
        return pyarrow.Table.from_pandas(frame, preserve_index=False)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError):
        with scratch() as con:
            con.register("mixed_frame", frame.reset_index(drop=True))
            return con.execute("SELECT * FROM mixed_frame").to_arrow_table()


def counts_of(rows: pyarrow.Table | pyarrow.Array | pyarrow.ChunkedArray) -> dict[str, int]:
    """Rows per partition: of a table's PARTITION column, or of an array of partition keys."""
    keys = rows.column(PARTITION) if isinstance(rows, pyarrow.Table) else rows
    return {item["values"]: item["counts"] for item in pc.value_counts(keys).to_pylist()} if len(keys) else {}


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


INTERRUPTS = (KeyboardInterrupt, dg.DagsterExecutionInterruptedError, duckdb.InterruptException)


def interrupted(error: BaseException | None) -> bool:
    """Whether `error` is an interrupt (Ctrl-C, SIGTERM, a cancel) or came from one. DuckDB turns the exception a
    signal handler raises inside it into an ordinary error: `RuntimeError('Query interrupted')` with the interrupt
    as its cause during a query, a `duckdb.Error` that only names it when it lands in Python code DuckDB called
    (reading a registered frame). Caught as an ordinary error, the interrupt would be lost: the step retried or
    failed, and the run going on."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, INTERRUPTS) or (
                isinstance(error, duckdb.Error) and any(kind.__name__ in str(error) for kind in INTERRUPTS)):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def partition_filter(partitions: list[str], partition_expr: str | None, tolerant: bool = False) -> tuple[str, dict]:
    """A WHERE clause (and its parameters) selecting the rows of daily `partitions`, given the SQL
    expression over a table's columns that gives a row's date; `tolerant`: a row whose date is invalid (a
    source row) is left out instead of failing the query."""
    if partition_expr is None or partitions == [UNPARTITIONED]:
        return "TRUE", {}
    date = f"TRY(CAST(({partition_expr}) AS DATE))" if tolerant else f"CAST(({partition_expr}) AS DATE)"
    if len(partitions) == 1:
        return f"{date} = CAST($partition AS DATE)", {"partition": partitions[0]}
    # the span first: cheap, it lets DuckDB skip row groups, and it is all a contiguous range needs
    return (f"{date} BETWEEN CAST($first AS DATE) AND CAST($last AS DATE) "
            f"AND list_contains(CAST($partitions AS DATE[]), {date})",
            {"first": min(partitions), "last": max(partitions), "partitions": partitions})


def partition_label(partition_expr: str, tolerant: bool = False) -> str:
    """The SQL giving a row's daily partition key; `tolerant`: NULL where the date is invalid (source rows)
    instead of an error. (Only in a plain projection: DuckDB 1.5 cannot group by a TRY expression.)"""
    date = f"TRY(CAST(({partition_expr}) AS DATE))" if tolerant else f"CAST(({partition_expr}) AS DATE)"
    return f"strftime({date}, '%Y-%m-%d')"


def columns_named(expression: str, columns: Iterable[str]) -> list[str]:
    """The `columns` an SQL expression names (plain identifiers or "quoted" names), in `columns`' order."""
    names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expression)) | set(re.findall(r'"([^"]+)"', expression))
    return [c for c in columns if c in names]


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether `schema.table` exists in the connection's current catalog."""
    schema, name = table.split(".")
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database() "
        "AND table_schema = ? AND table_name = ?",
        [schema, name],
    ).fetchone()[0])
