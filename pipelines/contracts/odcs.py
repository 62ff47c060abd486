"""A table's contract (its pandera model and its spec) as an Open Data Contract Standard v3.1.0 document.

The mapping, and why:
- One document per table, one schema object in it (the table), one property per contract column: the DuckDB
  type as `physicalType`, its ODCS `logicalType`, the field's description, the spec's key columns as the
  primary key, the daily partition's column(s) as `partitioned` (a raw table's partition is an expression over
  year, month and day: all three, in order; the expression itself is a custom property).
- `required`, `unique`, ranges (`logicalTypeOptions` minimum/maximum, minLength/maxLength) are what the
  published table guarantees: they come from the rules that block or quarantine. A warn rule's rows stay in
  the table, so its constraint is a quality rule only (severity warning), never a schema fact.
- Every rule of the contract is one `quality` entry, `id` = provline's rule name (datacontract-cli reports it as
  `qualityId`), `severity` error (blocking) or warning (quarantine, warn), and the behaviour itself as the custom
  property `behaviour`. A rule that means an ODCS library metric is one (`nullValues`, `duplicateValues`,
  `invalidValues` with `validValues`, `rowCount`); any other row-level rule is `type: sql`, counting the rows
  for which the SQL provline runs is not TRUE, with that predicate kept as the custom property `rowCheck`
  (what `provline contract import` reads back). A quarantining rule's failing rows never reach the table: its
  SQL counts over the table and its quarantine table together (the rows provline validated), so a reader sees
  the quarantined defect. Rules about versions (schema drift, volume drop) or the source file are `type: text`.
  A rule with a threshold (`max_failure_rate`) states it as ODCS does: `mustBeLessOrEqualTo` that share in
  `unit: percent` (its SQL gives the percentage of the table's rows that fail), and the custom property
  `maxFailureRate`, which `provline contract import` reads back.
- `slaProperties`: the freshness policy (hours since the last materialization). No `element`: the policy
  measures when provline last wrote, not the data's own timestamps (a historical dataset's are years old).
- `team` and `domain`: the domain's declaration (pipelines/domain.py).
- `servers`: the warehouse as configured, DuckDB file or DuckLake catalog, never a user or password.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import pandera.pandas as pa

from pipelines.domain import Domain
from pipelines.quality import BLOCKING, QUARANTINE, WARN, Rule, contract_metadata
from pipelines.quality.rules import DRIFT_RULE, SCHEMA_RULE, VOLUME_RULE, allow_empty, column_check_rule, max_row_drop
from pipelines.quality.runner import check_predicate
from pipelines.spec import PROJECT_ROOT, TableSpec
from pipelines.sql import columns_named, quote
from pipelines.warehouse import Warehouse, quarantine_table

API_VERSION = "v3.1.0"
SEVERITY = {BLOCKING: "error", QUARANTINE: "warning", WARN: "warning"}
LOGICAL_TYPES = {"BIGINT": "integer", "INTEGER": "integer", "SMALLINT": "integer", "TINYINT": "integer",
                 "HUGEINT": "integer", "DOUBLE": "number", "FLOAT": "number", "REAL": "number", "DECIMAL": "number",
                 "VARCHAR": "string", "BOOLEAN": "boolean", "DATE": "date", "TIMESTAMP": "timestamp"}
# a window rule `count(*) OVER (PARTITION BY a, b) = 1` is ODCS's duplicateValues over (a, b)
_DUPLICATES = re.compile(r"\s*count\(\*\)\s+OVER\s*\(\s*PARTITION\s+BY\s+([\w\s,]+?)\s*\)\s*=\s*1\s*", re.IGNORECASE)
# the pandera checks a range or a length becomes (ODCS logicalTypeOptions)
_BOUNDS = {"greater_than_or_equal_to": "minimum", "greater_than": "exclusiveMinimum",
           "less_than_or_equal_to": "maximum", "less_than": "exclusiveMaximum"}


def literal(value: object) -> str:
    """A contract constant as a DuckDB literal: an exported document carries its SQL whole, with nothing to bind."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float) and not (isinstance(value, float) and not math.isfinite(value)):
        return repr(value)
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, list | tuple | set | frozenset):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"


