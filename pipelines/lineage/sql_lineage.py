"""Column lineage of a DuckDB SQL asset, from openlineage-sql plus what it misses on our SQL.

Measured on openlineage-sql 1.54 (tests/lineage/test_sql_lineage.py has the SQL):
- It has no DuckDB dialect: any unknown dialect name ("duckdb" included) silently parses as
  "generic", which we therefore ask for explicitly.
- Right out of the box: CTE chains with explicit columns, joins with aliases (``a.name AS x``),
  ``$partition_date`` / ``$1`` / ``?`` parameters, ``count(*) FILTER (WHERE arr_delay > 15)`` ->
  arr_delay, ``avg(CASE WHEN arr_delay <= 15 ...)`` -> arr_delay, ``make_timestamp(year, ...)`` -> all
  its arguments, ``x::DOUBLE`` and ``CAST(x AS ...)``, window functions, QUALIFY.
- Wrong or missing, and what we add:
  * ``SELECT *``, ``alias.*`` and DuckDB's ``* EXCLUDE (...)`` give no lineage at all, and a CTE
    written as ``SELECT * FROM staging.flights`` breaks every column traced through it (the origin
    becomes the CTE name). We expand stars in the SQL text from the known input schemas before
    parsing (also through CTEs that are themselves a star over a known relation).
  * An unqualified column in a join is attributed to the first table of the FROM clause even when
    only another table has it (``SELECT f.carrier, name FROM staging.flights f JOIN staging.airlines
    a ...`` says flights.name). We re-attribute a source column to the input that has it.
  * Origins the parser could not trace (subquery or CTE names) are resolved by column name against
    the input schemas; an output column the parser missed that is a plain copy of a column found in
    exactly one input gets that input.
- Anything the parser cannot parse falls back to those name rules; never raises.
"""

from __future__ import annotations

import logging
import re

import openlineage_sql

log = logging.getLogger(__name__)

Lineage = dict[str, list[tuple[str, str]]]

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_REL = rf"{_IDENT}(?:\.{_IDENT})?"
_NOT_ALIAS = {
    "where", "on", "using", "join", "left", "right", "inner", "outer", "full", "cross", "natural",
    "group", "order", "limit", "having", "qualify", "window", "union", "except", "intersect",
    "select", "from", "as", "lateral", "positional", "asof", "anti", "semi", "offset", "fetch",
}  # fmt: skip
_FROM_ITEM = re.compile(rf"\b(?:from|join)\s+({_REL})(?:\s+(?:as\s+)?({_IDENT}))?", re.IGNORECASE)
_CTE = re.compile(rf"\b({_IDENT})\s+as\s*\(\s*select\s+\*\s+from\s+({_REL})\s*[\s)]", re.IGNORECASE)
_STAR = re.compile(rf"(?:\b({_IDENT})\.)?\*(\s+exclude\s*\(([^)]*)\))?", re.IGNORECASE)
_PARAM = re.compile(rf"\$(?:{_IDENT}|\d+)")


def column_lineage_from_sql(sql: str, input_schemas: dict[str, list[str]], output_columns: list[str]) -> Lineage:
    """output column -> [(input table ``schema.table``, input column)], for each output column."""
    schemas = {name.lower(): list(cols) for name, cols in input_schemas.items()}
    text = _PARAM.sub("NULL", sql)  # parameters are values: they carry no lineage
    text = _expand_stars(text, schemas)
    parsed: Lineage = {}
    used = {t for t in schemas if re.search(rf"\b{re.escape(t)}\b", text, re.IGNORECASE)}
    try:
        meta = openlineage_sql.parse([text], dialect="generic")
        used = {_origin_name(t) for t in meta.in_tables} & set(schemas) or used
        for item in meta.column_lineage:
            parsed.setdefault(item.descendant.name.lower(), []).extend(
                (_origin_name(src.origin), src.name) for src in item.lineage
            )
    except Exception as exc:  # noqa: BLE001 - a parser failure only costs us precision
        log.warning("openlineage-sql could not parse the SQL (%s); lineage by column name", exc)
    # Name rules only look at the inputs this query reads.
    schemas = {t: cols for t, cols in schemas.items() if t in used}
    result: Lineage = {}
    for column in output_columns:
        sources = _fix(parsed.get(column.lower(), []), schemas)
        if not sources and column.lower() not in parsed:
            sources = _by_name(column, schemas)
        result[column] = sources
    return result


