"""Audit queries over the lineage store: provenance, impact, runs, versions, each "as of" a time.

As of T means: only events with eventTime <= T count, so a query answers with what was true then.
Dataset arguments are table names (`marts.flight_facts`), or `namespace/name` when ambiguous.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import duckdb

FAR_FUTURE = datetime(9999, 12, 31)
TERMINAL = ("COMPLETE", "FAIL", "ABORT")


class QueryError(ValueError):
    """A question the store cannot answer as asked (unknown dataset, version, bad time)."""


def parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"{value!r} is not an ISO 8601 time (e.g. 2024-05-01T06:00:00+00:00)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.now().astimezone().tzinfo)


def quality_of(success: bool | None, severity: str | None) -> str:
    if success:
        return "pass"
    return "warn" if (severity or "").lower() in ("warn", "warning", "info") else "fail"


@dataclass
class _Ctx:
    con: duckdb.DuckDBPyConnection
    as_of: datetime

    def rows(self, sql: str, params: dict) -> list[dict]:
        cursor = self.con.execute(sql, {"as_of": self.as_of, **params})
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _dataset(ctx: _Ctx, dataset: str) -> tuple[str | None, str]:
    """(namespace or None, name) of a known dataset: `name`, or `namespace/name`; else a QueryError."""
    candidates = [(None, dataset)]
    if "/" in dataset:
        candidates.append(tuple(dataset.rsplit("/", 1)))
    for namespace, name in candidates:
        known = ctx.rows(
            """SELECT 1 FROM (SELECT namespace, name FROM outputs WHERE event_time <= $as_of
                             UNION ALL SELECT namespace, name FROM inputs WHERE event_time <= $as_of)
               WHERE name = $name AND ($ns IS NULL OR namespace = $ns) LIMIT 1""",
            {"name": name, "ns": namespace},
        )
        if known:
            return namespace, name
    raise QueryError(f"no dataset {dataset!r} in the lineage store" + (
        f" as of {ctx.as_of.isoformat()}" if ctx.as_of != FAR_FUTURE else ""))


def _iso(value) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


# ---- versions -------------------------------------------------------------------------------------


VERSIONS_SQL = """
SELECT o.namespace, o.name, o.version, e.partition, o.run_id, e.job_name AS job, e.code_version,
       e.dagster_run_id, o.event_time, o.row_count, o.size_bytes
FROM outputs o JOIN events e USING (seq)
WHERE o.name = $name AND ($ns IS NULL OR o.namespace = $ns) AND o.version IS NOT NULL
  AND o.event_type NOT IN ('FAIL', 'ABORT') AND o.event_time <= $as_of
  AND ($partition IS NULL OR coalesce(e.partition, '') = $partition)