def server_block(warehouse: Warehouse, schema: str) -> dict:
    """Where the table lives, as ODCS says it: the DuckDB file, or the DuckLake catalog (host, port and database of
    its PostgreSQL catalog, and the data path). Never a user or a password: those stay in the environment."""
    where = warehouse.where
    if where["backend"] == "duckdb":
        return {"server": "warehouse", "type": "duckdb", "environment": "provline", "database": where["path"],
                "schema": schema}
    host, _, port = where["server"].rpartition(":")
    return {"server": "warehouse", "type": "custom", "environment": "provline",
            "description": "DuckLake: a PostgreSQL catalog, Parquet data files (credentials from the environment)",
            "customProperties": [
                {"property": "format", "value": "ducklake"}, {"property": "catalogType", "value": "postgres"},
                {"property": "host", "value": host}, {"property": "port", "value": port},
                {"property": "database", "value": where["database"]},
                {"property": "dataPath", "value": where["data_path"]}, {"property": "schema", "value": schema}]}


def export_contract(spec: TableSpec, domain: Domain, warehouse: Warehouse | None = None) -> dict:
    """The ODCS v3.1.0 document of one table (a plain dict, ready for YAML or JSON)."""
    schema_name, table_name = spec.table.split(".")
    rules = _Rules(spec)
    properties = [rules.property(name, sql_type) for name, sql_type in spec.columns.items()]
    schema_object = {"name": table_name, "physicalName": table_name, "physicalType": "table", "logicalType": "object",
                     "description": _doc(spec.contract), "properties": properties}
    if table_quality := rules.table_quality():
        schema_object["quality"] = table_quality
    if spec.daily_on:
        schema_object["customProperties"] = [{"property": "partitionExpression", "value": spec.daily_on}]
    document = {
        "apiVersion": API_VERSION, "kind": "DataContract", "id": f"provline:{domain.name}:{spec.table}",
        "name": spec.table, "version": spec.contract_version, "status": "active", "domain": domain.name,
        "description": {"purpose": spec.description or _doc(spec.contract), "usage": _usage(spec)},
        "tags": ["provline", schema_name],
        "schema": [schema_object],
    }
    if domain.owner:
        team: dict = {"name": domain.owner}
        if domain.contact:
            team["members"] = [{"username": domain.contact, "role": "owner"}]
        document["team"] = team
    if spec.freshness is not None:
        document["slaProperties"] = [_freshness(spec)]
    if warehouse is not None:
        document["servers"] = [server_block(warehouse, schema_name)]
    document["customProperties"] = [
        {"property": "contract", "value": _contract_ref(spec)},
        {"property": "exportedBy", "value": f"provline contract export {spec.table}"},
    ]
    return document


def _doc(model: type) -> str:
    return " ".join((inspect.getdoc(model) or "").split())


def _contract_ref(spec: TableSpec) -> str:
    file = Path(inspect.getsourcefile(spec.contract)).resolve()
    where = file.relative_to(PROJECT_ROOT) if file.is_relative_to(PROJECT_ROOT) else file
    return f"{where}::{spec.contract.__name__}"


def _usage(spec: TableSpec) -> str:
    if not spec.daily_on:
        return "Rebuilt whole at each materialization."
    return (f"One partition per local day, the day of {spec.daily_on}: check one day with "
            f"datacontract test --filter \"({spec.daily_on}) = DATE 'YYYY-MM-DD'\" (library metrics only: "
            "datacontract-cli runs type-sql rules over the whole table).")


def _freshness(spec: TableSpec) -> dict:
    fail = _hours(spec.freshness.fail_window)
    warn = getattr(spec.freshness, "warn_window", None)
    text = f"Materialized at most {fail:g} h ago (Dagster freshness policy: fails after that"
    text += f", warns after {_hours(warn):g} h)." if warn else ")."
    return {"property": "freshness", "value": fail, "unit": "h", "driver": "operational", "description": text}


def _hours(window) -> float:
    return round(window.to_timedelta().total_seconds() / 3600, 3)