def _origin_name(origin: object) -> str:
    if origin is None:
        return ""
    schema, name = getattr(origin, "schema", None), getattr(origin, "name", "")
    return f"{schema}.{name}".lower() if schema else str(name).lower()


def _has(schemas: dict[str, list[str]], table: str, column: str) -> bool:
    return column.lower() in (c.lower() for c in schemas.get(table, []))


def _by_name(column: str, schemas: dict[str, list[str]]) -> list[tuple[str, str]]:
    found = [(t, c) for t, cols in schemas.items() for c in cols if c.lower() == column.lower()]
    return found if len(found) == 1 else []


def _fix(sources: list[tuple[str, str]], schemas: dict[str, list[str]]) -> list[tuple[str, str]]:
    fixed: list[tuple[str, str]] = []
    for table, column in sources:
        if table in schemas and (not schemas[table] or _has(schemas, table, column)):
            candidates = [(table, _cased(schemas, table, column))]
        else:
            # A wrong guess for an unqualified column, or an untraced CTE/subquery.
            candidates = [(t, _cased(schemas, t, column)) for t in schemas if _has(schemas, t, column)]
        fixed.extend(c for c in candidates if c not in fixed)
    return sorted(fixed)


def _cased(schemas: dict[str, list[str]], table: str, column: str) -> str:
    return next((c for c in schemas.get(table, []) if c.lower() == column.lower()), column)


def _expand_stars(sql: str, schemas: dict[str, list[str]]) -> str:
    """Rewrite ``*`` / ``alias.*`` / ``* EXCLUDE (..)`` into column lists where the columns are known."""
    relations = dict(schemas)
    for cte, source in _CTE.findall(sql):  # WITH f AS (SELECT * FROM staging.flights ...)
        if source.lower() in relations:
            relations[cte.lower()] = relations[source.lower()]
    aliases: dict[str, str] = {}
    for rel, alias in _FROM_ITEM.findall(sql):
        rel = rel.lower()
        aliases.setdefault(rel, rel)
        if alias and alias.lower() not in _NOT_ALIAS:
            aliases[alias.lower()] = rel

    def columns_of(qualifier: str, rel: str, exclude: str | None) -> str | None:
        cols = relations.get(rel)
        if not cols:
            return None
        skip = {c.strip().strip('"').lower() for c in (exclude or "").split(",")}
        return ", ".join(f"{qualifier}.{c}" for c in cols if c.lower() not in skip)

    def replace(match: re.Match[str]) -> str:
        qualifier, _, exclude = match.groups()
        start = match.start()
        if qualifier:
            rel = aliases.get(qualifier.lower())
            expanded = columns_of(qualifier, rel, exclude) if rel else None
            return expanded or match.group(0)
        if not re.search(r"\bselect\s+(?:distinct\s+)?$", sql[:start], re.IGNORECASE):
            return match.group(0)  # count(*), a * b, ...
        items = _from_clause(sql[match.end() :])
        parts = [columns_of(alias, rel, exclude) for rel, alias in items]
        if not items or None in parts:
            return match.group(0)
        return ", ".join(p for p in parts if p)

    return _STAR.sub(replace, sql)


def _from_clause(rest: str) -> list[tuple[str, str]]:
    """The (relation, qualifier) pairs of the FROM clause that follows a ``SELECT *``, same depth."""
    depth, i = 0, 0
    while i < len(rest):
        ch = rest[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                break
            depth -= 1
        elif depth == 0 and re.match(r"from\b", rest[i:], re.IGNORECASE) and (i == 0 or not rest[i - 1].isalnum()):
            clause = _clause_at_depth0(rest[i:])
            items = []
            for rel, alias in _FROM_ITEM.findall(clause):
                qualifier = alias if alias and alias.lower() not in _NOT_ALIAS else rel
                items.append((rel.lower(), qualifier))
            return items
        i += 1
    return []


def _clause_at_depth0(text: str) -> str:
    """FROM ... up to the closing paren of the enclosing query (nested parens are kept out)."""
    depth, out = 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                break
            depth -= 1
        elif depth == 0:
            out.append(ch)
            continue
        out.append(" ")
    return "".join(out)
