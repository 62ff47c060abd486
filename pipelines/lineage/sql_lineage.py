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
- Transformation types (ColumnLineageDatasetFacet 1-2-0): the parser reports none, nor the columns
  of ON / USING / WHERE / GROUP BY / ORDER BY. ``sql_lineage`` adds them from the SQL text (see
  ``SqlLineage``): DIRECT IDENTITY / TRANSFORMATION / AGGREGATION per field, field-level INDIRECT
  CONDITIONAL / FILTER / WINDOW, and dataset-level INDIRECT JOIN / FILTER / GROUP_BY / SORT / WINDOW.
  Column references resolve through aliases and CTEs to the input schemas; a column computed inside
  a CTE and used only in a later WHERE (not an input column) is not traced.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import NamedTuple

import openlineage_sql

from pipelines.lineage.model import (
    AGGREGATED,
    IDENTITY,
    TRANSFORMED,
    ColumnSource,
    IndirectSource,
    IndirectSubtype,
    Transformation,
)

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


class SqlLineage(NamedTuple):
    """Column lineage with transformation types (ColumnLineageDatasetFacet 1-2-0).

    fields: output column -> its inputs, DIRECT (IDENTITY / TRANSFORMATION / AGGREGATION) and
    field-level INDIRECT (CONDITIONAL in a CASE condition, FILTER in ``agg(..) FILTER (WHERE ..)``,
    WINDOW in ``OVER (..)``). indirect: inputs that affect the whole output: JOIN (ON / USING),
    FILTER (WHERE / HAVING / QUALIFY), GROUP_BY, SORT (ORDER BY), WINDOW (PARTITION BY outside OVER).
    """

    fields: dict[str, list[ColumnSource]]
    indirect: list[IndirectSource]


def column_lineage_from_sql(sql: str, input_schemas: dict[str, list[str]], output_columns: list[str]) -> Lineage:
    """output column -> [(input table ``schema.table``, input column)], for each output column."""
    return _direct(*_prepare(sql, input_schemas), output_columns)[0]


def sql_lineage(sql: str, input_schemas: dict[str, list[str]], output_columns: list[str]) -> SqlLineage:
    """Column lineage with DIRECT/INDIRECT transformations; never raises (an analysis failure
    costs the transformations, not the lineage). Cached: an asset's SQL and schemas rarely change."""
    key = tuple((name, tuple(cols)) for name, cols in input_schemas.items())
    cached = _sql_lineage(sql, key, tuple(output_columns))
    return SqlLineage({c: list(s) for c, s in cached.fields.items()}, list(cached.indirect))


@functools.lru_cache(maxsize=256)
def _sql_lineage(
    sql: str, input_schemas: tuple[tuple[str, tuple[str, ...]], ...], output_columns: tuple[str, ...]
) -> SqlLineage:
    text, schemas = _prepare(sql, {name: list(cols) for name, cols in input_schemas})
    lineage, used = _direct(text, schemas, list(output_columns))
    try:
        return _Analysis(text, used, lineage).run()
    except Exception as exc:  # noqa: BLE001 - only precision is lost
        log.warning("transformation analysis of the SQL failed (%s); DIRECT lineage only", exc)
        return SqlLineage({c: [ColumnSource(t, col, TRANSFORMED) for t, col in s] for c, s in lineage.items()}, [])


def _prepare(sql: str, input_schemas: dict[str, list[str]]) -> tuple[str, dict[str, list[str]]]:
    schemas = {name.lower(): list(cols) for name, cols in input_schemas.items()}
    text = _PARAM.sub("NULL", sql)  # parameters are values: they carry no lineage
    return _expand_stars(text, schemas), schemas


def _direct(text: str, schemas: dict[str, list[str]], output_columns: list[str]) -> tuple[Lineage, dict]:
    """The parser's lineage, fixed; and the input schemas this query reads."""
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
    return result, schemas


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


# ---- transformation types: what the parser does not report --------------------------------
# openlineage-sql 1.54 reports neither transformation types nor the columns of JOIN ... ON, WHERE,
# GROUP BY, ORDER BY (its ColumnLineage is descendant + lineage of (origin, name), nothing else), so
# those come from the SQL text: comments and string literals blanked, clauses cut at their own
# parenthesis depth, column references resolved to the inputs through aliases and CTEs.

