"""Column lineage from DuckDB-flavoured SQL, including what openlineage-sql alone gets wrong."""

from __future__ import annotations

import openlineage_sql

from pipelines.lineage.sql_lineage import column_lineage_from_sql

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