"""


def versions(con: duckdb.DuckDBPyConnection, dataset: str, *, partition: str | None = None,
             as_of: datetime | None = None) -> list[dict]:
    """Every version written, oldest first."""
    ctx = _Ctx(con, as_of or FAR_FUTURE)
    namespace, name = _dataset(ctx, dataset)
    rows = ctx.rows(VERSIONS_SQL + " ORDER BY o.event_time, o.seq",
                    {"name": name, "ns": namespace, "partition": partition})
    return [{**r, "event_time": _iso(r["event_time"])} for r in rows]


# ---- upstream (provenance) ------------------------------------------------------------------------


def _quality(ctx: _Ctx, run_id: str, namespace: str, name: str) -> list[dict]:
    rows = ctx.rows(
        """SELECT assertion, column_name AS "column", success, severity, expected, actual FROM assertions
           WHERE run_id = $run AND namespace = $ns AND name = $name AND event_time <= $as_of
           QUALIFY seq = max(seq) OVER ()
           ORDER BY assertion""",
        {"run": run_id, "ns": namespace, "name": name},
    )
    return [{**r, "result": quality_of(r["success"], r["severity"])} for r in rows]


def _run(ctx: _Ctx, run_id: str) -> dict:
    rows = ctx.rows(
        """SELECT run_id, job_namespace, job_name AS job, partition, code_version, dagster_run_id, parent_run_id,
                  arg_max(event_type, event_time) AS state, min(event_time) AS started, max(event_time) AS ended
           FROM events WHERE run_id = $run AND event_time <= $as_of
           GROUP BY ALL""",
        {"run": run_id},
    )
    if not rows:
        return {"run_id": run_id}
    run = rows[0]
    return {**run, "started": _iso(run["started"]), "ended": _iso(run["ended"])}


def _node(ctx: _Ctx, version_row: dict, depth: int, max_depth: int, seen: dict) -> dict:
    key = (version_row["namespace"], version_row["name"], version_row["version"], version_row["partition"])
    node = {
        "dataset": version_row["name"], "namespace": version_row["namespace"], "version": version_row["version"],
        "partition": version_row["partition"], "written_at": _iso(version_row["event_time"]),
        "row_count": version_row.get("row_count"), "run": _run(ctx, version_row["run_id"]),
    }
    node["code_version"] = node["run"].get("code_version")
    node["quality"] = _quality(ctx, version_row["run_id"], version_row["namespace"], version_row["name"])
    node["quality_summary"] = {k: sum(1 for q in node["quality"] if q["result"] == k) for k in ("pass", "warn", "fail")}
    if key in seen:
        node["inputs"], node["repeated"] = [], True
        return node
    seen[key] = True
    node["inputs"] = []
    if depth >= max_depth:
        node["truncated"] = True
        return node
    inputs = ctx.rows(
        """SELECT namespace, name, version FROM inputs
           WHERE run_id = $run AND event_time <= $as_of
           QUALIFY seq = max(seq) OVER ()
           ORDER BY name""",
        {"run": version_row["run_id"]},
    )
    for inp in inputs:
        node["inputs"].append(_input_node(ctx, inp, version_row, depth, max_depth, seen))
    return node


def _input_node(ctx: _Ctx, inp: dict, consumer: dict, depth: int, max_depth: int, seen: dict) -> dict:
    leaf = {"dataset": inp["name"], "namespace": inp["namespace"], "version": inp["version"], "inputs": []}
    if inp["version"] is None:
        leaf["note"] = "no version recorded (a source file or an external dataset)"
        return leaf
    # the version read: written under that hash, before the consumer's event; same partition first
    rows = ctx.rows(
        VERSIONS_SQL + """ AND o.version = $version AND o.event_time <= $before
        ORDER BY (coalesce(e.partition, '') = $consumer_partition) DESC, o.event_time DESC LIMIT 1""",
        {"name": inp["name"], "ns": inp["namespace"], "partition": None, "version": inp["version"],
         "before": consumer["event_time"], "consumer_partition": consumer["partition"] or ""},
    )
    if not rows:
        written = ctx.rows("SELECT 1 FROM outputs WHERE namespace = $ns AND name = $name AND event_time <= $as_of "
                           "LIMIT 1", {"ns": inp["namespace"], "name": inp["name"]})
        # a source file's version is its content hash, recorded by the run that read it
        leaf["note"] = ("the run that wrote this version is not in the store" if written
                        else "a source: the version read (no run in the store writes it)")
        return leaf
    return _node(ctx, rows[0], depth + 1, max_depth, seen)


def upstream(con: duckdb.DuckDBPyConnection, dataset: str, *, partition: str | None = None,
             version: str | None = None, as_of: datetime | None = None, depth: int = 20) -> dict:
    """The provenance tree of one dataset version (the latest as of `as_of`, or `version`)."""
    ctx = _Ctx(con, as_of or FAR_FUTURE)
    namespace, name = _dataset(ctx, dataset)
    rows = ctx.rows(
        VERSIONS_SQL + " AND ($version IS NULL OR o.version = $version) ORDER BY o.event_time DESC, o.seq DESC LIMIT 1",
        {"name": name, "ns": namespace, "partition": partition, "version": version},
    )
    if not rows:
        what = f"version {version}" if version else "a committed version"
        where = f" partition {partition}" if partition else ""
        raise QueryError(f"{dataset}{where}: no {what} in the lineage store"
                         + (f" as of {ctx.as_of.isoformat()}" if as_of else ""))
    return _node(ctx, rows[0], 0, depth, {})


def column_lineage(con: duckdb.DuckDBPyConnection, dataset: str, *, as_of: datetime | None = None) -> list[dict]:
    """The column lineage of the dataset's latest output that carried one (OpenLineage `columnLineage`): per
    output `column`, each `input` dataset and `input_column` it comes from, with the transformation `type`
    (DIRECT: the value; INDIRECT: a condition) and `subtype`; `column` None for an input column that shapes the
    whole output (a join key, a filter)."""
    ctx = _Ctx(con, as_of or FAR_FUTURE)
    namespace, name = _dataset(ctx, dataset)
    return ctx.rows(
        """WITH latest AS (SELECT max(seq) AS seq FROM outputs WHERE name = $name AND ($ns IS NULL OR namespace = $ns)
                           AND has_column_lineage AND event_time <= $as_of)
           SELECT DISTINCT c.field AS "column", c.input_name AS input, c.input_field AS input_column,
                  coalesce(c.transformation_type, 'DIRECT') AS type, c.transformation_subtype AS subtype
           FROM column_lineage c JOIN latest USING (seq)
           WHERE c.name = $name AND ($ns IS NULL OR c.namespace = $ns) ORDER BY ALL""",
        {"name": name, "ns": namespace},
    )


# ---- downstream (impact) --------------------------------------------------------------------------


def downstream(con: duckdb.DuckDBPyConnection, target: str, *, as_of: datetime | None = None,
               depth: int = 20) -> dict:
    """What reads the dataset (or, for DATASET.COLUMN, what derives from the column), transitively.

    Dataset level follows run inputs -> outputs. Column level follows the columnLineage facet of each
    output's latest event that carries one (as of the time): its `fields` edges column -> column, and its
    `dataset` edges (a join key, a filter, a grouping column: INDIRECT) from the input column to the whole
    output, and from a whole output on from every one of its columns. An output whose events carry no
    columnLineage facet (or stored before the store kept transformations) is reached, conservatively,
    from any column of a dataset its latest run read."""
    ctx = _Ctx(con, as_of or FAR_FUTURE)
    column = None
    try:
        namespace, name = _dataset(ctx, target)
    except QueryError:
        if "." not in target:
            raise
        dataset, column = target.rsplit(".", 1)
        namespace, name = _dataset(ctx, dataset)
    if column is None:
        rows = ctx.rows(
            """SELECT DISTINCT i.namespace AS src_ns, i.name AS src, o.namespace AS dst_ns, o.name AS dst,
                      e.job_name AS job
               FROM inputs i JOIN outputs o USING (seq) JOIN events e USING (seq)
               WHERE i.event_time <= $as_of ORDER BY ALL""",
            {},
        )
        graph: dict[tuple, list[tuple[tuple, dict]]] = {}
        for r in rows:
            graph.setdefault((r["src_ns"], r["src"]), []).append(((r["dst_ns"], r["dst"]), {"job": r["job"]}))
        start = [(ns, name) for ns, n in {(r["src_ns"], r["src"]) for r in rows} if n == name
                 and (namespace is None or ns == namespace)] or [(namespace, name)]
        edges = _walk(start, depth, lambda node: graph.get(node, []))
        return {"dataset": name, "column": None, "as_of": _iso(as_of), "edges": edges}
    lineage = _ColumnLineage(ctx)
    known = lineage.columns_of(name, namespace)
    start = sorted({(ns, name, column) for ns, n in lineage.datasets() if n == name
                    and (namespace is None or ns == namespace)})
    if column not in known:
        if known:
            raise QueryError(f"no column {column!r} of {name} in the column lineage; known: {', '.join(sorted(known))}")
        if not start:
            raise QueryError(f"nothing reads {name}")
    return {"dataset": name, "column": column, "as_of": _iso(as_of),
            "edges": _walk(start, depth, lineage.targets)}


class _ColumnLineage:
    """The column-lineage graph as of a time. Nodes are (namespace, name, column), column None for a
    whole dataset."""

    def __init__(self, ctx: _Ctx):
        # per output, its latest event with a columnLineage facet; rows stored before transformations
        # were kept (transformation_type NULL) count as DIRECT, and their outputs also get the fallback
        rows = ctx.rows(
            """WITH carrying AS (
                   SELECT namespace, name, seq FROM outputs WHERE has_column_lineage AND event_time <= $as_of
                   UNION ALL
                   SELECT namespace, name, seq FROM column_lineage
                   WHERE transformation_type IS NULL AND event_time <= $as_of),
               latest AS (SELECT namespace, name, max(seq) AS seq FROM carrying GROUP BY ALL)
               SELECT DISTINCT l.namespace AS dst_ns, l.name AS dst, c.field AS dst_field,
                      c.input_namespace AS src_ns, c.input_name AS src, c.input_field AS src_field,
                      coalesce(c.transformation_type, 'DIRECT') AS type, c.transformation_subtype AS subtype,
                      c.seq IS NOT NULL AND c.transformation_type IS NULL AS legacy
               FROM latest l LEFT JOIN column_lineage c USING (namespace, name, seq)
               ORDER BY ALL""",
            {},
        )
        reads = ctx.rows(  # which datasets each output's latest run read
            """WITH latest AS (SELECT namespace, name, max(seq) AS seq FROM outputs
                               WHERE event_time <= $as_of AND version IS NOT NULL GROUP BY ALL)
               SELECT DISTINCT i.namespace AS src_ns, i.name AS src, l.namespace AS dst_ns, l.name AS dst
               FROM latest l JOIN inputs i USING (seq) ORDER BY ALL""",
            {},
        )
        precise = {(r["dst_ns"], r["dst"]) for r in rows if not r["legacy"]}
        # (src column) -> {dst node: {(type, subtype)}}
        self.edges: dict[tuple, dict[tuple, set[tuple]]] = {}
        self.columns: dict[tuple, set[str]] = {}  # dataset -> its columns named in the lineage
        for r in rows:
            if r["src"] is None:  # a facet with no edges
                continue
            src = (r["src_ns"], r["src"], r["src_field"])
            dst = (r["dst_ns"], r["dst"], r["dst_field"])
            self.edges.setdefault(src, {}).setdefault(dst, set()).add((r["type"], r["subtype"]))
            self.columns.setdefault(src[:2], set()).add(src[2])
            if dst[2] is not None:
                self.columns.setdefault(dst[:2], set()).add(dst[2])
        self.readers: dict[tuple, list[tuple]] = {}  # dataset -> outputs reached only by the fallback
        for r in reads:
            self.readers.setdefault((r["src_ns"], r["src"]), [])
            if (r["dst_ns"], r["dst"]) not in precise:
                self.readers[(r["src_ns"], r["src"])].append((r["dst_ns"], r["dst"]))

    def datasets(self) -> set[tuple]:
        return set(self.columns) | set(self.readers)

    def columns_of(self, name: str, namespace: str | None) -> set[str]:
        return {c for (ns, n), cols in self.columns.items() if n == name and (namespace is None or ns == namespace)
                for c in cols}

    def targets(self, node: tuple) -> list[tuple[tuple, dict]]:
        """(dst node, edge attributes) of each edge out of a column, or out of every column of a dataset."""
        sources = [node] if node[2] is not None else [(*node[:2], c) for c in sorted(self.columns.get(node[:2], ()))]
        out, reached = [], set()
        for src in sources:
            for dst, kinds in self.edges.get(src, {}).items():
                reached.add(dst[:2])
                via = {"via": src[2]} if node[2] is None else {}
                out.append((dst, {**_kind(kinds), **via}))
        out += [((*dst, None), {"indirect": True, "label": "indirect: reads the dataset (no column lineage)"})
                for dst in self.readers.get(node[:2], []) if node[2] is None or dst not in reached]
        return out


def _kind(kinds: set[tuple]) -> dict:
    """An edge's attributes from its (type, subtype) pairs: direct when any is DIRECT."""
    direct = any(t == "DIRECT" for t, _ in kinds)
    subtypes = sorted({s for t, s in kinds if s and (t == "DIRECT") == direct})
    label = ("direct" if direct else "indirect") + (f": {', '.join(subtypes)}" if subtypes else "")
    return {"indirect": not direct, "label": label}