class _Rules:
    """The contract's rules, walked as rules_of walks them, each turned into ODCS: a schema fact of its property,
    a quality entry, or both."""

    def __init__(self, spec: TableSpec):
        self.spec = spec
        self.schema = spec.contract.to_schema()
        self.meta = contract_metadata(spec.contract)
        self.by_name: dict[str, Rule] = {rule.name: rule for rule in spec.rules}
        self.columns = list(spec.columns)
        self.partition_columns = columns_named(spec.daily_on, self.columns) if spec.daily_on else []
        self.exported: set[str] = set()

    # --- properties ----------------------------------------------------------------------------------

    def property(self, name: str, sql_type: str) -> dict:
        column = self.schema.columns[name]
        base = sql_type.split("(")[0].upper()
        prop: dict = {"name": name, "logicalType": LOGICAL_TYPES.get(base, "string"), "physicalType": sql_type}
        if column.description:
            prop["description"] = column.description
        if name in self.spec.key_columns:
            prop["primaryKey"] = True
            prop["primaryKeyPosition"] = self.spec.key_columns.index(name) + 1
        if name in self.partition_columns:
            prop["partitioned"] = True
            prop["partitionKeyPosition"] = self.partition_columns.index(name) + 1
        quality, options = [], {}
        if not column.nullable:
            rule = self.by_name[f"{name}_not_null"]
            if rule.behaviour == BLOCKING:
                prop["required"] = True
            quality.append(self._row_rule(rule, name, f"{quote(name)} IS NOT NULL", metric="nullValues"))
        if column.unique:
            prop["unique"] = True
            quality.append(self._entry(self.by_name[f"{name}_unique"], type="library", metric="duplicateValues",
                                       mustBe=0))
        for check in column.checks:
            rule = self.by_name[column_check_rule(name, check)]
            stats = check.statistics or {}
            if rule.behaviour != WARN:  # a guarantee of the published table
                options |= _options(check, stats)
            if check.name == "isin" and rule.behaviour != QUARANTINE:
                quality.append(self._entry(rule, type="library", metric="invalidValues", mustBe=0,
                                           arguments={"validValues": list(stats["allowed_values"])}))
                continue
            predicate = check_predicate(check, quote(name), literal)
            if predicate is None:
                raise ValueError(f"{self.spec.table}: rule {rule.name} ({check.name}) has no SQL form to export")
            quality.append(self._row_rule(rule, name, f"{quote(name)} IS NULL OR ({predicate})"))
        if options:
            prop["logicalTypeOptions"] = options
        if quality:
            prop["quality"] = quality
        return prop

    # --- the table's own rules -----------------------------------------------------------------------

    def table_quality(self) -> list[dict]:
        out = []
        for check in self.schema.checks:
            rule = self.by_name[check.name]
            sql = (check.statistics or {}).get("sql")
            if sql is None:
                out.append(self._entry(rule, type="text"))  # a pandas-only check: no SQL to give a reader
                continue
            keys = _DUPLICATES.fullmatch(sql)
            if keys and rule.behaviour != QUARANTINE:
                properties = [c.strip() for c in keys.group(1).split(",")]
                out.append(self._entry(rule, type="library", metric="duplicateValues", mustBe=0,
                                       arguments={"properties": properties}, rowCheck=sql))
            else:
                out.append(self._row_rule(rule, None, sql))
        for ref in self.meta.get("references", []):
            rule = self.by_name[ref.rule]
            target = f"{quote(ref.table)} AS r WHERE r.{quote(ref.table_column)} = t.{quote(ref.column)}"
            query = (f"SELECT count(*) FROM ${{table}} AS t WHERE t.{quote(ref.column)} IS NOT NULL "
                     f"AND NOT EXISTS (SELECT 1 FROM {target})")
            out.append(self._entry(rule, type="sql", query=query, mustBe=0, references={
                "column": ref.column, "table": ref.table, "tableColumn": ref.table_column}))
        if counted := self.meta.get("row_count_matches"):
            rule = self.by_name[f"row_count_matches_{counted.replace('.', '_')}"]
            query = f"SELECT (SELECT count(*) FROM ${{table}}) - (SELECT count(*) FROM {quote(counted)})"
            out.append(self._entry(rule, type="sql", query=query, mustBe=0, rowCountMatches=counted))
        for name in (SCHEMA_RULE, DRIFT_RULE):
            out.append(self._entry(self.by_name[name], type="text"))
        volume = self.by_name[VOLUME_RULE]
        limits = {"maxRowDrop": max_row_drop(self.spec.contract), "allowEmpty": allow_empty(self.spec.contract)}
        if allow_empty(self.spec.contract):
            out.append(self._entry(volume, type="text", **limits))
        else:  # its part a reader can check: the table has rows (the drop against the previous version is provline's)
            out.append(self._entry(volume, type="library", metric="rowCount", mustBeGreaterThan=0, **limits))
        # what is left (the source file's coverage): provline's own, described
        return out + [self._entry(rule, type="text") for rule in self.spec.rules if rule.name not in self.exported]

    # --- entries -------------------------------------------------------------------------------------

    def _row_rule(self, rule: Rule, column: str | None, passes: str, metric: str | None = None) -> dict:
        """A row-level rule: a library metric when it is one and its rows are in the table, else SQL counting
        the rows for which `passes` is not TRUE (a quarantining rule's over the table and its quarantine)."""
        if metric and rule.behaviour != QUARANTINE:
            return self._entry(rule, type="library", metric=metric, mustBe=0, rowCheck=passes)
        relation = "${table}"
        if rule.behaviour == QUARANTINE:
            columns = ", ".join(quote(c) for c in self.columns)
            relation = (f"(SELECT {columns} FROM ${{table}} UNION ALL "
                        f"SELECT {columns} FROM {quote(quarantine_table(self.spec.table))})")
        query = (f"SELECT count(*) FROM (SELECT ({passes}) AS passes FROM {relation}) AS checked "
                 "WHERE passes IS NOT TRUE")
        return self._entry(rule, type="sql", query=query, mustBe=0, rowCheck=passes)

    def _entry(self, rule: Rule, *, type: str, **fields) -> dict:
        if rule.max_failure_rate and fields.get("mustBe") == 0:  # a threshold: the share of rows, in percent
            del fields["mustBe"]
            fields |= {"mustBeLessOrEqualTo": round(rule.max_failure_rate * 100, 6), "unit": "percent",
                       "maxFailureRate": rule.max_failure_rate}
            if "query" in fields:
                fields["query"] = f"SELECT 100.0 * ({fields['query']}) / greatest((SELECT count(*) FROM ${{table}}), 1)"
        custom = {k: fields.pop(k) for k in ("rowCheck", "references", "rowCountMatches", "maxRowDrop", "allowEmpty",
                                             "maxFailureRate") if k in fields}
        self.exported.add(rule.name)
        entry = {"id": rule.name, "name": rule.name, "description": rule.description, "type": type, **fields,
                 "severity": SEVERITY[rule.behaviour]}
        if type == "text":
            entry.pop("severity")  # nothing runs it: its behaviour says what provline does
        entry["customProperties"] = [{"property": "behaviour", "value": rule.behaviour}] + [
            {"property": k, "value": v} for k, v in custom.items()]
        return entry


