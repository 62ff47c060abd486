"""Column lineage from DuckDB-flavoured SQL, including what openlineage-sql alone gets wrong."""

from __future__ import annotations

import re
from pathlib import Path

import openlineage_sql

from pipelines.lineage.model import IndirectSource
from pipelines.lineage.sql_lineage import SqlLineage, column_lineage_from_sql, sql_lineage

SCHEMAS = {
    "staging.flights": [
        "flight_id", "flight_date", "year", "month", "day", "hour", "minute", "dep_delay",
        "arr_delay", "carrier", "tailnum", "origin", "dest", "time_hour",
    ],
    "staging.weather": ["origin", "time_hour", "year", "temp", "wind_speed", "precip"],
    "staging.airlines": ["carrier", "name"],
    "staging.planes": ["tailnum", "year", "manufacturer"],
    "staging.airports": ["faa", "name", "lat", "lon"],
    "marts.flight_facts": ["flight_id", "flight_date", "carrier", "arr_delay", "dep_delay"],
}  # fmt: skip

FLIGHT_FACTS = """
WITH f AS (
    SELECT * FROM staging.flights WHERE flight_date = $partition_date
)
SELECT
    f.flight_id,
    f.flight_date,
    f.carrier,
    a.name AS carrier_name,
    o.name AS origin_name,
    d.name AS dest_name,
    make_timestamp(f.year, f.month, f.day, f.hour, f.minute, 0) AS scheduled_departure,
    f.dep_delay::DOUBLE AS dep_delay,
    p.year AS plane_year,
    w.temp,
    w.wind_speed
FROM f
LEFT JOIN staging.weather w ON w.origin = f.origin AND w.time_hour = f.time_hour
LEFT JOIN staging.airlines a ON a.carrier = f.carrier
LEFT JOIN staging.planes p ON p.tailnum = f.tailnum
LEFT JOIN staging.airports o ON o.faa = f.origin
LEFT JOIN staging.airports d ON d.faa = f.dest
"""

CARRIER_DAILY = """
SELECT
    carrier,
    flight_date AS day,
    count(*) AS flights,
    count(*) FILTER (WHERE arr_delay > 15) AS late_flights,
    avg(arr_delay) AS avg_arr_delay,
    avg(CASE WHEN arr_delay <= 15 THEN 1 ELSE 0 END) AS on_time_rate
FROM marts.flight_facts
WHERE flight_date = $partition_date
GROUP BY carrier, flight_date
"""


def parser_only(sql: str) -> dict[str, list[tuple[str, str]]]:
    meta = openlineage_sql.parse([sql], dialect="generic")
    return {cl.descendant.name: [(str(c.origin), c.name) for c in cl.lineage] for cl in meta.column_lineage}


def test_flight_facts_join_traces_through_a_star_cte() -> None:
    cols = [
        "flight_id", "flight_date", "carrier", "carrier_name", "origin_name", "dest_name",
        "scheduled_departure", "dep_delay", "plane_year", "temp", "wind_speed",
    ]  # fmt: skip
    lineage = column_lineage_from_sql(FLIGHT_FACTS, SCHEMAS, cols)
    assert lineage["flight_id"] == [("staging.flights", "flight_id")]
    assert lineage["carrier_name"] == [("staging.airlines", "name")]
    assert lineage["origin_name"] == [("staging.airports", "name")]
    assert lineage["dest_name"] == [("staging.airports", "name")]
    assert lineage["scheduled_departure"] == [
        ("staging.flights", c) for c in ["day", "hour", "minute", "month", "year"]
    ]
    assert lineage["dep_delay"] == [("staging.flights", "dep_delay")]
    assert lineage["plane_year"] == [("staging.planes", "year")]
    assert lineage["temp"] == [("staging.weather", "temp")]
    # What we fixed: alone, the parser stops at the CTE name for everything read through `f`.
    assert parser_only(FLIGHT_FACTS)["flight_id"] == [("f", "flight_id")]


def test_carrier_daily_aggregate() -> None:
    cols = ["carrier", "day", "flights", "late_flights", "avg_arr_delay", "on_time_rate"]
    lineage = column_lineage_from_sql(CARRIER_DAILY, SCHEMAS, cols)
    facts = "marts.flight_facts"
    assert lineage == {
        "carrier": [(facts, "carrier")],
        "day": [(facts, "flight_date")],
        "flights": [],  # count(*) reads no column
        "late_flights": [(facts, "arr_delay")],
        "avg_arr_delay": [(facts, "arr_delay")],
        "on_time_rate": [(facts, "arr_delay")],
    }


