"""Run a checks/ contract inside DuckDB: the same rules as pandera-on-pandas, where the data lives.

`failure_cases_sql` validates a table, view or registered frame in a DuckDB connection and returns
the failure cases in the shape of `pandera_failure_cases` below (rule, column, failure_case,
index) plus `row_key` (the key columns joined by "|"), so `pipelines.quality.validate` can use it
in place of pandera's pandas backend. `failure_cases_frame` does the same for a pandas frame.

How each rule becomes SQL (a predicate that is TRUE for a failing row):
- coercion (`schema`): the value is not null but does not parse as the contract's type
  (TRY_CAST, plus pandas' stricter integer parsing: "2.5" or "1.0" is not an integer);
- `nullable=False`: null (or NaN in a float column), like pandera;
- `unique=True`: a non-null value that occurs more than once (all occurrences fail, like pandera);
- built-in checks (gt, ge, lt, le, eq, ne, in_range, isin, notin, str_length, str_matches,
  str_contains, str_startswith, str_endswith) on the parsed value; nulls pass (pandera's ignore_na);
- dataframe checks: their SQL form, `statistics={"sql": ...}` on `@pa.dataframe_check` (see
  checks/rules.py); a row fails unless the expression is TRUE;
- references: a non-null value with no match in the referenced table (an anti-join), when that
  table is in the connection; otherwise every non-null value fails, as `validate` does without
  reference values.
All row-level rules run in one scan of the relation (after one hash aggregate per unique column, and
with a hash join per reference); only the failing rows leave DuckDB. A check
with no SQL form runs alone with pandera on pandas (`_pandera_fallback`).
Contract constants (bounds, sets, patterns, rule names) are bound parameters; identifiers are quoted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from types import SimpleNamespace

import duckdb
import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
from pandera.errors import SchemaError, SchemaErrors

from pipelines.quality.rules import SCHEMA_RULE, column_check_rule, contract_metadata
from pipelines.rows import Rows
from pipelines.sql import DUCKDB_TYPES, quote, scratch

CASE_COLUMNS = ["rule", "column", "failure_case", "index", "row_key"]
ROW = "__provline_row"
FRAME_VIEW = "__provline_validate"

_INTEGERS = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}
_FLOATS = {"FLOAT", "DOUBLE", "REAL"}
_TIMESTAMPS = {"TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "DATE"}


@dataclass(frozen=True)
class _Case:
    """One row-level rule: `fails` is TRUE for a failing row; `value` is what gets reported."""

    rule: str
    column: str | None
    fails: str
    value: str


@dataclass
class _Plan:
    cases: list[_Case] = field(default_factory=list)
    joins: list[str] = field(default_factory=list)
    params: dict[str, object] = field(default_factory=dict)
    table_level: list[dict] = field(default_factory=list)
    fallback: list[tuple[str, str | None, pa.Check]] = field(default_factory=list)
    parsed: dict[str, str] = field(default_factory=dict)
    unique: list[str] = field(default_factory=list)
    """Columns whose duplicates are looked for first, in a query of their own (see `_plan_unique`)."""
    """column -> its TRY_CAST expression: the scan sees typed values, the raw one as `__raw_<column>`."""

    def bind(self, value: object) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"${name}"


def failure_cases_sql(
    con: duckdb.DuckDBPyConnection,
    relation: str,
    contract: type[pa.DataFrameModel],
    *,
    key_columns: Sequence[str] = (),
    reference_tables: Mapping[str, str] | None = None,
    row_number: str | None = None,
    partition_column: str | None = None,
    carry: Sequence[str] = (),
) -> pd.DataFrame:
    """Failure cases of `contract` on `relation` (a table or view in `con`), computed in DuckDB.

    reference_tables: referenced table (as in `Config.metadata["references"]`) -> relation in `con`
        holding it; by default the same name, used when it exists in `con`.
    row_number: a column of `relation` holding the row number reported as `index`; by default
        `rowid` for a table, the scan position for a view.
    partition_column: a column of `relation` naming each row's partition (a range of partitions is
        validated in one scan): keys are unique within a partition, as when each is validated alone.
    carry: columns of `relation` that are not the rows' data (their partition, their line in a source file):
        not checked, and returned as they are with each failing row's cases.
    Returns columns rule, column, failure_case (text), index (row number; null for table-level
    cases such as a missing column), row_key and the `carry` columns.
    """
    schema = contract.to_schema()
    internal = {row_number, partition_column, *carry}
    source_types = {k: v for k, v in _column_types(con, relation).items() if k not in internal}
    plan = _Plan()
    _plan_columns(plan, schema, source_types)
    _plan_dataframe_checks(plan, schema, source_types)
    _plan_references(plan, con, contract, source_types, reference_tables or {})
    numbered = _numbered(con, relation, row_number)
    cases = _run(con, numbered, plan, [c for c in key_columns if c in source_types], partition_column, carry)
    if plan.fallback:
        cases = pd.concat([cases, _pandera_fallback(con, numbered, schema, plan.fallback, key_columns, carry)],
                          ignore_index=True)
    table_level = pd.DataFrame(plan.table_level, columns=CASE_COLUMNS)
    return pd.concat([table_level, cases], ignore_index=True) if not table_level.empty else cases


def failure_cases_frame(
    frame: pd.DataFrame | pyarrow.Table | Rows,
    contract: type[pa.DataFrameModel],
    *,
    key_columns: Sequence[str] = (),
    con: duckdb.DuckDBPyConnection | None = None,
    reference_tables: Mapping[str, str] | None = None,
    reference_values: Mapping[str, Iterable] | None = None,
    partition_column: str | None = None,
    carry: Sequence[str] = (),
) -> pd.DataFrame:
    """`failure_cases_sql` for a step's rows (a table of the scratch database, `index` its rowid), or for rows in
    memory, an Arrow table or a pandas frame (`index` a row's position): scanned by DuckDB in place, no copy.

    reference_values: rule name -> the values the referenced column holds (as `validate` takes them),
        for references whose table is not in `con`; registered as small relations for the anti-join.
    """
    with nullcontext(con) if con is not None else scratch() as con:
        views = [FRAME_VIEW]
        tables = dict(reference_tables or {})
        try:
            if isinstance(frame, Rows):
                con.execute(f"CREATE OR REPLACE TEMP VIEW {FRAME_VIEW} AS SELECT rowid AS {ROW}, * FROM {frame.name}")
            elif isinstance(frame, pd.DataFrame):
                con.register(FRAME_VIEW, frame.reset_index(drop=True).assign(**{ROW: np.arange(len(frame))}))
            else:
                con.register(FRAME_VIEW, frame.append_column(ROW, pyarrow.array(np.arange(frame.num_rows))))
            for ref in contract_metadata(contract).get("references", []):
                if reference_values is not None and ref.rule in reference_values:
                    view = f"__provline_ref_{ref.rule}"
                    con.register(view, pd.DataFrame({ref.table_column: list(reference_values[ref.rule])},
                                                    dtype=object))
                    views.append(view)
                    tables[ref.table] = view
            return failure_cases_sql(con, FRAME_VIEW, contract, key_columns=key_columns, reference_tables=tables,
                                     row_number=ROW, partition_column=partition_column, carry=carry)
        finally:
            if isinstance(frame, Rows):
                con.execute(f"DROP VIEW IF EXISTS {FRAME_VIEW}")
                views.remove(FRAME_VIEW)
            for view in views:
                con.unregister(view)


# --- planning: the contract as SQL predicates ------------------------------------------------


def _numbered(con: duckdb.DuckDBPyConnection, relation: str, row_number: str | None) -> str:
    """The relation with its row number as the first column, numbered in the scan (before any join)."""
    if row_number:
        return f"SELECT {quote(row_number)} AS {ROW}, * EXCLUDE ({quote(row_number)}) FROM {quote(relation)}"
    row = "rowid" if _is_table(con, relation) else "row_number() OVER () - 1"
    return f"SELECT {row} AS {ROW}, * FROM {quote(relation)}"


def _column_types(con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, str]:
    return {name: kind for name, kind, *_ in con.execute(f"DESCRIBE SELECT * FROM {quote(relation)}").fetchall()}


def _is_table(con: duckdb.DuckDBPyConnection, relation: str) -> bool:
    parts = relation.split(".")
    schema, name = (parts[0], parts[1]) if len(parts) == 2 else ("main", parts[0])
    query = "SELECT count(*) FROM duckdb_tables() WHERE schema_name = $s AND table_name = $t"
    return con.execute(query, {"s": schema, "t": name}).fetchone()[0] > 0


def _base_type(kind: str) -> str:
    return kind.split("(")[0].split(" WITH")[0].upper()


def _raw(name: str) -> str:
    return quote(f"__raw_{name}")


def _plan_columns(plan: _Plan, schema: pa.DataFrameSchema, source_types: dict[str, str]) -> None:
    for name in source_types:
        if schema.strict and name not in schema.columns and name != ROW:
            plan.table_level.append(_table_case(None, name))
    for name, column in schema.columns.items():
        if name not in source_types:
            if column.required:
                plan.table_level.append(_table_case(name, name))
            continue
        source = _base_type(source_types[name])
        _plan_type(plan, name, column, schema, source)
        value = quote(name)  # the typed value
        raw = _raw(name) if name in plan.parsed else value
        is_float = DUCKDB_TYPES.get(str(column.dtype)) in _FLOATS or source in _FLOATS
        if not column.nullable:
            plan.cases.append(_Case(f"{name}_not_null", name, _is_null(raw, source in _FLOATS), raw))
        if column.unique:
            plan.unique.append(name)
        for check in column.checks:
            predicate = _check_sql(plan, check, value)
            if predicate is None:
                plan.fallback.append((column_check_rule(name, check), name, check))
                continue
            null = _is_null(value, is_float)
            plan.cases.append(_Case(column_check_rule(name, check), name, f"NOT ({null}) AND NOT ({predicate})", value))


def _plan_type(plan: _Plan, name: str, column: pa.Column, schema: pa.DataFrameSchema, source: str) -> None:
    """Parse the column as the contract types it (like pandera's coercion); unparsable values fail `schema`."""
    target = DUCKDB_TYPES.get(str(column.dtype))
    raw = quote(name)
    if target is None or _same_type(source, target):
        return
    if not (schema.coerce or column.coerce):
        plan.table_level.append(_table_case(name, f"dtype('{column.dtype}')"))
        return
    parsed = f"TRY_CAST({raw} AS {target})"
    plan.parsed[name] = parsed
    if target == "VARCHAR":
        return  # anything renders as text, as pandas' astype(str) does
    raw = _raw(name)
    bad = f"TRY_CAST({raw} AS {target}) IS NULL"
    if target in _INTEGERS and source == "VARCHAR":
        bad += f" OR NOT regexp_full_match({raw}, '-?[0-9]+')"  # pandas rejects "2.5", "1.0", " 7"
    if target in _INTEGERS and source in _FLOATS:
        bad += f" OR {raw} <> trunc({raw})"  # pandas refuses to round 2.5 to an integer
    if target in _FLOATS and source == "VARCHAR":
        bad += f" OR isnan(TRY_CAST({raw} AS {target}))"
    plan.cases.append(_Case(SCHEMA_RULE, name, f"NOT ({_is_null(raw, source in _FLOATS)}) AND ({bad})", raw))


def _same_type(source: str, target: str) -> bool:
    return source == target or (target == "TIMESTAMP" and source in _TIMESTAMPS)


def _is_null(expr: str, is_float: bool) -> str:
    # pandera treats NaN as null in float columns
    return f"({expr} IS NULL OR isnan({expr}))" if is_float else f"{expr} IS NULL"


def _check_sql(plan: _Plan, check: pa.Check, value: str) -> str | None:
    """The SQL of a built-in pandera check (TRUE when the value passes), or None."""
    stats = check.statistics or {}
    name = check.name
    compare = {"greater_than": ">", "greater_than_or_equal_to": ">=", "less_than": "<",
               "less_than_or_equal_to": "<=", "equal_to": "=", "not_equal_to": "<>"}
    if name in compare:
        bound = stats.get("min_value", stats.get("max_value", stats.get("value")))
        return f"{value} {compare[name]} {plan.bind(bound)}"
    if name == "in_range":
        low = ">=" if stats.get("include_min", True) else ">"
        high = "<=" if stats.get("include_max", True) else "<"
        return (f"{value} {low} {plan.bind(stats['min_value'])} AND "
                f"{value} {high} {plan.bind(stats['max_value'])}")
    if name == "isin":
        return f"list_contains({plan.bind(list(stats['allowed_values']))}, {value})"
    if name == "notin":
        return f"NOT list_contains({plan.bind(list(stats['forbidden_values']))}, {value})"
    if name == "str_length":
        parts = []
        if stats.get("min_value") is not None:
            parts.append(f"length({value}) >= {plan.bind(stats['min_value'])}")
        if stats.get("max_value") is not None:
            parts.append(f"length({value}) <= {plan.bind(stats['max_value'])}")
        return " AND ".join(parts) or "TRUE"
    return _string_check_sql(plan, name, stats, value)


def check_predicate(check: pa.Check, value: str, literal: Callable[[object], str]) -> str | None:
    """The SQL a built-in check runs as here (TRUE when `value` passes; nulls are the caller's), its constants
    written by `literal` instead of bound: an exported contract (pipelines/contracts/) carries its SQL whole."""
    return _check_sql(SimpleNamespace(bind=literal), check, value)


def _string_check_sql(plan: _Plan, name: str, stats: dict, value: str) -> str | None:
    pattern = stats.get("pattern")
    if isinstance(pattern, re.Pattern):
        pattern = pattern.pattern
    if name == "str_matches":
        return f"regexp_matches({value}, {plan.bind('^(?:' + str(pattern) + ')')})"  # re.match: anchored at start
    if name == "str_contains":
        return f"regexp_matches({value}, {plan.bind(str(pattern))})"
    if name == "str_startswith":
        return f"starts_with({value}, {plan.bind(stats['string'])})"
    if name == "str_endswith":
        return f"ends_with({value}, {plan.bind(stats['string'])})"
    return None


def _plan_dataframe_checks(plan: _Plan, schema: pa.DataFrameSchema, source_types: dict[str, str]) -> None:
    for check in schema.checks:
        sql = (check.statistics or {}).get("sql")
        if sql is None:
            plan.fallback.append((check.name, None, check))
            continue
        # report the contract columns the expression reads (pandera reports every column of the row)
        words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql))
        columns = [c for c in schema.columns if c in words and c in source_types] or [None]
        for column in columns:
            value = quote(column) if column else "NULL"
            plan.cases.append(_Case(check.name, column, f"(({sql}) IS NOT TRUE)", value))