_AGGREGATES = re.compile(
    r"\b(?:count|count_if|sum|avg|mean|min|max|any_value|first|last|arg_min|arg_max|argmin|argmax|min_by|"
    r"max_by|median|mode|quantile\w*|percentile\w*|stddev\w*|var_pop|var_samp|variance|string_agg|"
    r"group_concat|listagg|array_agg|list|bool_and|bool_or|bit_and|bit_or|bit_xor|approx_\w+|histogram|"
    r"corr|covar_\w+|regr_\w+|product|fsum|favg|sumkahan|kurtosis\w*|skewness|entropy)\s*\(",
    re.IGNORECASE,
)
_CLAUSE = re.compile(
    r"\b(?:(on)\b|(using)\s*\(|(where|having|qualify)\b|(group)\s+by\b|(order)\s+by\b|(partition)\s+by\b)"
)
_CLAUSE_SUBTYPE: dict[str, IndirectSubtype] = {
    "on": "JOIN", "using": "JOIN", "where": "FILTER", "having": "FILTER", "qualify": "FILTER",
    "group": "GROUP_BY", "order": "SORT", "partition": "WINDOW",
}  # fmt: skip
_CLAUSE_END = re.compile(
    r"\b(?:join|left|right|inner|outer|full|cross|natural|positional|asof|anti|semi|on|using|where|group|"
    r"having|qualify|order|limit|offset|fetch|window|union|except|intersect|select|from)\b(?!\s*\()|;"
)  # not left(..) / right(..)
_KEYWORDS = {
    "and", "or", "not", "is", "null", "true", "false", "in", "between", "like", "ilike", "similar", "glob",
    "case", "when", "then", "else", "end", "as", "asc", "desc", "nulls", "first", "last", "distinct",
    "all", "any", "some", "exists", "interval", "date", "time", "timestamp", "escape", "collate", "by",
    "rollup", "cube", "grouping", "sets", "select", "from", "with",
}  # fmt: skip
_REF = re.compile(rf"(?<![\w.$]){_IDENT}(?:\.{_IDENT}){{0,2}}(?![\w.])")
_PLAIN_REF = re.compile(rf"^(?:{_IDENT}\.){{0,2}}({_IDENT})$")
_CALL = re.compile(r"\s*\(")
_TYPE_OR_ALIAS = re.compile(r"(?:::|\bas)\s*$")
_CTE_DEF = re.compile(rf"(?:\bwith(?:\s+recursive)?|,)\s*({_IDENT})\s+as\s*(?:not\s+)?(?:materialized\s*)?\(")
_SELECT = re.compile(r"\bselect\b(?:\s+(?:distinct|all)\b)?")
_SELECT_END = re.compile(r"\b(?:from|where|group|having|qualify|order|limit|window|union|except|intersect)\b|;")
_ALIAS = re.compile(rf"^(.*?)\s+as\s+({_IDENT})$", re.IGNORECASE | re.DOTALL)
_NOISE = re.compile(r"--[^\n]*|/\*.*?(?:\*/|$)|'(?:[^']|'')*(?:'|$)", re.DOTALL)


def _blank(sql: str) -> str:
    """Lower-cased SQL with comments and string literals turned into spaces (positions kept);
    double-quoted identifiers lose their quotes."""
    return _NOISE.sub(lambda m: " " * len(m.group(0)), sql).replace('"', " ").lower()