def test_select_star_and_exclude_are_expanded_from_the_input_schema() -> None:
    assert parser_only("SELECT * FROM staging.airlines") == {}
    assert column_lineage_from_sql("SELECT * FROM staging.airlines", SCHEMAS, ["carrier", "name"]) == {
        "carrier": [("staging.airlines", "carrier")],
        "name": [("staging.airlines", "name")],
    }
    sql = "SELECT p.* EXCLUDE (year), a.name FROM staging.planes p JOIN staging.airlines a ON a.carrier = p.tailnum"
    lineage = column_lineage_from_sql(sql, SCHEMAS, ["tailnum", "manufacturer", "name"])
    assert lineage == {
        "tailnum": [("staging.planes", "tailnum")],
        "manufacturer": [("staging.planes", "manufacturer")],
        "name": [("staging.airlines", "name")],
    }


def test_unqualified_join_column_goes_to_the_table_that_has_it() -> None:
    sql = "SELECT f.carrier, name FROM staging.flights f JOIN staging.airlines a ON f.carrier = a.carrier"
    assert parser_only(sql)["name"] == [("staging.flights", "name")]  # the parser's guess
    assert column_lineage_from_sql(sql, SCHEMAS, ["carrier", "name"])["name"] == [("staging.airlines", "name")]


def test_unparseable_sql_falls_back_to_unambiguous_names() -> None:
    lineage = column_lineage_from_sql("SELECT ??? garbage FROM staging.airlines", SCHEMAS, ["name", "carrier"])
    assert lineage == {"name": [("staging.airlines", "name")], "carrier": [("staging.airlines", "carrier")]}


# ---- transformation types (ColumnLineageDatasetFacet 1-2-0) ------------------------------------

REPO = Path(__file__).resolve().parents[2]
REAL_SCHEMAS = {
    **SCHEMAS,
    "staging.flights": [*SCHEMAS["staging.flights"], "flight", "scheduled_departure", "actual_departure",
                        "cancelled", "diverted", "distance"],
    "staging.weather": [*SCHEMAS["staging.weather"], "obs_date", "visib"],
    "staging.planes": [*SCHEMAS["staging.planes"], "model"],
    "marts.flight_facts": [*SCHEMAS["marts.flight_facts"], "airline_name", "cancelled", "origin", "dest", "distance"],
}  # fmt: skip


def real_sql(name: str) -> str:
    return (REPO / "assets" / "flights" / "sql" / f"{name}.sql").read_text()


def output_names(sql: str) -> list[str]:
    """The output columns of our one-item-a-line SELECTs: each line's last word."""
    select = sql.split("SELECT", 1)[1].split("\nFROM", 1)[0]
    return [re.findall(r"(\w+),?$", line.strip())[0] for line in select.splitlines() if line.strip()]


def subtypes(lineage: SqlLineage, column: str) -> set[tuple[str, str, str, str | None]]:
    return {(s.dataset, s.column, s.transformation.type, s.transformation.subtype) for s in lineage.fields[column]}


def test_parser_reports_no_transformations_nor_join_or_filter_columns() -> None:
    # What openlineage-sql 1.54 gives: (origin, name) per output column, nothing about how, and
    # nothing about the columns of ON / WHERE: those are ours.
    meta = openlineage_sql.parse([real_sql("flight_facts").replace("$partition_date", "NULL")], dialect="generic")
    assert {a for a in dir(meta.column_lineage[0]) if not a.startswith("_")} == {"descendant", "lineage"}
    assert {a for a in dir(meta.column_lineage[0].lineage[0]) if not a.startswith("_")} == {"name", "origin"}
    sources = {(str(c.origin), c.name) for cl in meta.column_lineage for c in cl.lineage}
    assert ("staging.planes", "tailnum") not in sources and ("staging.airports", "faa") not in sources


def test_flight_facts_join_keys_and_filter_are_indirect() -> None:
    sql = real_sql("flight_facts")
    lineage = sql_lineage(sql, REAL_SCHEMAS, output_names(sql))
    indirect = set(lineage.indirect)
    for table, column in [
        ("staging.planes", "tailnum"), ("staging.flights", "tailnum"),
        ("staging.airlines", "carrier"), ("staging.flights", "carrier"),
        ("staging.airports", "faa"), ("staging.flights", "origin"), ("staging.flights", "dest"),
        ("staging.weather", "origin"), ("staging.weather", "time_hour"), ("staging.flights", "time_hour"),
        ("staging.weather", "obs_date"),
    ]:  # fmt: skip
        assert IndirectSource(table, column, "JOIN") in indirect
    assert IndirectSource("staging.flights", "flight_date", "FILTER") in indirect
    # the comment above the SELECT ("Weather joins on the UTC scheduled hour") is no ON clause
    assert {s.subtype for s in indirect} == {"JOIN", "FILTER"} and len(indirect) == 12
    assert subtypes(lineage, "airline_name") == {("staging.airlines", "name", "DIRECT", "IDENTITY")}
    assert subtypes(lineage, "has_weather") == {("staging.weather", "origin", "DIRECT", "TRANSFORMATION")}
    # the DIRECT lineage is what column_lineage_from_sql says
    plain = column_lineage_from_sql(sql, REAL_SCHEMAS, output_names(sql))
    assert {c: sorted({(s.dataset, s.column) for s in v}) for c, v in lineage.fields.items()} == plain


