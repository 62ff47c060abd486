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
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pandera.pandas as pa

from pipelines.settings import get_settings
from pipelines.sql import columns_named, partition_label, scratch

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class SourceTable:
    path: Path
    frame: pd.DataFrame
    content_hash: str
    extra_columns: tuple[str, ...] = ()

    @property
    def first_line(self) -> int:
        """The line of the first data row: 2 in a CSV file (after its header), row 1 in Parquet."""
        return _first_line(self.path)

    def locations(self, lines: np.ndarray | pd.Series) -> np.ndarray:
        """`orders.csv line 12` for each line number (`row 12` in Parquet)."""
        label = f"{self.path.name} {'row' if self.first_line == 1 else 'line'} "
        return (label + pd.Series(lines).astype("string")).to_numpy(dtype=object)

    def numbered(self) -> pd.DataFrame:
        """The rows with their line in the file (SOURCE_LINE)."""
        return self.frame.assign(**{SOURCE_LINE: np.arange(len(self.frame)) + self.first_line})


def source_path(source: Source) -> Path:
    settings = get_settings()
    folder = settings.source_dir or source.default_dir
    where = f"PROVLINE_SOURCE_DIR={settings.source_dir}" if settings.source_dir else f"{source.default_dir}"
    for suffix in SUFFIXES:
        candidate = folder / f"{source.name}{suffix}" if folder else None
        if candidate is not None and candidate.is_file():
            return candidate
    raise SourceError(f"source table {source.name!r}: no {source.name}.csv or {source.name}.parquet in {where}")


def read_source(source: Source, contract: type[pa.DataFrameModel]) -> SourceTable:
    """Read one source table, typed by its contract. Cached per file version within a process, and as a
    parsed copy across processes (see `_parsed_copy`)."""
    return read_file(source_path(source), contract, keep_parsed=True)


def read_file(path: Path, contract: type[pa.DataFrameModel], keep_parsed: bool = False) -> SourceTable:
    """Read one file of a source table (the whole table, or one day of it), typed by its contract."""
    stat = path.stat()
    return _read(path, stat.st_mtime_ns, stat.st_size, contract, keep_parsed)


@lru_cache(maxsize=8)
def _read(path: Path, _mtime_ns: int, _size: int, contract: type[pa.DataFrameModel], keep_parsed: bool) -> SourceTable:
    digest = hashlib.md5(path.read_bytes()).hexdigest()
    columns = contract.to_schema().columns
    dtypes = {name: str(column.dtype) for name, column in columns.items()}
    copy = _parsed_copy(path, digest, dtypes) if keep_parsed else None
    if copy is not None and copy.is_file():  # this very file, parsed before with these types
        try:
            frame = pd.read_parquet(copy)
        except OSError:  # removed meanwhile (the file changed under another process): parse it
            pass
        else:
            extra = tuple(c for c in pd.read_csv(path, dtype=str, nrows=0).columns if c not in columns)
            return SourceTable(path, frame, digest, extra)
    table = _parse_file(path, digest, dtypes)
    if copy is not None:
        _keep(path, table.frame, copy)
    return table


def _parsed_copy(path: Path, digest: str, dtypes: dict[str, str]) -> Path | None:
    """Where a source CSV's typed frame is kept once parsed, as Parquet, named by the file's content hash and
    the contract's types: a changed file or contract never finds an old copy. Reading it is several times
    faster than parsing the CSV again, which a one-day run would do for the whole file (docs/benchmarks.md)."""
    if path.suffix == ".parquet":
        return None
    types = hashlib.md5(json.dumps(dtypes).encode()).hexdigest()[:12]
    return get_settings().home / "cache" / "sources" / f"{path.name}.{digest}.{types}.parquet"


def _keep(source: Path, frame: pd.DataFrame, copy: Path) -> None:
    """Write the parsed copy atomically (a reader never sees half a file) in place of the file's older
    copies. A copy that cannot be written (a read-only home) only costs the next run its parse."""
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


def _parse_file(path: Path, digest: str, dtypes: dict[str, str]) -> SourceTable:
    try:
        return _parse_table(path, digest, dtypes)
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


def _parse_table(path: Path, digest: str, dtypes: dict[str, str]) -> SourceTable:
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
    return SourceTable(path, typed, digest, extra)


def _first_line(path: Path) -> int:
    return 1 if path.suffix == ".parquet" else 2


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


def rows_outside(keys: np.ndarray, partitions: dg.DailyPartitionsDefinition) -> np.ndarray:
    """The positions of the source rows that belong to no daily partition (no valid date, or a date outside
    the partitions): loading partition by partition would silently leave them out. `keys` are the rows'
    partition keys (None where the date is invalid)."""
    first, end = _bounds(partitions)
    labels = pd.Series(keys, dtype=object).fillna("")  # "" sorts before every day
    valid = (labels >= first) & (labels < end) if end else labels >= first
    return np.flatnonzero(~valid.to_numpy())


def describe_outside(table: SourceTable, positions: np.ndarray, partitions: dg.DailyPartitionsDefinition) -> str:
    first, end = _bounds(partitions)
    where = ", ".join(table.locations(positions[:10] + table.first_line)) + (" ..." if len(positions) > 10 else "")
    span = f"{first}..{end}" if end else f"from {first}"
    return (f"{len(positions)} row(s) of {table.path} have no valid date in {span} and belong to no partition, "
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
