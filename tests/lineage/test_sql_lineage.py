"""Column lineage of DuckDB SQL: what `sql_lineage` returns, exactly, for each SQL case.

Each case lists every output column with all its inputs and transformation types, and the whole
dataset-level INDIRECT list. The real asset SQL is read from assets/flights/sql/ (the partition range
``>= $partition_start AND < $partition_end``, weather joined on the flight's own date).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest
import sqlglot

from pipelines.lineage.model import AGGREGATED, IDENTITY, TRANSFORMED, ColumnSource, IndirectSource, Transformation
from pipelines.lineage.sql_lineage import sql_lineage

SQL_DIR = Path(__file__).resolve().parents[2] / "assets" / "flights" / "sql"

FLIGHTS, WEATHER, AIRLINES, PLANES, AIRPORTS = (
    "staging.flights", "staging.weather", "staging.airlines", "staging.planes", "staging.airports"
)  # fmt: skip
FACTS = "marts.flight_facts"
SCHEMAS = {
    FLIGHTS: [
        "flight_id", "flight_date", "year", "month", "day", "hour", "minute", "dep_delay", "arr_delay",
        "carrier", "flight", "tailnum", "origin", "dest", "time_hour", "scheduled_departure",
        "actual_departure", "cancelled", "diverted", "distance",
    ],
    WEATHER: ["origin", "time_hour", "obs_date", "year", "temp", "wind_speed", "precip", "visib"],
    AIRLINES: ["carrier", "name"],
    PLANES: ["tailnum", "year", "manufacturer", "model"],
    AIRPORTS: ["faa", "name", "lat", "lon"],
    FACTS: [
        "flight_id", "flight_date", "carrier", "airline_name", "cancelled", "origin", "dest", "arr_delay",
        "dep_delay", "distance",
    ],
}  # fmt: skip

CONDITIONAL = Transformation("INDIRECT", "CONDITIONAL")
FILTER = Transformation("INDIRECT", "FILTER")
WINDOW = Transformation("INDIRECT", "WINDOW")
UNKNOWN = None  # lineage by name after a parse failure: how the column is used is not known


class Case(NamedTuple):
    sql: str
    fields: dict[str, set[tuple[str, str, Transformation | None]]]
    """every output column (in SELECT order) -> its (input dataset, column, transformation)"""
    indirect: set[tuple[str, str, str]]
    """the dataset-level (input dataset, column, INDIRECT subtype)"""


def identity(dataset: str, *columns: str) -> dict[str, set[tuple[str, str, Transformation | None]]]:
    """Output columns copied as they are from same-named input columns."""
    return {column: {(dataset, column, IDENTITY)} for column in columns}


def joins(*pairs: tuple[str, str]) -> set[tuple[str, str, str]]:
    return {(dataset, column, "JOIN") for dataset, column in pairs}


def asset_sql(name: str) -> str:
    """An asset's SQL file, as the factory runs it."""
    sql = (SQL_DIR / f"{name}.sql").read_text()
    assert "$partition_start" in sql and "$partition_end" in sql
    return sql


FLIGHT_FACTS_JOINS = joins(
    (AIRLINES, "carrier"), (FLIGHTS, "carrier"), (PLANES, "tailnum"), (FLIGHTS, "tailnum"),
    (AIRPORTS, "faa"), (FLIGHTS, "origin"), (FLIGHTS, "dest"),
    (WEATHER, "origin"), (FLIGHTS, "origin"), (WEATHER, "time_hour"), (FLIGHTS, "time_hour"), (WEATHER, "obs_date"),
)  # fmt: skip


def flight_facts() -> Case:
    fields = {
        **identity(FLIGHTS, "flight_id", "flight_date", "carrier"),
        "airline_name": {(AIRLINES, "name", IDENTITY)},
        **identity(FLIGHTS, "flight", "tailnum"),
        "plane_manufacturer": {(PLANES, "manufacturer", IDENTITY)},
        "plane_model": {(PLANES, "model", IDENTITY)},
        "plane_year": {(PLANES, "year", IDENTITY)},
        **identity(FLIGHTS, "origin"),
        "origin_name": {(AIRPORTS, "name", IDENTITY)},
        **identity(FLIGHTS, "dest"),
        "dest_name": {(AIRPORTS, "name", IDENTITY)},
        **identity(FLIGHTS, "scheduled_departure", "actual_departure", "cancelled", "diverted", "dep_delay"),
        **identity(FLIGHTS, "arr_delay", "distance"),
        **identity(WEATHER, "temp", "wind_speed", "precip", "visib"),
        "has_weather": {(WEATHER, "origin", TRANSFORMED)},  # w.origin IS NOT NULL
    }
    # weather joins on the flight's own date
    indirect = FLIGHT_FACTS_JOINS | joins((FLIGHTS, "flight_date")) | {(FLIGHTS, "flight_date", "FILTER")}
    return Case(asset_sql("flight_facts"), fields, indirect)