def test_carrier_daily_grouping_filter_and_aggregates() -> None:
    sql = real_sql("carrier_daily_performance")
    lineage = sql_lineage(sql, REAL_SCHEMAS, output_names(sql))
    facts = "marts.flight_facts"
    assert lineage.indirect == [
        IndirectSource(facts, "flight_date", "FILTER"),
        IndirectSource(facts, "flight_date", "GROUP_BY"),
        IndirectSource(facts, "carrier", "GROUP_BY"),
    ]
    assert subtypes(lineage, "carrier") == {(facts, "carrier", "DIRECT", "IDENTITY")}
    assert subtypes(lineage, "airline_name") == {(facts, "airline_name", "DIRECT", "AGGREGATION")}
    assert subtypes(lineage, "mean_arr_delay") == {(facts, "arr_delay", "DIRECT", "AGGREGATION")}
    assert lineage.fields["flights"] == []  # count(*)
    # count(*) FILTER (WHERE cancelled): the column only selects rows
    assert subtypes(lineage, "cancelled") == {(facts, "cancelled", "INDIRECT", "FILTER")}
    # avg(CASE WHEN arr_delay <= 15 THEN 1.0 ELSE 0.0 END) FILTER (WHERE arr_delay IS NOT NULL)
    assert subtypes(lineage, "on_time_rate") == {
        (facts, "arr_delay", "INDIRECT", "CONDITIONAL"),
        (facts, "arr_delay", "INDIRECT", "FILTER"),
    }


def test_star_cte_filter_window_sort_using_and_output_alias() -> None:
    lineage = sql_lineage(FLIGHT_FACTS, SCHEMAS, ["flight_id", "dep_delay", "scheduled_departure"])
    assert IndirectSource("staging.flights", "flight_date", "FILTER") in lineage.indirect  # WHERE inside the CTE
    assert IndirectSource("staging.planes", "tailnum", "JOIN") in lineage.indirect
    assert subtypes(lineage, "flight_id") == {("staging.flights", "flight_id", "DIRECT", "IDENTITY")}
    assert subtypes(lineage, "dep_delay") == {("staging.flights", "dep_delay", "DIRECT", "TRANSFORMATION")}  # ::DOUBLE
    sql = """
        SELECT f.carrier, sum(f.arr_delay) OVER (PARTITION BY f.origin ORDER BY f.time_hour) AS running, a.name AS n
        FROM staging.flights f JOIN staging.airlines a USING (carrier)
        WHERE a.name <> 'x -- not a comment' AND f.dest IN (SELECT faa FROM staging.airports WHERE lat > 40)
        ORDER BY n
    """
    lineage = sql_lineage(sql, SCHEMAS, ["carrier", "running", "n"])
    assert subtypes(lineage, "running") == {
        ("staging.flights", "arr_delay", "DIRECT", "AGGREGATION"),
        ("staging.flights", "origin", "INDIRECT", "WINDOW"),
        ("staging.flights", "time_hour", "INDIRECT", "WINDOW"),
    }
    assert set(lineage.indirect) == {
        IndirectSource("staging.airlines", "carrier", "JOIN"),
        IndirectSource("staging.flights", "carrier", "JOIN"),
        IndirectSource("staging.airlines", "name", "FILTER"),
        IndirectSource("staging.flights", "dest", "FILTER"),
        IndirectSource("staging.airports", "faa", "FILTER"),  # IN (SELECT faa ...) filters too
        IndirectSource("staging.airports", "lat", "FILTER"),  # the subquery's WHERE
        IndirectSource("staging.airlines", "name", "SORT"),  # ORDER BY an output alias
    }


def test_transformation_analysis_never_raises() -> None:
    lineage = sql_lineage("SELECT ??? garbage FROM staging.airlines WHERE (", SCHEMAS, ["name"])
    assert [(s.dataset, s.column) for s in lineage.fields["name"]] == [("staging.airlines", "name")]
