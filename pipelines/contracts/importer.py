"""An ODCS document -> the source of a pandera contract for checks/<domain>.py, and the rules it could not read.

What becomes what:
- each property: a field, typed by its `physicalType` (DuckDB's names) or else its `logicalType`; `required`
  or a `nullValues` rule: not nullable; `unique` or a property's `duplicateValues` rule: unique; ranges and
  lengths (`logicalTypeOptions` minimum, maximum, exclusive*, minLength, maxLength): the pandera check of the
  same name provline exports them from (in_range, ge, gt, le, lt, str_length); `invalidValues` with
  `validValues`: isin, with `pattern`: str_contains (ODCS patterns search, like re.search);
- a rule with a `rowCheck` (the SQL predicate provline exports with each row-level rule), and a schema-level
  `duplicateValues` over some properties: a dataframe check stated once, in SQL (`sql_check`: the runner
  runs it in DuckDB, pandera on pandas runs the same SQL through `rows_passing`);
- a `references` rule: `reference(column, table, column)`; a `rowCountMatches` rule: `row_count_matches`;
- behaviour: the rule's `behaviour` custom property, else its severity (error blocks, anything else warns);
- provline's own table-level rules (schema, schema_drift, volume, source_rows_in_partitions) come back by
  themselves; `volume`'s allowEmpty and maxRowDrop are kept.
Anything else (SQL without a rowCheck, rowCount, custom engines, text) is listed as not translated.
"""

from __future__ import annotations

import keyword
import re
import textwrap
from dataclasses import dataclass, field

from pipelines.quality.rules import DRIFT_RULE, SCHEMA_RULE, SOURCE_COVERAGE_RULE, VOLUME_RULE

# DuckDB type -> (pandera annotation, sql_type metadata when the annotation alone would store another type)
PHYSICAL = {"BIGINT": ("Int", None), "INTEGER": ("Int", None), "SMALLINT": ("Int", None), "TINYINT": ("Int", None),
            "HUGEINT": ("Int", None), "DOUBLE": ("Float", None), "FLOAT": ("Float", None), "REAL": ("Float", None),
            "DECIMAL": ("Float", None), "VARCHAR": ("Str", None), "BOOLEAN": ("Bool", None),
            "TIMESTAMP": ("Timestamp", None), "DATE": ("Timestamp", "DATE")}
LOGICAL = {"integer": ("Int", None), "number": ("Float", None), "string": ("Str", None), "boolean": ("Bool", None),
           "timestamp": ("Timestamp", None), "date": ("Timestamp", "DATE")}
PROVLINE_RULES = {SCHEMA_RULE, DRIFT_RULE, VOLUME_RULE, SOURCE_COVERAGE_RULE}
_RANGES = {("minimum", "maximum"): "in_range", ("minimum",): "ge", ("exclusiveMinimum",): "gt",
           ("maximum",): "le", ("exclusiveMaximum",): "lt"}


@dataclass
class Imported:
    source: str
    """The Python source of the contract (a module with one DataFrameModel)."""
    untranslated: list[str] = field(default_factory=list)
    """The quality rules (and other parts) it could not translate, each with why."""


@dataclass
class _Column:
    name: str
    annotation: str
    kwargs: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    rules: set[str] = field(default_factory=set)
    """The rule names its field produces (as rules_of names them), so a rule is not translated twice."""
    quality: list = field(default_factory=list)