def carrier_daily_performance() -> Case:
    fields = {
        **identity(FACTS, "flight_date", "carrier"),
        "airline_name": {(FACTS, "airline_name", AGGREGATED)},  # any_value(..)
        "flights": set(),  # count(*) reads no column
        "cancelled": {(FACTS, "cancelled", FILTER)},  # count(*) FILTER (WHERE cancelled)
        # avg(CASE WHEN arr_delay <= 15 THEN 1.0 ELSE 0.0 END) FILTER (WHERE arr_delay IS NOT NULL)
        "on_time_rate": {(FACTS, "arr_delay", CONDITIONAL), (FACTS, "arr_delay", FILTER)},
        "mean_dep_delay": {(FACTS, "dep_delay", AGGREGATED)},
        "mean_arr_delay": {(FACTS, "arr_delay", AGGREGATED)},
    }
    indirect = {(FACTS, "flight_date", "FILTER"), (FACTS, "flight_date", "GROUP_BY"), (FACTS, "carrier", "GROUP_BY")}
    return Case(asset_sql("carrier_daily_performance"), fields, indirect)


def route_daily() -> Case:
    fields = {
        **identity(FACTS, "flight_date", "origin", "dest"),
        "flights": set(),
        "cancelled": {(FACTS, "cancelled", FILTER)},
        "carriers": {(FACTS, "carrier", AGGREGATED)},  # count(DISTINCT carrier)
        "mean_arr_delay": {(FACTS, "arr_delay", AGGREGATED)},
        "distance": {(FACTS, "distance", AGGREGATED)},  # max(distance)
    }
    indirect = {(FACTS, c, "GROUP_BY") for c in ("flight_date", "origin", "dest")} | {(FACTS, "flight_date", "FILTER")}
    return Case(asset_sql("route_daily"), fields, indirect)