def _walk(start: list[tuple], depth: int, targets) -> list[dict]:
    """Breadth-first from the start nodes, up to `depth` levels: every edge found, with its level and the
    attributes `targets(node)` gives it. A node is (namespace, name[, column]), column None for a whole
    dataset."""
    def label(node: tuple) -> str:
        return ".".join(k for k in node[1:] if k)

    seen, frontier, edges = set(start), list(start), []
    for level in range(1, depth + 1):
        nxt = []
        for node in frontier:
            for dst, attributes in targets(node):
                edges.append({"depth": level, "from": label(node), "to": label(dst), **attributes})
                if dst not in seen:
                    seen.add(dst)
                    nxt.append(dst)
        if not nxt:
            break
        frontier = nxt
    return edges


# ---- runs -----------------------------------------------------------------------------------------


def runs(con: duckdb.DuckDBPyConnection, *, failed: bool = False, since: datetime | None = None,
         as_of: datetime | None = None, dataset: str | None = None,
         dagster_status: Callable[[str], str | None] | None = None) -> list[dict]:
    """Runs with their state and failed assertions, and integrity flags.

    dagster_status: a Dagster run's status by its id (None: not in the instance). A run whose START has no
    terminal event and whose Dagster run has ended gets the state it missed (`missed_terminal`), for the
    caller to emit; without it such a run stays RUNNING, flagged."""
    ctx = _Ctx(con, as_of or FAR_FUTURE)
    name = _dataset(ctx, dataset)[1] if dataset else None
    rows = ctx.rows(
        """WITH ev AS (SELECT * FROM events WHERE event_time <= $as_of),
           r AS (
             SELECT run_id, any_value(job_namespace) AS job_namespace, any_value(job_name) AS job,
                    any_value(partition) AS partition, any_value(code_version) AS code_version,
                    any_value(parent_run_id) AS parent_run_id, any_value(dagster_run_id) AS dagster_run_id,
                    arg_max(event_type, event_time) AS last_event,
                    arg_max(event_type, event_time) FILTER (WHERE event_type IN ('COMPLETE', 'FAIL', 'ABORT'))
                        AS terminal,
                    count(*) FILTER (WHERE event_type IN ('COMPLETE', 'FAIL', 'ABORT')) AS terminals,
                    count(*) FILTER (WHERE event_type = 'START') AS starts,
                    min(event_time) FILTER (WHERE event_type = 'START') AS started,
                    max(event_time) FILTER (WHERE event_type IN ('COMPLETE', 'FAIL', 'ABORT')) AS ended,
                    min(event_time) AS first_time, max(event_time) AS last_time,
                    any_value(error_message) FILTER (WHERE error_message IS NOT NULL) AS error,
                    -- arrival order disagrees with event time (a later-received event is older)
                    bool_or(prev_time > event_time) AS out_of_order
             FROM (SELECT *, max(event_time) OVER (PARTITION BY run_id ORDER BY seq
                                                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_time
                   FROM ev)
             GROUP BY run_id)
           SELECT r.*, (r.parent_run_id IS NOT NULL AND p.run_id IS NULL) AS missing_parent
           FROM r LEFT JOIN (SELECT DISTINCT run_id FROM ev) p ON p.run_id = r.parent_run_id
           WHERE ($since IS NULL OR r.last_time >= $since)
             AND ($name IS NULL OR r.run_id IN (SELECT run_id FROM outputs WHERE name = $name AND event_time <= $as_of))
           ORDER BY r.first_time, r.run_id""",
        {"since": since, "name": name},
    )
    failed_assertions = ctx.rows(
        """SELECT run_id, name, assertion, column_name AS "column", severity, actual FROM assertions
           WHERE NOT success AND event_time <= $as_of
           QUALIFY seq = max(seq) OVER (PARTITION BY run_id)
           ORDER BY run_id, name, assertion""",
        {},
    )
    by_run: dict[str, list[dict]] = {}
    for a in failed_assertions:
        by_run.setdefault(a.pop("run_id"), []).append({**a, "result": quality_of(False, a["severity"])})
    # the Dagster run of a run's own OpenLineage run, from its asset runs (older events of it carry no id)
    dagster_of = {r["parent_run_id"]: r["dagster_run_id"] for r in rows if r["parent_run_id"] and r["dagster_run_id"]}
    out = []
    for r in rows:
        flags, missed = [], None
        dagster_run_id = r["dagster_run_id"] or dagster_of.get(r["run_id"])
        if r["starts"] and not r["terminals"]:
            missed, flag = _dangling(r, dagster_run_id, dagster_status)
            flags.append(flag)
        if not r["starts"]:
            flags.append("no START event")
        if r["terminals"] > 1:
            flags.append(f"{r['terminals']} terminal events")
        if r["started"] and r["ended"] and r["ended"] < r["started"]:
            flags.append("terminal event before START")
        if r["out_of_order"]:
            flags.append("events received out of order")
        if r["missing_parent"]:
            flags.append(f"parent run {r['parent_run_id']} not in the store")
        state = r["terminal"] or missed or ("RUNNING" if r["starts"] else r["last_event"])
        item = {
            "run_id": r["run_id"], "job": r["job"], "job_namespace": r["job_namespace"], "partition": r["partition"],
            "state": state, "started": _iso(r["started"]), "ended": _iso(r["ended"]),
            "code_version": r["code_version"], "parent_run_id": r["parent_run_id"],
            "dagster_run_id": dagster_run_id, "error": r["error"],
            "failed_assertions": by_run.get(r["run_id"], []), "flags": flags, "missed_terminal": missed,
        }
        if failed and state == "COMPLETE" and not any(a["result"] == "fail" for a in item["failed_assertions"]):
            continue
        out.append(item)
    return out


ENDED = {"SUCCESS": "COMPLETE", "FAILURE": "FAIL", "CANCELED": "ABORT"}  # Dagster run status -> terminal event


def _dangling(run: dict, dagster_run_id: str | None,
              dagster_status: Callable[[str], str | None] | None) -> tuple[str | None, str]:
    """A START with no terminal event: the terminal state it missed, when its Dagster run is known to have
    ended, and the flag that says what is known."""
    flag = "START with no terminal event"
    if dagster_status is None:
        return None, f"{flag} (set DAGSTER_HOME for `provline lineage runs` to ask Dagster how its run ended)"
    if dagster_run_id is None:
        return None, f"{flag} (no Dagster run id recorded)"
    status = dagster_status(dagster_run_id)
    if status not in ENDED:
        return None, f"{flag}: Dagster run {dagster_run_id} is " + (status or "not in the instance")
    missed = ENDED[status]
    if missed == "COMPLETE" and run["parent_run_id"]:  # an attempt that never ended, in a run a retry finished
        missed = "FAIL"
    return missed, f"{flag}: its Dagster run {dagster_run_id} ended {status}; {missed} emitted now"