def class_name(table: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", table) if part)


def import_contract(document: dict, table: str, origin: str = "") -> Imported:
    """The pandera contract of `table` (schema.name) from an ODCS document: its schema object named like the
    table (or its only one)."""
    objects = document.get("schema") or []
    short = table.split(".")[-1]
    chosen = [o for o in objects if o.get("name") in (table, short) or o.get("physicalName") in (table, short)]
    if not chosen and len(objects) == 1:
        chosen = objects
    if len(chosen) != 1:
        names = ", ".join(str(o.get("name")) for o in objects) or "none"
        raise ValueError(f"{origin or 'the document'}: no single schema object for {table} (its objects: {names})")
    obj = chosen[0]
    untranslated: list[str] = []
    columns = [_column(prop, untranslated) for prop in obj.get("properties") or []]
    done = {rule for column in columns for rule in column.rules}
    meta: dict = {"version": str(document.get("version") or "1.0.0")}
    checks: list[tuple[str, str, str]] = []  # (name, description, sql)
    for column in columns:  # a column's rules without a pandera form of their own
        for rule in _quality(column.quality):
            if rule["id"] not in done and _custom(rule, "rowCheck") is not None:
                checks.append((rule["id"], rule.get("description", ""), _custom(rule, "rowCheck")))
                _behave(meta, rule, frame_level=True)
                done.add(rule["id"])
    for rule in _quality(obj.get("quality")):
        _table_rule(rule, done, meta, checks, untranslated)
    for column in columns:
        for rule in _quality(column.quality):
            if rule["id"] not in done:
                untranslated.append(f"{rule['id']} ({column.name}): {_why(rule)}")
    for rule in _quality(obj.get("quality")) + [r for column in columns for r in _quality(column.quality)]:
        if rule["id"] in done and (rate := _custom(rule, "maxFailureRate")) is not None:
            meta.setdefault("max_failure_rate", {})[rule["id"]] = float(rate)
    return Imported(_render(table, document, obj, columns, checks, meta, untranslated, origin), untranslated)


def _quality(rules: list | None) -> list[dict]:
    """The quality rules, each with an id (its name, or its position when it has neither)."""
    out = []
    for i, rule in enumerate(rules or []):
        out.append({**rule, "id": str(rule.get("id") or rule.get("name") or f"rule_{i + 1}")})
    return out


def _custom(rule: dict, key: str):
    return next((p.get("value") for p in rule.get("customProperties") or [] if p.get("property") == key), None)


def _behaviour(rule: dict) -> str:
    declared = _custom(rule, "behaviour")
    if declared in ("blocking", "quarantine", "warn"):
        return declared
    return "blocking" if str(rule.get("severity", "error")).lower() in ("error", "") else "warn"


def _behave(meta: dict, rule: dict, frame_level: bool) -> None:
    """A dataframe check's behaviour, as Config.metadata lists it."""
    behaviour = _behaviour(rule)
    if frame_level and behaviour != "blocking":
        meta.setdefault("warn" if behaviour == "warn" else "quarantine", []).append(rule["id"])


def _why(rule: dict) -> str:
    kind = rule.get("type") or ("library" if rule.get("metric") else "text")
    if kind == "sql":
        return "SQL that counts failing rows, with no row predicate (rowCheck) to run per row"
    if kind == "library":
        return f"library metric {rule.get('metric')} with arguments {rule.get('arguments') or {}}"
    return f"a {kind} rule: nothing to run"


def _column(prop: dict, untranslated: list[str]) -> _Column:
    name = str(prop["name"])
    physical = str(prop.get("physicalType") or "").split("(")[0].upper()
    annotation, sql_type = PHYSICAL.get(physical) or LOGICAL.get(str(prop.get("logicalType")), ("Str", None))
    if physical not in PHYSICAL and str(prop.get("logicalType")) not in LOGICAL:
        untranslated.append(f"{name}: type {prop.get('physicalType') or prop.get('logicalType')!r} read as a string")
    column = _Column(name, annotation, quality=prop.get("quality") or [])
    rules = _quality(column.quality)
    behaviours = {_behaviour(r) for r in rules if r.get("metric") != "duplicateValues"} - {"blocking"}
    if behaviours:  # provline gives a column's rules one behaviour
        column.metadata = {"on_fail": "QUARANTINE"} if "quarantine" in behaviours else {"severity": "WARN"}
    nulls = any(r.get("metric") == "nullValues" for r in rules)
    if prop.get("required") or nulls:
        column.rules.add(f"{name}_not_null")
    else:
        column.kwargs["nullable"] = True
    if prop.get("unique") or any(r.get("metric") == "duplicateValues" for r in rules):
        column.kwargs["unique"] = True
        column.rules.add(f"{name}_unique")
    options = prop.get("logicalTypeOptions") or {}
    bounds = tuple(k for k in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum") if k in options)
    if bounds in _RANGES:
        check = _RANGES[bounds]
        if check == "in_range":
            column.kwargs[check] = {"min_value": options["minimum"], "max_value": options["maximum"]}
        else:
            column.kwargs[check] = options[bounds[0]]
        column.rules.add(f"{name}_{check}")
    elif bounds:
        untranslated.append(f"{name}: range {dict((k, options[k]) for k in bounds)} has no single pandera check")
    lengths = {k: options[k] for k in ("minLength", "maxLength") if k in options}
    if lengths:
        column.kwargs["str_length"] = {"min_value": lengths.get("minLength"), "max_value": lengths.get("maxLength")}
        column.rules.add(f"{name}_length")
    for rule in rules:
        arguments = rule.get("arguments") or {}
        if rule.get("metric") == "invalidValues" and arguments.get("validValues") is not None:
            column.kwargs["isin"] = [v for v in arguments["validValues"] if v is not None]
            column.rules.add(f"{name}_isin")
            column.rules.add(rule["id"])
        elif rule.get("metric") == "invalidValues" and arguments.get("pattern") is not None:
            column.kwargs["str_contains"] = arguments["pattern"]
            column.rules.add(f"{name}_str_contains")
            column.rules.add(rule["id"])
    if prop.get("description"):
        column.kwargs["description"] = str(prop["description"])
    if sql_type:
        column.metadata["sql_type"] = sql_type
    return column


def _table_rule(rule: dict, done: set[str], meta: dict, checks: list, untranslated: list[str]) -> None:
    name = rule["id"]
    if name in done:
        return
    references, counted = _custom(rule, "references"), _custom(rule, "rowCountMatches")
    row_check = _custom(rule, "rowCheck")
    if name == VOLUME_RULE:
        if _custom(rule, "allowEmpty"):
            meta["allow_empty"] = True
        if (drop := _custom(rule, "maxRowDrop")) is not None:
            meta["max_row_drop"] = float(drop)
    elif name == DRIFT_RULE:
        if _behaviour(rule) == "blocking":
            meta["drift"] = "error"
    elif name in PROVLINE_RULES:
        pass  # provline's own: every contract has them
    elif isinstance(references, dict):
        severity = "" if _behaviour(rule) == "blocking" else ", severity=WARN"
        meta.setdefault("references", []).append(
            f"reference({references['column']!r}, {references['table']!r}, {references['tableColumn']!r}{severity})")
    elif counted:
        meta["row_count_matches"] = str(counted)
    elif row_check is None and rule.get("metric") == "duplicateValues" and (rule.get("arguments") or {}).get(
            "properties"):
        keys = ", ".join(rule["arguments"]["properties"])
        checks.append((name, rule.get("description", ""), f"count(*) OVER (PARTITION BY {keys}) = 1"))
        _behave(meta, rule, frame_level=True)
    elif row_check is not None:
        checks.append((name, rule.get("description", ""), str(row_check)))
        _behave(meta, rule, frame_level=True)
    else:
        untranslated.append(f"{name}: {_why(rule)}")
        return
    done.add(name)


def _render(table: str, document: dict, obj: dict, columns: list[_Column], checks: list, meta: dict,
            untranslated: list[str], origin: str) -> str:
    described = " ".join(str(obj.get("description") or (document.get("description") or {}).get("purpose") or
                             f"{table}, imported from an ODCS contract.").split())
    lines = [
        f'"""The contract of {table}, written by `provline contract import` from {origin or "an ODCS document"}',
        f"(ODCS {document.get('apiVersion', '?')}, contract {document.get('id', '?')} version {meta['version']}).",
        '"""', "", "import pandas as pd", "import pandera.pandas as pa",
        "from pandera.typing import Series", "",
        "from pipelines.domain import QUARANTINE, WARN, reference, sql_check  # noqa: F401", "",
        "Int, Float, Str, Bool, Timestamp = pd.Int64Dtype, pd.Float64Dtype, pd.StringDtype, bool, pd.Timestamp", "",
    ]
    if untranslated:
        lines += ["# Not translated (see `provline contract import`):"] + [f"#   {u}" for u in untranslated] + [""]
    doc = textwrap.fill(_escape(described), 112, initial_indent='    """', subsequent_indent="    ") + '"""'
    lines += ["", f"class {class_name(table)}(pa.DataFrameModel):", doc, ""]
    for column in columns:
        kwargs = [f"{k}={v!r}" for k, v in column.kwargs.items()]
        if column.metadata:
            meta_items = ", ".join(f"{k!r}: {v if v in ('QUARANTINE', 'WARN') else repr(v)}"
                                   for k, v in column.metadata.items())
            kwargs.append(f"metadata={{{meta_items}}}")
        attribute = column.name if column.name.isidentifier() and not keyword.iskeyword(column.name) else None
        if attribute is None:
            raise ValueError(f"{table}: column {column.name!r} is not a Python identifier (pandera fields need one)")
        lines.append(f"    {attribute}: Series[{column.annotation}] = pa.Field({', '.join(kwargs)})")
    for name, description, sql in checks:
        attribute = re.sub(r"\W", "_", name)
        lines += ["", f"    {attribute} = sql_check({name!r}, {sql!r}, {(description or name)!r})"]
    lines += ["", "    class Config:", "        coerce = True", "        strict = True", "        metadata = {"]
    for key, value in meta.items():
        rendered = "[" + ", ".join(value) + "]" if key == "references" else repr(value)
        lines.append(f"            {key!r}: {rendered},")
    lines += ["        }", ""]
    return "\n".join(lines)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
