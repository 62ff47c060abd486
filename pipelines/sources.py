"""Source files: `<name>.csv` / `<name>.parquet` in PROVLINE_SOURCE_DIR when it is set (how users bring
their own data, same columns), else in the folder the domain ships its data in (`Source.default_dir`).

Parsing is strict and says where it failed: a missing column, or a value that does not parse
as the contract's type, raises `SourceError` naming the file, the column, the row and the value.
Extra columns are dropped here and reported (the contract is the list of columns we own).

Each row keeps where it came from: the factory hands a raw transform its rows with a SOURCE_LINE column
(`SourceTable.numbered`), so a rule that fails on a row names its file and line.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow

from pipelines.settings import Settings, get_settings
from pipelines.sql import DUCKDB_TYPES, UNPARTITIONED, columns_named, partition_filter, partition_label, quote, scratch

log = logging.getLogger(__name__)
T = TypeVar("T")

_NA = ["", "NA", "NaN", "nan", "null", "NULL"]
SUFFIXES = (".parquet", ".csv", ".csv.gz", ".csv.zip")
SOURCE_LINE = "_source_line"
"""Each source row's line in its file (row, for Parquet): added for the raw transform, dropped before a write."""


class SourceError(ValueError):
    """A source file that cannot be read as its contract says."""


@dataclass(frozen=True)
class Source:
    """A source table: the file `<name>.<csv|parquet|...>`, in PROVLINE_SOURCE_DIR or else `default_dir`."""

    name: str
    default_dir: Path | None = None


def package_data(package: str, folder: str = "data") -> Path | None:
    """The data folder of an installed package, found without importing it (imports can be slow)."""
    spec = importlib.util.find_spec(package)
    return Path(next(iter(spec.submodule_search_locations))) / folder if spec else None