CASES: dict[str, Case] = {
    "star_cte_and_joins": Case(
        """
        WITH f AS (
            SELECT * FROM staging.flights WHERE flight_date = $partition_date
        )
        SELECT
            f.flight_id,
            a.name AS carrier_name,
            o.name AS origin_name,
            make_timestamp(f.year, f.month, f.day, f.hour, f.minute, 0) AS scheduled_departure,
            f.dep_delay::DOUBLE AS dep_delay,
            p.year AS plane_year,
            w.temp
        FROM f
        LEFT JOIN staging.weather w ON w.origin = f.origin AND w.time_hour = f.time_hour
        LEFT JOIN staging.airlines a ON a.carrier = f.carrier
        LEFT JOIN staging.planes p ON p.tailnum = f.tailnum
        LEFT JOIN staging.airports o ON o.faa = f.origin
        """,
        {
            "flight_id": {(FLIGHTS, "flight_id", IDENTITY)},  # through the star CTE, not "f"
            "carrier_name": {(AIRLINES, "name", IDENTITY)},
            "origin_name": {(AIRPORTS, "name", IDENTITY)},
            "scheduled_departure": {(FLIGHTS, c, TRANSFORMED) for c in ("year", "month", "day", "hour", "minute")},
            "dep_delay": {(FLIGHTS, "dep_delay", TRANSFORMED)},  # a cast
            "plane_year": {(PLANES, "year", IDENTITY)},
            "temp": {(WEATHER, "temp", IDENTITY)},
        },
        joins(
            (WEATHER, "origin"), (FLIGHTS, "origin"), (WEATHER, "time_hour"), (FLIGHTS, "time_hour"),
            (AIRLINES, "carrier"), (FLIGHTS, "carrier"), (PLANES, "tailnum"), (FLIGHTS, "tailnum"), (AIRPORTS, "faa"),
        )  # fmt: skip
        | {(FLIGHTS, "flight_date", "FILTER")},  # the CTE's WHERE filters every output row
    ),
    "select_star": Case("SELECT * FROM staging.airlines", identity(AIRLINES, "carrier", "name"), set()),
    "alias_star_exclude": Case(
        "SELECT p.* EXCLUDE (year), a.name FROM staging.planes p JOIN staging.airlines a ON a.carrier = p.tailnum",
        {**identity(PLANES, "tailnum", "manufacturer", "model"), **identity(AIRLINES, "name")},
        joins((AIRLINES, "carrier"), (PLANES, "tailnum")),
    ),
    "unqualified_column_in_a_join": Case(
        # `name` is only in airlines, although flights comes first
        "SELECT f.carrier, name FROM staging.flights f JOIN staging.airlines a ON f.carrier = a.carrier",
        {**identity(FLIGHTS, "carrier"), **identity(AIRLINES, "name")},
        joins((FLIGHTS, "carrier"), (AIRLINES, "carrier")),
    ),
    "window_using_in_subquery_and_sort_by_alias": Case(
        """
        SELECT f.carrier, sum(f.arr_delay) OVER (PARTITION BY f.origin ORDER BY f.time_hour) AS running, a.name AS n
        FROM staging.flights f JOIN staging.airlines a USING (carrier)
        WHERE a.name <> 'x -- not a comment' AND f.dest IN (SELECT faa FROM staging.airports WHERE lat > 40)
        ORDER BY n
        """,
        {
            **identity(FLIGHTS, "carrier"),
            "running": {
                (FLIGHTS, "arr_delay", AGGREGATED), (FLIGHTS, "origin", WINDOW), (FLIGHTS, "time_hour", WINDOW)
            },
            "n": {(AIRLINES, "name", IDENTITY)},
        },
        joins((AIRLINES, "carrier"), (FLIGHTS, "carrier"))
        | {(AIRLINES, "name", "FILTER"), (FLIGHTS, "dest", "FILTER")}
        | {(AIRPORTS, "faa", "FILTER"), (AIRPORTS, "lat", "FILTER")}  # the IN subquery decides rows too
        | {(AIRLINES, "name", "SORT")},  # ORDER BY an output alias
    ),
    "unqualified_using_column": Case(
        # DuckDB's `carrier` of a USING join is either side's (COALESCE for a FULL join)
        "SELECT carrier, name FROM staging.flights JOIN staging.airlines USING (carrier)",
        {
            "carrier": {(FLIGHTS, "carrier", TRANSFORMED), (AIRLINES, "carrier", TRANSFORMED)},
            **identity(AIRLINES, "name"),
        },
        joins((FLIGHTS, "carrier"), (AIRLINES, "carrier")),
    ),
    "qualify": Case(
        "SELECT carrier, flight_id FROM staging.flights"
        " QUALIFY row_number() OVER (PARTITION BY carrier ORDER BY dep_delay DESC) = 1",
        identity(FLIGHTS, "carrier", "flight_id"),
        {(FLIGHTS, "carrier", "FILTER"), (FLIGHTS, "dep_delay", "FILTER")},
    ),
    "group_by_all_and_a_duckdb_aggregate": Case(
        "SELECT carrier, origin, mean(arr_delay) AS d FROM staging.flights GROUP BY ALL",
        {**identity(FLIGHTS, "carrier", "origin"), "d": {(FLIGHTS, "arr_delay", AGGREGATED)}},
        {(FLIGHTS, "carrier", "GROUP_BY"), (FLIGHTS, "origin", "GROUP_BY")},
    ),
    "column_computed_in_a_cte_filters_and_aggregates": Case(
        "WITH c AS (SELECT carrier, arr_delay - dep_delay AS gain FROM staging.flights)"
        " SELECT carrier, sum(gain) AS g FROM c WHERE gain > 0 GROUP BY 1",
        {**identity(FLIGHTS, "carrier"), "g": {(FLIGHTS, "arr_delay", AGGREGATED), (FLIGHTS, "dep_delay", AGGREGATED)}},
        {(FLIGHTS, "arr_delay", "FILTER"), (FLIGHTS, "dep_delay", "FILTER"), (FLIGHTS, "carrier", "GROUP_BY")},
    ),
    "plain_copy_of_a_column_a_cte_computed": Case(
        "WITH c AS (SELECT CASE WHEN arr_delay > 15 THEN 'late' ELSE 'ok' END AS status, dep_delay * 60 AS dep_s"
        " FROM staging.flights) SELECT status, dep_s FROM c",
        {"status": {(FLIGHTS, "arr_delay", CONDITIONAL)}, "dep_s": {(FLIGHTS, "dep_delay", TRANSFORMED)}},
        set(),
    ),
    "derived_table_sorted_by_an_aggregate": Case(
        "SELECT t.c, t.n FROM (SELECT carrier AS c, count(*) AS n FROM staging.flights GROUP BY carrier) AS t"
        " ORDER BY t.n DESC",
        {"c": {(FLIGHTS, "carrier", IDENTITY)}, "n": set()},
        {(FLIGHTS, "carrier", "GROUP_BY")},
    ),
    "union_branches_by_position": Case(
        "SELECT carrier AS code, name FROM staging.airlines UNION ALL SELECT faa, name FROM staging.airports",
        {
            "code": {(AIRLINES, "carrier", IDENTITY), (AIRPORTS, "faa", IDENTITY)},
            "name": {(AIRLINES, "name", IDENTITY), (AIRPORTS, "name", IDENTITY)},
        },
        set(),
    ),
    "correlated_scalar_subquery": Case(
        # its WHERE picks the value of one column, not the output's rows
        "SELECT f.flight_id, (SELECT max(a.lat) FROM staging.airports a WHERE a.faa = f.origin) AS lat"
        " FROM staging.flights f",
        {
            **identity(FLIGHTS, "flight_id"),
            "lat": {(AIRPORTS, "lat", AGGREGATED), (AIRPORTS, "faa", FILTER), (FLIGHTS, "origin", FILTER)},
        },
        set(),
    ),
    "case_operand_and_if": Case(
        "SELECT CASE carrier WHEN 'AA' THEN dep_delay ELSE 0 END AS d, if(arr_delay > 0, 'late', 'ok') AS status"
        " FROM staging.flights",
        {
            "d": {(FLIGHTS, "carrier", CONDITIONAL), (FLIGHTS, "dep_delay", TRANSFORMED)},
            "status": {(FLIGHTS, "arr_delay", CONDITIONAL)},
        },
        set(),
    ),
    "named_window": Case(
        "SELECT carrier, sum(arr_delay) OVER w AS s FROM staging.flights"
        " WINDOW w AS (PARTITION BY origin ORDER BY time_hour)",
        {**identity(FLIGHTS, "carrier"), "s": {(FLIGHTS, "arr_delay", AGGREGATED)}},
        {(FLIGHTS, "origin", "WINDOW"), (FLIGHTS, "time_hour", "WINDOW")},
    ),
    "parameters_are_values": Case(
        "SELECT flight_id FROM staging.flights WHERE flight_date = ? AND carrier = $1",
        identity(FLIGHTS, "flight_id"),
        {(FLIGHTS, "flight_date", "FILTER"), (FLIGHTS, "carrier", "FILTER")},
    ),
    "parse_failure_falls_back_to_names_of_the_tables_named": Case(
        # year: only planes among the tables the SQL names; name: airlines and airports both have it
        "SELECT ??? garbage FROM staging.planes, staging.airlines, staging.airports WHERE (",
        {"year": {(PLANES, "year", UNKNOWN)}, "carrier": {(AIRLINES, "carrier", UNKNOWN)}, "name": set()},
        set(),
    ),
    "flight_facts": flight_facts(),
    "carrier_daily_performance": carrier_daily_performance(),
    "route_daily": route_daily(),
}