def _plan_references(
    plan: _Plan, con: duckdb.DuckDBPyConnection, contract: type[pa.DataFrameModel],
    source_types: dict[str, str], reference_tables: Mapping[str, str],
) -> None:
    for ref in contract_metadata(contract).get("references", []):
        if ref.column not in source_types:
            continue
        raw = f"t.{quote(ref.column)}"
        table = reference_tables.get(ref.table, ref.table)
        if not _exists(con, table):
            plan.cases.append(_Case(ref.rule, ref.column, f"{raw} IS NOT NULL", raw))
            continue
        alias = f"ref{len(plan.joins)}"
        plan.joins.append(
            f"LEFT JOIN (SELECT DISTINCT {quote(ref.table_column)} AS __ref FROM {quote(table)}) AS {alias} "
            f"ON {raw} = {alias}.__ref"
        )
        plan.cases.append(_Case(ref.rule, ref.column, f"{raw} IS NOT NULL AND {alias}.__ref IS NULL", raw))


def _exists(con: duckdb.DuckDBPyConnection, relation: str) -> bool:
    try:
        con.execute(f"DESCRIBE SELECT * FROM {quote(relation)}")
    except duckdb.CatalogException:
        return False
    return True


def _table_case(column: str | None, failure: str) -> dict:
    return {"rule": SCHEMA_RULE, "column": column, "failure_case": failure, "index": None, "row_key": None}