class _Analysis:
    def __init__(self, text: str, schemas: dict[str, list[str]], lineage: Lineage):
        self.code = _blank(text)
        self.schemas = schemas
        self.lineage = lineage
        self.parens = self._parens()
        self._depth_cache: dict[tuple[int, int], str] = {}
        self._refs_cache: dict[tuple[int, int], list[tuple[str, int]]] = {}
        self.aliases = {}
        for rel, alias in _FROM_ITEM.findall(self.code):
            self.aliases.setdefault(rel, rel)
            if alias and alias not in _NOT_ALIAS:
                self.aliases[alias] = rel
        self.ctes = self._ctes()

    # -- structure ------------------------------------------------------------------------------

    def _parens(self) -> list[tuple[int, int]]:
        """(open, close) of every parenthesis pair."""
        stack, pairs = [], []
        for match in re.finditer(r"[()]", self.code):
            i = match.start()
            if match.group(0) == "(":
                stack.append(i)
            elif stack:
                pairs.append((stack.pop(), i))
        pairs.extend((start, len(self.code)) for start in stack)
        return pairs

    def _enclosing(self, pos: int) -> tuple[int, int]:
        """The innermost parenthesis pair around pos; (-1, len) at the top level."""
        inside = [(a, b) for a, b in self.parens if a < pos < b]
        return max(inside, default=(-1, len(self.code)))

    def _opener(self, start: int) -> str:
        """The word right before an opening parenthesis: over, filter, a function name, as, ..."""
        match = re.search(rf"({_IDENT})\s*$", self.code[:start]) if start >= 0 else None
        return match.group(1) if match else ""

    def _is_query(self, start: int) -> bool:
        return start < 0 or bool(re.match(r"\s*(?:select|with|from)\b", self.code[start + 1 :]))

    def _same_depth(self, start: int, end: int) -> str:
        """code[start:end] with every nested parenthesis blanked."""
        key = (start, end)
        if key not in self._depth_cache:
            chars = list(self.code[start:end])
            for a, b in self.parens:
                if start <= a and b < end:
                    chars[a - start : b - start + 1] = " " * (b - a + 1)
            self._depth_cache[key] = "".join(chars)
        return self._depth_cache[key]

    def _ctes(self) -> dict[str, set[str]]:
        """CTE name -> the input tables its body reads (through other CTEs)."""
        bodies = {}
        for match in _CTE_DEF.finditer(self.code):
            start = match.end() - 1
            end = next((b for a, b in self.parens if a == start), len(self.code))
            bodies[match.group(1)] = {rel for rel, _ in _FROM_ITEM.findall(self.code[start:end])}
        resolved: dict[str, set[str]] = {}

        def bases(name: str, seen: frozenset[str]) -> set[str]:
            if name in self.schemas:
                return {name}
            if name not in bodies or name in seen:
                return set()
            if name not in resolved:
                resolved[name] = set().union(*(bases(r, seen | {name}) for r in bodies[name]))
            return resolved[name]

        return {name: bases(name, frozenset()) for name in bodies}

    def _relation_tables(self, rel: str) -> set[str] | None:
        rel = self.aliases.get(rel, rel)
        if rel in self.schemas:
            return {rel}
        return self.ctes.get(rel)

    def _scope_tables(self, pos: int) -> set[str]:
        """Input tables of the FROM clause of the query around pos."""
        start, end = self._enclosing(pos)
        tables: set[str] = set()
        for rel, _ in _FROM_ITEM.findall(self._same_depth(start + 1, end)):
            tables |= self._relation_tables(rel) or set()
        return tables

    # -- column references ----------------------------------------------------------------------

    def _has(self, table: str, column: str) -> str | None:
        cols = self.schemas.get(table, [])
        return next((c for c in cols if c.lower() == column), None)

    def _refs(self, start: int, end: int) -> list[tuple[str, int]]:
        """Column references (not functions, types, aliases or keywords) in code[start:end]."""
        if (start, end) in self._refs_cache:
            return self._refs_cache[(start, end)]
        refs = []
        for match in _REF.finditer(self.code, start, end):
            ref = match.group(0)
            if ref in _KEYWORDS or _CALL.match(self.code, match.end(), end):
                continue
            if _TYPE_OR_ALIAS.search(self.code[max(0, match.start() - 8) : match.start()]):
                continue
            refs.append((ref, match.start()))
        self._refs_cache[(start, end)] = refs
        return refs

    def _resolve(self, ref: str, pos: int) -> list[tuple[str, str]]:
        *qualifier, column = ref.split(".")
        if qualifier:
            name = ".".join(qualifier)
            tables = self._relation_tables(name)
            if tables is None:  # a subquery alias or an unknown relation: by name
                tables = set(self.schemas)
        else:
            tables = {t for t in self.schemas if self._has(t, column)}
            if len(tables) > 1:  # ambiguous: the tables this query's FROM clause reads
                tables = tables & self._scope_tables(pos) or tables
        found = sorted((t, c) for t in tables if (c := self._has(t, column)))
        if not found and not qualifier:  # GROUP BY / ORDER BY an output alias
            out = {c.lower(): c for c in self.lineage}
            found = list(self.lineage.get(out.get(column, ""), []))
        return found

    # -- dataset level: joins, filters, grouping, sorting ---------------------------------------

    def indirect(self) -> list[IndirectSource]:
        result: list[IndirectSource] = []
        for match in _CLAUSE.finditer(self.code):
            keyword = next(g for g in match.groups() if g)
            start, end = self._enclosing(match.start())
            if not self._is_query(start):
                continue  # OVER (..), agg(..) FILTER (WHERE ..), string_agg(x ORDER BY y): field level
            clause_end = self._clause_end(match.end(), end)
            subtype = _CLAUSE_SUBTYPE[keyword]
            if keyword == "using":
                close = next((b for a, b in self.parens if a == match.end() - 1), clause_end)
                scope = self._scope_tables(match.start())
                for ref, _ in self._refs(match.end(), close):
                    for table in sorted(scope):
                        if column := self._has(table, ref):
                            result.append(IndirectSource(table, column, subtype))
                continue
            if keyword == "group" and re.match(r"\s*all\b", self.code[match.end() :]):
                result.extend(self._group_by_all(match.start()))
                continue
            for ref, pos in self._refs(match.end(), clause_end):
                result.extend(IndirectSource(table, column, subtype) for table, column in self._resolve(ref, pos))
        return list(dict.fromkeys(result))

    def _clause_end(self, start: int, limit: int) -> int:
        depth = 0
        for match in re.finditer(r"[()]|" + _CLAUSE_END.pattern, self.code[start:limit]):
            token = match.group(0)
            if token == "(":
                depth += 1
            elif token == ")":
                depth -= 1
            elif depth == 0:
                return start + match.start()
        return limit

    def _group_by_all(self, pos: int) -> list[IndirectSource]:
        """GROUP BY ALL: the select items with no aggregate."""
        items = self._select_items()
        return [
            IndirectSource(table, column, "GROUP_BY")
            for name, (expr, _) in items.items()
            if not _AGGREGATES.search(expr)
            for table, column in self.lineage.get(name, [])
        ]

    # -- field level ----------------------------------------------------------------------------

    def _select_items(self) -> dict[str, tuple[str, int]]:
        """Output column (lower case) -> (expression, its offset) of the top-level SELECT(s)."""
        top = self._same_depth(0, len(self.code))
        items: dict[str, tuple[str, int]] = {}
        names: list[str] = []
        self.item_spans: list[tuple[int, int]] = []
        for branch, select in enumerate(_SELECT.finditer(top)):
            stop = _SELECT_END.search(top, select.end())
            body_end = stop.start() if stop else len(top)
            position = 0
            for expr, offset in self._split(select.end(), body_end):
                self.item_spans.append((offset, offset + len(expr)))
                if branch == 0:
                    alias = _ALIAS.match(expr)
                    plain = _PLAIN_REF.match(expr)
                    name = alias.group(2) if alias else plain.group(1) if plain else f"#{position}"
                    names.append(name)
                    expr = alias.group(1) if alias else expr
                    items[name] = (expr.strip(), offset)
                elif position < len(names):  # UNION branch: same output columns by position
                    alias = _ALIAS.match(expr)
                    items[f"{names[position]}#{branch}"] = ((alias.group(1) if alias else expr).strip(), offset)
                position += 1
        return items

    def _split(self, start: int, end: int) -> list[tuple[str, int]]:
        parts, depth, last = [], 0, start
        for match in re.finditer(r"[(),]", self.code[start:end]):
            ch, i = match.group(0), start + match.start()
            depth += (ch == "(") - (ch == ")")
            if ch == "," and depth == 0:
                parts.append((self.code[last:i], last))
                last = i + 1
        parts.append((self.code[last:end], last))
        return [(p.strip(), o + len(p) - len(p.lstrip())) for p, o in parts if p.strip()]

    def _region(self, expr: str, offset: int, pos: int) -> IndirectSubtype | None:
        """Where a reference at pos (in expr at offset) sits: OVER, FILTER, a CASE condition."""
        for start, _ in sorted((a, b) for a, b in self.parens if offset <= a < pos < b):
            opener = self._opener(start)
            if opener == "over":
                return "WINDOW"
            if opener == "filter":
                return "FILTER"
        words = re.findall(r"\b(case|when|then|else|end)\b", expr[: pos - offset])
        return "CONDITIONAL" if words and words[-1] == "when" else None

    def fields(self) -> dict[str, list[ColumnSource]]:
        items = self._select_items()
        # Names computed in a CTE or subquery: a plain reference to one is no IDENTITY.
        elsewhere = {
            m.group(1)
            for m in re.finditer(rf"\bas\s+({_IDENT})", self.code)
            if not any(a <= m.start() < b for a, b in self.item_spans)
        }
        by_output: dict[str, list[tuple[str, int]]] = {}
        for key, item in items.items():
            by_output.setdefault(key.split("#")[0], []).append(item)
        result: dict[str, list[ColumnSource]] = {}
        for column, sources in self.lineage.items():
            branches = by_output.get(column.lower(), [])
            out: list[ColumnSource] = []
            for table, source in sources:
                found: list[Transformation] = []
                for expr, offset in branches or [("", 0)]:
                    found.extend(self._classify(expr, offset, source, elsewhere))
                out.extend(ColumnSource(table, source, t) for t in dict.fromkeys(found))
            result[column] = out
        return result

    def _classify(self, expr: str, offset: int, source: str, elsewhere: set[str]) -> list[Transformation]:
        name = source.lower()
        regions = {
            self._region(expr, offset, pos)
            for ref, pos in self._refs(offset, offset + len(expr))
            if ref.rsplit(".", 1)[-1] == name
        } or {None}
        plain = _PLAIN_REF.match(expr)
        if plain and plain.group(1) == name and name not in elsewhere:
            direct = IDENTITY
        elif _AGGREGATES.search(expr):
            direct = AGGREGATED
        else:
            direct = TRANSFORMED
        found = [direct] if None in regions else []
        found += [Transformation("INDIRECT", r) for r in ("CONDITIONAL", "FILTER", "WINDOW") if r in regions]
        return found

    def run(self) -> SqlLineage:
        return SqlLineage(self.fields(), self.indirect())