def _options(check: pa.Check, stats: dict) -> dict:
    """The ODCS logicalTypeOptions a range or length check states (empty for any other check)."""
    if check.name in _BOUNDS:
        return {_BOUNDS[check.name]: stats.get("min_value", stats.get("max_value"))}
    if check.name == "in_range":
        low = "minimum" if stats.get("include_min", True) else "exclusiveMinimum"
        high = "maximum" if stats.get("include_max", True) else "exclusiveMaximum"
        return {low: stats["min_value"], high: stats["max_value"]}
    if check.name == "str_length":
        bounds = {"minLength": stats.get("min_value"), "maxLength": stats.get("max_value")}
        return {k: v for k, v in bounds.items() if v is not None}
    return {}


def domains_by_table(domains: list[Domain]) -> dict[str, tuple[TableSpec, Domain]]:
    return {spec.table: (spec, domain) for domain in domains for spec in domain.tables}


def export_all(domains: list[Domain], tables: list[str] | None = None,
               warehouse: Warehouse | None = None) -> Iterator[tuple[str, dict]]:
    """(table, document) for the named tables (every table when none is named), in the domains' order."""
    known = domains_by_table(domains)
    for table in tables or known:
        if table not in known:
            raise KeyError(f"no table {table!r}; the tables are {', '.join(sorted(known))}")
        spec, domain = known[table]
        yield table, export_contract(spec, domain, warehouse)