# --- execution: one scan, then unpivot the failing rows --------------------------------------


def _run(con: duckdb.DuckDBPyConnection, numbered: str, plan: _Plan, key_columns: list[str],
         partition_column: str | None, carry: Sequence[str] = ()) -> pd.DataFrame:
    if plan.parsed:  # checks see the typed values, the schema rule the raw ones
        replace = ", ".join(f"{expr} AS {quote(name)}" for name, expr in plan.parsed.items())
        raws = "".join(f", {quote(name)} AS {_raw(name)}" for name in plan.parsed)
        numbered = f"SELECT * REPLACE ({replace}){raws} FROM ({numbered})"
    _plan_unique(con, plan, numbered, partition_column)
    if not plan.cases:
        return pd.DataFrame(columns=[*CASE_COLUMNS, *carry])
    # the key columns ride along as they are; only a failing row's key is rendered as text
    keys = "".join(f"t.{quote(c)} AS k{i}, " for i, c in enumerate(key_columns))
    keys += "".join(f"t.{quote(c)} AS c{i}, " for i, c in enumerate(carry))
    carried = "".join(f", c{i} AS {quote(c)}" for i, c in enumerate(carry))
    key = " || '|' || ".join(f"coalesce(CAST(k{i} AS VARCHAR), 'None')" for i in range(len(key_columns))) or "NULL"
    values = sorted({case.value for case in plan.cases})
    alias = {value: f"v{i}" for i, value in enumerate(values)}
    flags = ", ".join(f"({case.fails}) AS f{i}" for i, case in enumerate(plan.cases))
    scan = (
        f"SELECT t.{ROW} AS row_no, {keys}"
        + "".join(f"{value} AS {alias[value]}, " for value in values)
        + f"{flags} FROM t {' '.join(plan.joins)}"
    )
    any_failed = " OR ".join(f"f{i}" for i in range(len(plan.cases)))
    unions = " UNION ALL ".join(
        f"SELECT {plan.bind(case.rule)} AS rule, {plan.bind(case.column)}::VARCHAR AS \"column\", "
        f"CAST({alias[case.value]} AS VARCHAR) AS failure_case, row_no AS \"index\", {key} AS row_key{carried} "
        f"FROM failing WHERE f{i}"
        for i, case in enumerate(plan.cases)
    )
    # t inlined (buffering every column costs more than a second scan); the few failing rows kept once
    sql = (f"WITH t AS NOT MATERIALIZED ({numbered}), "
           f"failing AS MATERIALIZED (SELECT * FROM ({scan}) WHERE {any_failed}) {unions}")
    cases = con.execute(sql, plan.params).df()
    cases["index"] = cases["index"].astype("Int64")
    return cases