def as_sets(fields: dict[str, list[ColumnSource]]) -> dict[str, set[tuple[str, str, Transformation | None]]]:
    """Each output column's sources as a set, after checking none is listed twice."""
    for column, sources in fields.items():
        assert len(set(sources)) == len(sources), f"{column}: duplicate sources {sources}"
    return {column: {tuple(source) for source in sources} for column, sources in fields.items()}


@pytest.mark.parametrize("name", CASES)
def test_sql_lineage(name: str) -> None:
    case = CASES[name]
    lineage = sql_lineage(case.sql, SCHEMAS, list(case.fields))
    assert as_sets(lineage.fields) == case.fields
    assert len(set(lineage.indirect)) == len(lineage.indirect), lineage.indirect
    assert {tuple(source) for source in lineage.indirect} == case.indirect


@pytest.mark.parametrize("name", ["flight_facts", "carrier_daily_performance", "route_daily"])
def test_asset_cases_cover_every_output_column(name: str) -> None:
    case = CASES[name]
    assert list(case.fields) == sqlglot.parse_one(case.sql, read="duckdb").named_selects


def test_results_are_copies_of_the_cached_lineage() -> None:
    case = CASES["select_star"]
    first = sql_lineage(case.sql, SCHEMAS, list(case.fields))
    first.fields["name"].clear()
    first.indirect.append(IndirectSource(AIRLINES, "name", "FILTER"))
    again = sql_lineage(case.sql, SCHEMAS, list(case.fields))
    assert as_sets(again.fields) == case.fields and again.indirect == []
