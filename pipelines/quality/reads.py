"""What a contract's rules read from the warehouse besides the rows being validated: the values of the
columns its references point to, and the row counts of the input partitions `row_count_matches` compares
with. Both are read on the factory's connection, before the transform runs."""

from __future__ import annotations

from collections.abc import Callable

import duckdb
import pandera.pandas as pa

from pipelines.quality.rules import contract_metadata
from pipelines.sql import partition_filter, partition_label, quote, table_exists


class MissingTable(LookupError):
    """A table the contract's rules read was never materialized."""


def reference_values(con: duckdb.DuckDBPyConnection, table: str, contract: type[pa.DataFrameModel]) -> dict[str, set]:
    """Rule name -> the values its referenced column holds."""
    values = {}
    for ref in contract_metadata(contract).get("references", []):
        if not table_exists(con, ref.table):
            raise MissingTable(f"{table}'s contract checks {ref.column} against {ref.table}, which has never "
                               f"been materialized: materialize it first")
        rows = con.execute(f"SELECT DISTINCT {quote(ref.table_column)} FROM {quote(ref.table)}").fetchall()
        values[ref.rule] = {row[0] for row in rows}
    return values


def expected_rows(
    con: duckdb.DuckDBPyConnection, contract: type[pa.DataFrameModel], partitions: list[str],
    partition_expr_of: Callable[[str], str | None],
) -> dict[str, int] | None:
    """For `row_count_matches`: per partition, the row count of that partition of the counted input."""
    counted = contract_metadata(contract).get("row_count_matches")
    if not counted:
        return None
    expr = partition_expr_of(counted)
    where, params = partition_filter(partitions, expr)
    label = partition_label(expr) if expr else "''"
    rows = dict(con.execute(f"SELECT {label}, count(*) FROM {quote(counted)} WHERE {where} GROUP BY ALL",
                            params).fetchall())
    return {p: int(rows.get(p, 0)) if expr else int(sum(rows.values())) for p in partitions}