def _plan_unique(con: duckdb.DuckDBPyConnection, plan: _Plan, numbered: str, partition_column: str | None) -> None:
    """A key is unique in almost every run: one hash aggregate of the column alone proves it (far cheaper
    than a window, or than this aggregate as a join inside the big scan); only duplicates are joined back.
    With a partition column, a key is unique within its partition."""
    for name in plan.unique:
        value = quote(name)
        within = f"{quote(partition_column)} AS __dup_partition, " if partition_column else ""
        duplicated = (f"SELECT {within}{value} AS __dup FROM ({numbered}) WHERE {value} IS NOT NULL "
                      "GROUP BY ALL HAVING count(*) > 1")
        if con.execute(f"SELECT count(*) FROM ({duplicated})").fetchone()[0] == 0:
            continue
        alias = f"dup{len(plan.joins)}"
        on = f"t.{value} = {alias}.__dup"
        if partition_column:
            on += f" AND t.{quote(partition_column)} = {alias}.__dup_partition"
        plan.joins.append(f"LEFT JOIN ({duplicated}) AS {alias} ON {on}")
        plan.cases.append(_Case(f"{name}_unique", name, f"{alias}.__dup IS NOT NULL", value))


def _pandera_fallback(
    con: duckdb.DuckDBPyConnection, numbered: str, schema: pa.DataFrameSchema,
    checks: list[tuple[str, str | None, pa.Check]], key_columns: Sequence[str], carry: Sequence[str] = (),
) -> pd.DataFrame:
    """Checks with no SQL form: run each alone with pandera on pandas (reads the relation once)."""
    frame = con.execute(numbered).df()
    rows = frame.pop(ROW).to_numpy()
    carried = frame[list(carry)]
    frame = frame.drop(columns=list(carry))
    try:
        frame = schema.coerce_dtype(frame)
    except (SchemaError, SchemaErrors):
        pass  # coercion failures are the `schema` rule's, reported by SQL
    out = []
    for rule, column, check in checks:
        single = (pa.DataFrameSchema({column: pa.Column(checks=[check])}) if column
                  else pa.DataFrameSchema(checks=[check]))
        try:
            single.validate(frame, lazy=True)
            continue
        except SchemaErrors as errors:
            found = errors.failure_cases
        positions = found["index"].dropna().astype(int).to_numpy()
        out.append(pd.DataFrame({
            "rule": rule, "column": found.loc[found["index"].notna(), "column"].to_numpy(),
            "failure_case": [None if pd.isna(v) else str(v) for v in found.loc[found["index"].notna(), "failure_case"]],
            "index": pd.array(rows[positions], dtype="Int64"),
            "row_key": [_key(frame, key_columns, p) for p in positions],
            **{c: carried[c].to_numpy()[positions] for c in carry},
        }))
        table_level = found[found["index"].isna()]
        out += [pd.DataFrame([{"rule": rule, "column": column, "failure_case": str(v), "index": None,
                               "row_key": None} for v in table_level["failure_case"]])] if len(table_level) else []
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=[*CASE_COLUMNS, *carry])