@dataclass(frozen=True, eq=False)
class SourceTable:
    """A source table's rows, typed by its contract. They stay where DuckDB reads them with filters, not in a
    frame: in a Parquet file (the source itself when its columns already have the contract's types, else its
    parsed copy), or in memory (one day from the landing zone, or a copy that could not be written)."""

    path: Path
    typed: Path | pd.DataFrame
    content_hash: str
    dtypes: dict[str, str]  # column -> the contract's pandas dtype, in contract order
    extra_columns: tuple[str, ...] = ()
    casts: dict[str, str] = field(default_factory=dict)  # column -> the type DuckDB casts it to as it reads

    @property
    def first_line(self) -> int:
        """The line of the first data row: 2 in a CSV file (after its header), row 1 in Parquet."""
        return _first_line(self.path)

    def locations(self, lines: np.ndarray | pd.Series) -> np.ndarray:
        """`orders.csv line 12` for each line number (`row 12` in Parquet)."""
        label = f"{self.path.name} {'row' if self.first_line == 1 else 'line'} "
        return (label + pd.Series(lines).astype("string")).to_numpy(dtype=object)

    @property
    def frame(self) -> pd.DataFrame:
        """All the rows as one typed frame (for small tables and tests: the factory reads `rows`)."""
        if isinstance(self.typed, pd.DataFrame):
            return self.typed
        return pd.read_parquet(self.typed, columns=list(self.dtypes)).astype(self.dtypes)

    def rows(self, partition_expr: str | None = None, partitions: list[str] | None = None) -> pyarrow.Table:
        """The rows of some daily partitions (all of them without `partition_expr`), in file order, with
        their line in the file (SOURCE_LINE): read by DuckDB, only these rows leave it."""
        where, params = partition_filter(partitions or [UNPARTITIONED], partition_expr, tolerant=True)
        return self._query(f"SELECT * FROM {{rows}} WHERE {where}", params, lambda result: result.to_arrow_table())

    def counts(self, partition_expr: str) -> dict[str, int]:
        """Rows per daily partition (rows with no valid date are left out)."""
        days = self._query(f"SELECT d, count(*) FROM (SELECT TRY(CAST(({partition_expr}) AS DATE)) AS d FROM {{rows}}) "
                           "WHERE d IS NOT NULL GROUP BY d", {}, lambda result: result.fetchall())
        return {day.isoformat(): rows for day, rows in days}

    def outside(self, partition_expr: str, partitions: dg.DailyPartitionsDefinition) -> pd.DataFrame:
        """The rows that belong to no daily partition (no valid date, or a date outside the partitions), with
        their lines: loading partition by partition would silently leave them out. Found once per file version
        and process (a range's chunks ask again)."""
        return _outside(self, partition_expr, *_bounds(partitions))

    def _query(self, sql: str, params: dict, fetch: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """`fetch` the result of `sql` over `{rows}`: the contract's columns and SOURCE_LINE."""
        columns = ", ".join(f"CAST({quote(c)} AS {self.casts[c]}) AS {quote(c)}" if c in self.casts else quote(c)
                            for c in self.dtypes)
        with scratch() as con:
            if isinstance(self.typed, pd.DataFrame):
                con.register("source_frame", self.typed.assign(**{SOURCE_LINE: np.arange(len(self.typed))
                                                                  + self.first_line}))
                rows = f"(SELECT {columns}, {SOURCE_LINE} FROM source_frame)"
            else:
                rows = (f"(SELECT {columns}, file_row_number + {self.first_line} AS {SOURCE_LINE} "
                        "FROM read_parquet($typed_path, file_row_number = true))")
                params = params | {"typed_path": str(self.typed)}
            return fetch(con.execute(sql.format(rows=rows), params))


@lru_cache(maxsize=8)
def _outside(table: SourceTable, partition_expr: str, first: str, end: str | None) -> pd.DataFrame:
    label = partition_label(partition_expr, tolerant=True)
    outside = "p IS NULL OR p < $first" + (" OR p >= $end" if end else "")
    return table._query(f"SELECT * EXCLUDE (p) FROM (SELECT *, {label} AS p FROM {{rows}}) WHERE {outside}",
                        {"first": first} | ({"end": end} if end else {}), lambda result: result.df())


def source_path(source: Source, settings: Settings | None = None) -> Path:
    """The file of a source table: in PROVLINE_SOURCE_DIR when set, else in the domain's own data."""
    chosen = (settings or get_settings()).source_folder
    folder = chosen or source.default_dir
    where = f"PROVLINE_SOURCE_DIR={chosen}" if chosen else f"{source.default_dir}"
    for suffix in SUFFIXES:
        candidate = folder / f"{source.name}{suffix}" if folder else None
        if candidate is not None and candidate.is_file():
            return candidate
    raise SourceError(f"source table {source.name!r}: no {source.name}.csv or {source.name}.parquet in {where}")


def read_source(source: Source, contract: type[pa.DataFrameModel], settings: Settings | None = None) -> SourceTable:
    """Read one source table, typed by its contract. Cached per file version within a process, and as a
    parsed copy across processes (see `_parsed_copy`)."""
    settings = settings or get_settings()
    return read_file(source_path(source, settings), contract, copies=settings.source_cache_dir)


def read_file(path: Path, contract: type[pa.DataFrameModel], copies: Path | None = None) -> SourceTable:
    """Read one file of a source table (the whole table, or one day of it), typed by its contract; a CSV's parsed
    copy is kept in `copies` when given."""
    stat = path.stat()
    table = _read(path, stat.st_mtime_ns, stat.st_size, contract, copies)
    if isinstance(table.typed, Path) and not table.typed.is_file():  # its parsed copy was removed since
        _read.cache_clear()
        table = _read(path, stat.st_mtime_ns, stat.st_size, contract, copies)
    return table


@lru_cache(maxsize=8)
def _read(path: Path, _mtime_ns: int, _size: int, contract: type[pa.DataFrameModel],
          copies: Path | None) -> SourceTable:
    with open(path, "rb") as file:
        digest = hashlib.file_digest(file, "md5").hexdigest()
    dtypes = {name: str(column.dtype) for name, column in contract.to_schema().columns.items()}
    if path.suffix == ".parquet" and (typed := _parquet_casts(path, dtypes)) is not None:
        casts, extra = typed
        return SourceTable(path, path, digest, dtypes, extra, casts)
    copy = _parsed_copy(copies, path, digest, dtypes) if copies is not None else None
    if copy is not None and copy.is_file():  # this very file, parsed before with these types
        return SourceTable(path, copy, digest, dtypes, _extra_columns(path, dtypes))
    frame, extra = _parse_file(path, dtypes)
    if copy is not None and _keep(path, frame, copy):
        return SourceTable(path, copy, digest, dtypes, extra)  # the frame is let go: DuckDB reads the copy
    return SourceTable(path, frame, digest, dtypes, extra)


_WIDENS_TO = {
    "BIGINT": {"TINYINT", "SMALLINT", "INTEGER", "UTINYINT", "USMALLINT", "UINTEGER"},
    "DOUBLE": {"FLOAT", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER"},
    "TIMESTAMP": {"TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S"},
}
"""Parquet types DuckDB casts to the contract's type exactly as pandas' astype would (no value can fail)."""


def _parquet_casts(path: Path, dtypes: dict[str, str]) -> tuple[dict[str, str], tuple[str, ...]] | None:
    """A Parquet source whose columns have the contract's types, or types that widen to them, is read as it is
    (no parse, no copy): the casts DuckDB applies as it reads, and the extra columns. None when a column must be
    parsed, or the file cannot be read (the parse then says why)."""
    try:
        with scratch() as con:
            found = {name: kind for name, kind, *_ in
                     con.execute("DESCRIBE SELECT * FROM read_parquet($path)", {"path": str(path)}).fetchall()}
    except duckdb.Error:
        return None
    casts = {}
    for name, dtype in dtypes.items():
        target, kind = DUCKDB_TYPES.get(dtype), found.get(name)
        if kind in _WIDENS_TO.get(target, ()):
            casts[name] = target
        elif target is None or kind != target:
            return None
    return casts, tuple(c for c in found if c not in dtypes)


def _extra_columns(path: Path, dtypes: dict[str, str]) -> tuple[str, ...]:
    return tuple(c for c in pd.read_csv(path, dtype=str, nrows=0).columns if c not in dtypes)


def _parsed_copy(copies: Path, path: Path, digest: str, dtypes: dict[str, str]) -> Path | None:
    """Where a source CSV's typed frame is kept once parsed, as Parquet, named by the file's content hash and
    the contract's types: a changed file or contract never finds an old copy. Reading it is several times
    faster than parsing the CSV again, which a one-day run would do for the whole file (docs/benchmarks.md), and
    DuckDB reads only the rows of the days being built from it."""
    if path.suffix == ".parquet":
        return None
    types = hashlib.md5(json.dumps(dtypes).encode()).hexdigest()[:12]
    return copies / f"{path.name}.{digest}.{types}.parquet"


def _keep(source: Path, frame: pd.DataFrame, copy: Path) -> bool:
    """Write the parsed copy atomically (a reader never sees half a file) in place of the file's older
    copies; whether it was. A copy that cannot be written (a read-only home) costs the next run its parse, and
    this one keeps the frame in memory."""
    try:
        copy.parent.mkdir(parents=True, exist_ok=True)
        partial = copy.with_name(f"{copy.name}.{os.getpid()}.partial")
        frame.to_parquet(partial, index=False)
        os.replace(partial, copy)
        for older in copy.parent.glob(f"{glob.escape(source.name)}.*.parquet"):
            if older != copy:
                older.unlink(missing_ok=True)
    except OSError as error:
        log.debug("parsed copy of a source not kept at %s: %s", copy, error)
        return False
    return True


def _parse_file(path: Path, dtypes: dict[str, str]) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The typed frame of a file, and its extra columns (SourceError where a value does not parse)."""
    try:
        return _parse_table(path, dtypes)
    except UnicodeDecodeError as error:  # pandas names neither the file nor the line
        raise SourceError(_not_utf8(path, error)) from None


def _not_utf8(path: Path, error: UnicodeDecodeError) -> str:
    """Where a text file stops being UTF-8 (its first such line), and what to do."""
    opener = gzip.open if path.suffix == ".gz" else open  # (a .zip member is read by pandas only)
    where = f"byte {error.start} of the file (after decompression)"
    if path.suffix != ".zip":
        with opener(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as bad:
                    where = f"line {number}, byte {bad.start + 1} of the line ({line[bad.start:bad.end]!r})"
                    break
    return (f"{path}: not UTF-8 at {where}: provline reads source files as UTF-8. Convert the file (e.g. "
            f"`iconv -f WINDOWS-1252 -t UTF-8 {path.name} > converted.csv`, naming its real encoding) and "
            "deliver it again.")


def _parse_table(path: Path, dtypes: dict[str, str]) -> tuple[pd.DataFrame, tuple[str, ...]]:
    try:
        if path.suffix == ".parquet":
            raw = pd.read_parquet(path)
        else:  # the header only: column checks first, the typed read below
            raw = pd.read_csv(path, dtype=str, nrows=0)
    except UnicodeDecodeError:
        raise
    except Exception as error:  # noqa: BLE001 - any reader error becomes a file-level message
        raise SourceError(f"{path}: cannot be read: {error}") from error
    missing = [name for name in dtypes if name not in raw.columns]
    if missing:
        raise SourceError(f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(dtypes)})")
    extra = tuple(c for c in raw.columns if c not in dtypes)
    try:  # fast path: the file parses as its contract says
        typed = raw[list(dtypes)].astype(dtypes) if path.suffix == ".parquet" else _read_csv(path, dtypes)
    except UnicodeDecodeError:
        raise
    except (ValueError, TypeError):  # slow path, only to say where it does not
        if path.suffix != ".parquet":
            raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=_NA)
        typed = pd.DataFrame({name: _parse(path, name, raw[name], dtype, _first_line(path))
                              for name, dtype in dtypes.items()})
    return typed, extra


def _first_line(path: Path) -> int:
    return 1 if path.suffix == ".parquet" else 2


# --- the landing zone: a partitioned source's days, a file each (pipelines/monitor/landing.py watches it) ----


DAY_FILE_SUFFIXES = (".csv", ".parquet")


def day_file(folder: Path, day: str) -> Path:
    """The landing file of `day` in a source's folder."""
    found = [folder / f"{day}{suffix}" for suffix in DAY_FILE_SUFFIXES if (folder / f"{day}{suffix}").is_file()]
    if not found:
        raise SourceError(f"no landing file for {day}: expected {folder / day}.csv or .parquet "
                          "(PROVLINE_LANDING_DIR is set: daily source tables are read from the landing zone)")
    if len(found) > 1:
        raise SourceError(f"two landing files for {day}: {found[0]} and {found[1]}; keep one")
    return found[0]


def read_day(path: Path, contract: type[pa.DataFrameModel], daily_on: str, day: str) -> SourceTable:
    """One landing file, typed by the contract; its columns and every row's day checked (SourceError)."""
    table = read_file(path, contract)
    if table.extra_columns:
        raise SourceError(f"{path}: unexpected column(s) {', '.join(table.extra_columns)}, not in the contract "
                          f"{contract.__name__} ({', '.join(table.dtypes)})")
    days = partition_keys(table.frame, daily_on)
    other = np.flatnonzero(days != day)
    if len(other):
        label = "row" if table.first_line == 1 else "line"  # as SourceTable.locations says it
        raise SourceError(f"{path}: {len(other)} of {len(days)} row(s) are not dated {day} "
                          f"(first: {label} {other[0] + table.first_line}, dated {days[other[0]] or 'invalid'})")
    return table


def read_landed(source: Source, contract: type[pa.DataFrameModel], daily_on: str, partitions: list[str],
                landing: Path | None) -> SourceTable | None:
    """The rows of `partitions` from their files in the `landing` zone; None when there is none: the whole source
    file is read instead. A range's version is the hash of its days'."""
    if landing is None:
        return None
    folder = landing / source.name
    days = [read_day(day_file(folder, day), contract, daily_on, day) for day in partitions]
    if len(days) == 1:
        return days[0]
    content_hash = hashlib.md5("".join(f"{p}:{t.content_hash}\n" for p, t in zip(partitions, days,
                                                                                  strict=True)).encode()).hexdigest()
    return SourceTable(folder, pd.concat([t.frame for t in days], ignore_index=True), content_hash, days[0].dtypes)


def partition_keys(frame: pd.DataFrame, partition_expr: str) -> np.ndarray:
    """Each row's daily partition key, YYYY-MM-DD (None when its date is invalid), computed by DuckDB (on
    the columns that date a row only: handing DuckDB a whole frame of strings costs 8x more)."""
    with scratch() as con:
        con.register("partition_rows", frame[columns_named(partition_expr, frame.columns)])
        column = next(iter(con.execute(f"SELECT {partition_label(partition_expr, tolerant=True)} "
                                       "FROM partition_rows").fetchnumpy().values()))
    keys = np.ma.getdata(column).astype(object)
    keys[np.ma.getmaskarray(column)] = None
    return keys


def describe_outside(table: SourceTable, lines: np.ndarray, partitions: dg.DailyPartitionsDefinition) -> str:
    """What `SourceTable.outside` found, in words: how many rows, and where the first ones are."""
    first, end = _bounds(partitions)
    where = ", ".join(table.locations(lines[:10])) + (" ..." if len(lines) > 10 else "")
    span = f"{first}..{end}" if end else f"from {first}"
    return (f"{len(lines)} row(s) of {table.path} have no valid date in {span} and belong to no partition, "
            f"kept out: {where}")


def _bounds(partitions: dg.DailyPartitionsDefinition) -> tuple[str, str | None]:
    """The first day and the day after the last (None: open-ended) of daily partitions."""
    return partitions.start.strftime("%Y-%m-%d"), partitions.end.strftime("%Y-%m-%d") if partitions.end else None


def _read_csv(path: Path, dtypes: dict[str, str]) -> pd.DataFrame:
    # timestamps are read as text and parsed after (read_csv takes no datetime dtype)
    read_as = {name: "string" if dtype.startswith("datetime") else dtype for name, dtype in dtypes.items()}
    frame = pd.read_csv(path, usecols=list(dtypes), dtype=read_as, keep_default_na=False, na_values=_NA)
    for name, dtype in dtypes.items():
        if dtype.startswith("datetime"):
            frame[name] = pd.to_datetime(frame[name], format="ISO8601").astype(dtype)
    return frame[list(dtypes)]


def _parse(path: Path, name: str, values: pd.Series, dtype: str, first_line: int) -> pd.Series:
    if dtype.startswith(("string", "str")):
        return values.astype("string")
    if dtype in ("Int64", "Float64", "int64", "float64"):
        parsed = pd.to_numeric(values, errors="coerce")
        bad = parsed.isna() & values.notna()
        if dtype.lower() == "int64":
            bad |= parsed.notna() & (parsed != parsed.round())
        _refuse(path, name, values, bad, "integer" if dtype.lower() == "int64" else "number", first_line)
        return parsed.astype(dtype)
    if dtype.startswith("datetime"):
        parsed = pd.to_datetime(values, errors="coerce", format="ISO8601")
        _refuse(path, name, values, parsed.isna() & values.notna(), "timestamp", first_line)
        return parsed.astype(dtype)
    raise SourceError(f"{path}: column {name!r}: unsupported contract type {dtype}")


def _refuse(path: Path, name: str, values: pd.Series, bad: pd.Series, kind: str, first_line: int) -> None:
    """Raise naming the file, column, line (or row) and value of the first bad value, if any."""
    if bad.any():
        position = int(bad.to_numpy().nonzero()[0][0])
        label = "line" if first_line == 2 else "row"
        raise SourceError(
            f"{path}: column {name!r}, {label} {position + first_line}: {values.iloc[position]!r} "
            f"is not a valid {kind} ({int(bad.sum())} bad value(s) in this column)"
        )
