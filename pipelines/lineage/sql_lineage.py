"""Column lineage of a DuckDB SQL asset, from sqlglot's qualified syntax tree.

sqlglot parses the SQL (DuckDB dialect) and ``qualify`` with the input schemas expands ``*``,
``alias.*`` and ``* EXCLUDE (..)``, gives every column its table (an unqualified column in a join goes
to the table that has it), turns USING into ON and GROUP BY aliases and positions into expressions.
Parameters (``$partition_start``, ``?``) are values: they carry no lineage. ``build_scope`` then
gives the query's scopes (CTEs, derived tables, subqueries, UNION branches).

What stays here: the transformation types of ColumnLineageDatasetFacet 1-2-0, which sqlglot does
not classify. Each column reference is followed through its scopes to the input tables; the path
from the reference up to its SELECT item, or to its clause, gives the type (see ``SqlLineage``).
SQL that sqlglot cannot analyse falls back to lineage by column name; nothing raises.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import NamedTuple

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, build_scope
from sqlglot.schema import MappingSchema

from pipelines.lineage.model import (
    AGGREGATED,
    IDENTITY,
    TRANSFORMED,
    ColumnSource,
    IndirectSource,
    IndirectSubtype,
    Transformation,
)
from pipelines.sql import scratch

log = logging.getLogger(__name__)

Schemas = tuple[tuple[str, tuple[str, ...]], ...]

# A query's clauses whose columns decide which rows the whole output has, or their order.
_CLAUSES: dict[str, IndirectSubtype] = {
    "where": "FILTER", "having": "FILTER", "qualify": "FILTER", "group": "GROUP_BY", "order": "SORT",
    "windows": "WINDOW",  # WINDOW w AS (..)
}  # fmt: skip
# Inside an expression: (parent node type, the parent's argument holding the column) -> subtype.
_INDIRECT: dict[tuple[type[exp.Expression], str], IndirectSubtype] = {
    (exp.Join, "on"): "JOIN",  # also USING: qualify rewrites it into ON
    (exp.Filter, "expression"): "FILTER",  # agg(..) FILTER (WHERE ..)
    (exp.Window, "partition_by"): "WINDOW",
    (exp.Window, "order"): "WINDOW",
    (exp.If, "this"): "CONDITIONAL",  # CASE WHEN <condition>, if(<condition>, ..)
    (exp.Case, "this"): "CONDITIONAL",  # CASE <operand> WHEN ..
}
_DIRECT_RANK = {IDENTITY: 0, TRANSFORMED: 1, AGGREGATED: 2}


class SqlLineage(NamedTuple):
    """Column lineage with transformation types (ColumnLineageDatasetFacet 1-2-0).

    fields: output column -> its inputs, DIRECT (IDENTITY / TRANSFORMATION / AGGREGATION) and
    field-level INDIRECT (CONDITIONAL in a CASE condition, FILTER in ``agg(..) FILTER (WHERE ..)`` or
    a scalar subquery's WHERE, WINDOW in ``OVER (..)``). indirect: inputs that affect the whole
    output: JOIN (ON / USING), FILTER (WHERE / HAVING / QUALIFY), GROUP_BY, SORT (ORDER BY), WINDOW
    (a named ``WINDOW`` clause).
    """

    fields: dict[str, list[ColumnSource]]
    indirect: list[IndirectSource]


def sql_lineage(sql: str, input_schemas: dict[str, list[str]], output_columns: list[str]) -> SqlLineage:
    """Column lineage of one SELECT over the input tables; never raises. Cached: an asset's SQL and
    schemas rarely change."""
    schemas = tuple((name, tuple(cols)) for name, cols in input_schemas.items())
    cached = _sql_lineage(sql, schemas, tuple(output_columns))
    return SqlLineage({c: list(s) for c, s in cached.fields.items()}, list(cached.indirect))


@functools.lru_cache(maxsize=256)
def _sql_lineage(sql: str, schemas: Schemas, output_columns: tuple[str, ...]) -> SqlLineage:
    try:
        return _Query(sql, schemas).lineage(output_columns)
    except Exception as exc:  # noqa: BLE001 - a parse or analysis failure only costs precision
        reason = str(exc).splitlines()[0]  # the rest is sqlglot's highlighted copy of the SQL
        log.warning("sqlglot could not analyse the SQL (%s); column lineage by name only", reason)
        return SqlLineage(_by_name(sql, schemas, output_columns), [])


def _by_name(sql: str, schemas: Schemas, output_columns: tuple[str, ...]) -> dict[str, list[ColumnSource]]:
    """An output column named like a column of exactly one input the SQL mentions; how is unknown."""
    used = [(t, cols) for t, cols in schemas if re.search(rf"\b{re.escape(t)}\b", sql, re.IGNORECASE)]
    result = {}
    for column in output_columns:
        found = [ColumnSource(t, c) for t, cols in used for c in cols if c.lower() == column.lower()]
        result[column] = found if len(found) == 1 else []
    return result


class _Query:
    def __init__(self, sql: str, schemas: Schemas):
        schema = MappingSchema(dialect="duckdb")
        for table, columns in schemas:
            schema.add_table(table, {c: "unknown" for c in columns})
        tree = qualify(sqlglot.parse_one(sql, read="duckdb"), schema=schema, dialect="duckdb")
        self.root = build_scope(tree)
        if self.root is None:
            raise ValueError("not a query")
        self.scopes = {id(s.expression): s for s in self.root.traverse()}
        # qualify lower-cases names; the facet keeps the input schemas' spelling.
        self.tables = {t.lower(): (t, {c.lower(): c for c in cols}) for t, cols in schemas}

    def lineage(self, output_columns: tuple[str, ...]) -> SqlLineage:
        fields = {c: sorted(set(self._output(self.root, c))) for c in output_columns}
        return SqlLineage(fields, self._indirect())

    # -- following a column to the input tables ---------------------------------------------------

    def _output(self, scope: Scope, name: str) -> list[ColumnSource]:
        """The inputs of one output column of a scope (of each branch, for a UNION)."""
        branches = _branches(scope)
        names = [s.alias_or_name.lower() for s in branches[0].selects]
        if name.lower() not in names:
            return []
        i = names.index(name.lower())
        return [source for b in branches for source in self._item(b.selects[i])]

    def _item(self, item: exp.Expression) -> list[ColumnSource]:
        """The inputs of one SELECT item, each with how it reaches the item's value."""
        return [
            ColumnSource(source.dataset, source.column, _compose(_how(column, item), source.transformation))
            for column in item.find_all(exp.Column)
            for source in self._column(column)
        ]

    def _column(self, column: exp.Column) -> list[ColumnSource]:
        """The inputs behind one column reference: an input table's column, or a CTE's or
        subquery's output column."""
        scope = self._scope_of(column)
        source = _source(scope, column.table)
        if isinstance(source, exp.Table):
            table, columns = self.tables.get(exp.table_name(source).lower(), ("", {}))
            name = columns.get(column.name.lower())
            return [ColumnSource(table, name, IDENTITY)] if name else []
        if isinstance(source, Scope):
            return self._output(source, column.name)
        if not column.table:  # ORDER BY an output column's alias
            return self._output(scope, column.name)
        return []

    def _scope_of(self, node: exp.Expression) -> Scope:
        query = node.find_ancestor(exp.Select, exp.SetOperation)
        return self.scopes.get(id(query), self.root)

    # -- inputs that affect the whole output ------------------------------------------------------

    def _indirect(self) -> list[IndirectSource]:
        found = [
            IndirectSource(source.dataset, source.column, subtype)
            for query in _row_queries(self.root)
            for subtype, clause in _clauses(query)
            for column in clause.find_all(exp.Column)
            for source in self._column(column)
        ]
        return list(dict.fromkeys(found))


def _source(scope: Scope | None, table: str) -> exp.Table | Scope | None:
    """What a column's table qualifier names, looked up from its scope outwards (correlation)."""
    while scope is not None:
        if table in scope.sources:
            return scope.sources[table]
        scope = scope.parent
    return None


def _branches(scope: Scope) -> list[exp.Select]:
    """The SELECTs that make a scope's rows: one, or each branch of a UNION."""
    if scope.set_operation_scopes:
        return [b for s in scope.set_operation_scopes for b in _branches(s)]
    return [scope.expression]


def _row_queries(scope: Scope) -> list[exp.Expression]:
    """The query and every CTE, derived table and UNION branch: what makes the output's rows (a
    subquery in an expression only makes a value)."""
    children = [*scope.cte_scopes, *scope.derived_table_scopes, *scope.set_operation_scopes]
    return [scope.expression, *(q for child in children for q in _row_queries(child))]


def _clauses(query: exp.Expression) -> list[tuple[IndirectSubtype, exp.Expression]]:
    """(subtype, clause) for each join condition, filter, grouping, sort and named window."""
    found = [("JOIN", join.args["on"]) for join in query.args.get("joins") or [] if join.args.get("on")]
    for key, subtype in _CLAUSES.items():
        clause = query.args.get(key)
        found.extend((subtype, part) for part in (clause if isinstance(clause, list) else [clause]) if part)
    group = query.args.get("group")
    if group and group.args.get("all"):  # GROUP BY ALL: every SELECT item with no aggregate
        found.extend(("GROUP_BY", item) for item in query.selects if not _aggregates(item))
    return found


def _how(column: exp.Column, item: exp.Expression) -> Transformation:
    """How a column reaches the value of the SELECT item it is in: INDIRECT where it only picks
    rows, orders a window or decides a CASE branch; else DIRECT, AGGREGATION under an aggregate,
    IDENTITY if the item is the column itself."""
    node, aggregated = column, False
    while node is not item and node.parent is not None:
        if subtype := _subtype(node):
            return Transformation("INDIRECT", subtype)
        node = node.parent
        aggregated = aggregated or _is_aggregate(node)
    if aggregated:
        return AGGREGATED
    return IDENTITY if item.unalias() is column else TRANSFORMED


def _subtype(node: exp.Expression) -> IndirectSubtype | None:
    """INDIRECT subtype of what sits at node, from where it sits in its parent."""
    if isinstance(node.parent, exp.Query):  # a clause of a (sub)query
        return _CLAUSES.get(node.arg_key or "")
    return _INDIRECT.get((type(node.parent), node.arg_key or ""))


def _compose(outer: Transformation, inner: Transformation) -> Transformation:
    """A column reaches a CTE's column by ``inner``, which reaches the output by ``outer``."""
    if outer.type == "INDIRECT":
        return outer
    if inner.type == "INDIRECT":
        return inner
    return max(outer, inner, key=_DIRECT_RANK.__getitem__)


def _aggregates(node: exp.Expression) -> bool:
    return any(_is_aggregate(n) for n in node.walk())


def _is_aggregate(node: exp.Expression) -> bool:
    if isinstance(node, exp.AggFunc):
        return True
    return isinstance(node, exp.Anonymous) and node.name.lower() in _duckdb_aggregates()


@functools.cache
def _duckdb_aggregates() -> frozenset[str]:
    """DuckDB's own aggregate functions: sqlglot parses some (mean, fsum, product, ..) as unknown."""
    with scratch() as con:
        rows = con.sql("SELECT function_name FROM duckdb_functions() WHERE function_type = 'aggregate'").fetchall()
    return frozenset(name.lower() for (name,) in rows)