def _key(frame: pd.DataFrame, key_columns: Sequence[str], position: int) -> str | None:
    if not key_columns:
        return None
    return "|".join(str(frame[c].iat[position]) for c in key_columns if c in frame)


# --- the reference: pandera on pandas --------------------------------------------------------


def _rule_for(case: pd.Series, schema: pa.DataFrameSchema) -> str:
    check, column = str(case["check"]), case["column"]
    if case["schema_context"] == "Column" and column in schema.columns:
        if check == "not_nullable":
            return f"{column}_not_null"
        if check == "field_uniqueness":
            return f"{column}_unique"
        if check.startswith(("coerce_dtype", "dtype(")):
            return SCHEMA_RULE
        number = case["check_number"]
        if number is not None and not pd.isna(number):
            return column_check_rule(column, schema.columns[column].checks[int(number)])
    if check in ("column_in_dataframe", "column_in_schema", "dataframe_column_labels_unique"):
        return SCHEMA_RULE
    return check


def pandera_failure_cases(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> pd.DataFrame:
    """The reference semantics: the same contract run by pandera's pandas backend, in the shape of
    `failure_cases_sql` without row_key. The tests prove the SQL path equal to it; the benchmark
    times it as the baseline."""
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as errors:
        cases = errors.failure_cases.copy()
    except SchemaError as error:  # a non-lazy error (e.g. a check that raised)
        cases = pd.DataFrame([{"schema_context": "DataFrameSchema", "column": None, "check": str(error.check),
                               "check_number": None, "failure_case": str(error), "index": None}])
    else:
        return pd.DataFrame(columns=["rule", "column", "failure_case", "index"])
    cases["rule"] = [_rule_for(case, schema) for _, case in cases.iterrows()]
    # a dataframe-level check reports each failing row once per column: keep one case per row
    frame_level = (cases["schema_context"] == "DataFrameSchema") & cases["index"].notna()
    cases.loc[frame_level, ["column", "failure_case"]] = None
    cases = cases[~(frame_level & cases.duplicated(["rule", "index"]))]
    return cases[["rule", "column", "failure_case", "index"]].reset_index(drop=True)
