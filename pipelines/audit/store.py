"""The lineage store: a DuckDB database of OpenLineage RunEvents, normalized for audits.

Events arrive from the JSONL file log (`ingest_file`, incremental: the byte offset reached in each
file is remembered) or one by one over HTTP (`ingest_payloads`, used by the receiver). Either way a
batch is validated as a whole (schema.py), then written in one transaction: all of it or nothing.
Events are deduplicated by (runId, eventType, eventTime): ingesting the same file twice, or receiving
an event the outbox re-sent, adds nothing.

JSON is parsed and normalized by DuckDB itself, not in Python, and each event is parsed about twice in
all: one `json_transform` into a typed struct (`EVENT_STRUCTURE`: the fields the tables need and, per
facet, its _producer/_schemaURL) and one multi-path `json_keys` (top-level / run / job keys). The
structural check is a vectorized predicate over those (`SUSPECT`); only the lines it flags (normally
none) are diagnosed by the exact per-line check `STRUCTURAL_PROBLEM`, which names the reason. A JSON
function per field would re-parse the whole event each time: that was 10x slower.

Tables (every row carries the event's seq, run_id and event_time, so any query can be asked "as of" a
time):

    events          one row per event: run/job columns, parent, code_version, partition, raw payload
    inputs          event x input dataset, with its datasetVersion
    outputs         event x output dataset, with datasetVersion, outputStatistics and whether the event
                    carried a columnLineage facet (has_column_lineage; NULL in rows stored before it)
    column_lineage  event x output column x input column x transformation (columnLineage facet): from
                    `fields` (field = the output column; no transformations = DIRECT, NULL subtype) and
                    from `dataset` (field NULL: the input column affects the whole output, INDIRECT)
    assertions      event x output x dataQualityAssertions entry (with severity)
    ingest_offsets  file path -> bytes ingested
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.audit.schema import EVENT_TYPES, TOP_LEVEL_FIELDS, official_schema
from pipelines.locks import open_duckdb
from pipelines.settings import Settings, get_settings
from pipelines.sql import path_literal, transaction

DDL = """
CREATE TABLE IF NOT EXISTS events (
    seq BIGINT NOT NULL,                 -- arrival order in this store
    run_id VARCHAR NOT NULL,
    event_type VARCHAR NOT NULL,
    event_time TIMESTAMPTZ NOT NULL,
    job_namespace VARCHAR NOT NULL,
    job_name VARCHAR NOT NULL,
    producer VARCHAR,
    parent_run_id VARCHAR,
    parent_job VARCHAR,
    root_run_id VARCHAR,
    partition VARCHAR,
    code_version VARCHAR,
    dagster_run_id VARCHAR,
    error_message VARCHAR,
    source VARCHAR,                      -- file path or 'http'
    received_at TIMESTAMPTZ NOT NULL,
    payload JSON NOT NULL
);
CREATE TABLE IF NOT EXISTS inputs (
    seq BIGINT, run_id VARCHAR, event_type VARCHAR, event_time TIMESTAMPTZ,
    namespace VARCHAR, name VARCHAR, version VARCHAR
);
CREATE TABLE IF NOT EXISTS outputs (
    seq BIGINT, run_id VARCHAR, event_type VARCHAR, event_time TIMESTAMPTZ,
    namespace VARCHAR, name VARCHAR, version VARCHAR, row_count BIGINT, size_bytes BIGINT,
    has_column_lineage BOOLEAN
);
CREATE TABLE IF NOT EXISTS column_lineage (
    seq BIGINT, run_id VARCHAR, event_time TIMESTAMPTZ,
    namespace VARCHAR, name VARCHAR, field VARCHAR,
    input_namespace VARCHAR, input_name VARCHAR, input_field VARCHAR,
    transformation_type VARCHAR,         -- DIRECT / INDIRECT; NULL in rows stored before it
    transformation_subtype VARCHAR       -- IDENTITY, JOIN, FILTER, ... (NULL: not given)
);
CREATE TABLE IF NOT EXISTS assertions (
    seq BIGINT, run_id VARCHAR, event_type VARCHAR, event_time TIMESTAMPTZ,
    namespace VARCHAR, name VARCHAR, assertion VARCHAR, column_name VARCHAR, success BOOLEAN,
    severity VARCHAR, expected VARCHAR, actual VARCHAR
);
CREATE TABLE IF NOT EXISTS ingest_offsets (
    path VARCHAR PRIMARY KEY, byte_offset BIGINT NOT NULL, head VARCHAR, line_count BIGINT, updated_at TIMESTAMPTZ
);
ALTER TABLE ingest_offsets ADD COLUMN IF NOT EXISTS line_count BIGINT;  -- stores from before it
ALTER TABLE outputs ADD COLUMN IF NOT EXISTS has_column_lineage BOOLEAN;
ALTER TABLE column_lineage ADD COLUMN IF NOT EXISTS transformation_type VARCHAR;
ALTER TABLE column_lineage ADD COLUMN IF NOT EXISTS transformation_subtype VARCHAR;
"""

# The exact structural check, one line at a time: NULL when fine, else what is wrong. Evaluated over
# `j` (the line as JSON, NULL when not valid JSON); it re-parses the event per JSON function call, so
# it only runs on the lines SUSPECT flags.
_ALLOWED = "[" + ", ".join(f"'{f}'" for f in TOP_LEVEL_FIELDS) + "]"
_TYPES = "[" + ", ".join(f"'{t}'" for t in EVENT_TYPES) + "]"
_TIME_RE = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:?\d{2})$"
STRUCTURAL_PROBLEM = f"""
CASE
  WHEN j IS NULL THEN 'not valid JSON'
  WHEN json_type(j) <> 'OBJECT' THEN 'not a JSON object'
  WHEN json_type(j, '$.run') IS NULL AND (json_type(j, '$.dataset') IS NOT NULL OR json_type(j, '$.job') IS NOT NULL)
       AND json_type(j, '$.eventType') IS NULL
    THEN 'a DatasetEvent or JobEvent: the lineage store keeps RunEvents only'
  WHEN len(list_filter(json_keys(j), lambda k: NOT list_contains({_ALLOWED}, k))) > 0
    THEN 'unknown field(s) '
         || array_to_string(list_filter(json_keys(j), lambda k: NOT list_contains({_ALLOWED}, k)), ', ')
  WHEN json_type(j, '$.eventType') IS DISTINCT FROM 'VARCHAR' OR NOT list_contains({_TYPES}, j->>'$.eventType')
    THEN 'eventType must be one of {", ".join(EVENT_TYPES)}, got ' || coalesce(j->>'$.eventType', 'nothing')
  WHEN json_type(j, '$.eventTime') IS DISTINCT FROM 'VARCHAR' THEN 'eventTime is missing or not a string'
  WHEN NOT regexp_matches(j->>'$.eventTime', '{_TIME_RE}') OR TRY_CAST(j->>'$.eventTime' AS TIMESTAMPTZ) IS NULL
    THEN 'eventTime ' || (j->>'$.eventTime') || ' is not an ISO 8601 timestamp with a UTC offset'
  WHEN json_type(j, '$.producer') IS DISTINCT FROM 'VARCHAR' THEN 'producer is missing or not a string'
  WHEN json_type(j, '$.schemaURL') IS DISTINCT FROM 'VARCHAR' THEN 'schemaURL is missing or not a string'
  WHEN json_type(j, '$.run') IS DISTINCT FROM 'OBJECT' THEN 'run is missing or not an object'
  WHEN TRY_CAST(j->>'$.run.runId' AS UUID) IS NULL THEN 'run.runId is missing or not a UUID'
  WHEN json_type(j, '$.job') IS DISTINCT FROM 'OBJECT' THEN 'job is missing or not an object'
  WHEN json_type(j, '$.job.namespace') IS DISTINCT FROM 'VARCHAR'
       OR json_type(j, '$.job.name') IS DISTINCT FROM 'VARCHAR'
       OR (j->>'$.job.name') = '' THEN 'job.namespace and job.name must be non-empty strings'
  WHEN coalesce(json_type(j, '$.inputs'), 'ARRAY') <> 'ARRAY' THEN 'inputs is not an array'
  WHEN coalesce(json_type(j, '$.outputs'), 'ARRAY') <> 'ARRAY' THEN 'outputs is not an array'
  WHEN len(list_filter(coalesce(json_extract(j, '$.inputs[*]'), []) || coalesce(json_extract(j, '$.outputs[*]'), []),
           lambda d: json_type(d, '$.namespace') IS DISTINCT FROM 'VARCHAR'
                OR json_type(d, '$.name') IS DISTINCT FROM 'VARCHAR')) > 0
    THEN 'every input and output needs a string namespace and name'
  WHEN coalesce(json_type(j, '$.run.facets'), 'OBJECT') <> 'OBJECT'
       OR coalesce(json_type(j, '$.job.facets'), 'OBJECT') <> 'OBJECT' THEN 'facets must be objects'
  WHEN len(list_filter(
           coalesce(json_extract(j, '$.run.facets.*'), []) || coalesce(json_extract(j, '$.job.facets.*'), [])
           || coalesce(json_extract(j, '$.inputs[*].facets.*'), [])
           || coalesce(json_extract(j, '$.outputs[*].facets.*'), [])
           || coalesce(json_extract(j, '$.inputs[*].inputFacets.*'), [])
           || coalesce(json_extract(j, '$.outputs[*].outputFacets.*'), []),
           lambda f: json_type(f) <> 'OBJECT' OR json_type(f, '$._producer') IS DISTINCT FROM 'VARCHAR'
                OR json_type(f, '$._schemaURL') IS DISTINCT FROM 'VARCHAR')) > 0
    THEN 'every facet must be an object with _producer and _schemaURL'
END
"""


# One parse per event: what the tables need and what the structural check looks at. JSON-typed fields
# keep the JSON text (a string starts with '"'), so their type can be checked; VARCHAR is used where any
# non-string fails the check anyway (eventType, eventTime, runId) or where ->> also took the text.
# A facets object becomes a MAP (name -> the fields we read from any facet); a facet that is not an
# object gives a struct of NULLs, a facets value that is not an object a NULL map. Duplicate keys are kept
# as they are (DuckDB 1.5 builds the MAP without its uniqueness check; only fetching it into Python raises):
# SUSPECT looks for them.
_FACET = "_producer JSON, _schemaURL JSON"
_MAP = "MAP(VARCHAR, STRUCT({}))".format
_INPUT_FIELDS = ("STRUCT(namespace VARCHAR, name VARCHAR, field VARCHAR, "
                 "transformations STRUCT(type VARCHAR, subtype VARCHAR)[])[]")  # columnLineage
EVENT_STRUCTURE = json.dumps({
    "eventType": "VARCHAR", "eventTime": "VARCHAR", "producer": "JSON", "schemaURL": "JSON",
    "run": {"runId": "VARCHAR", "facets": _MAP(
        f"{_FACET}, run STRUCT(runId VARCHAR), job STRUCT(namespace VARCHAR, name VARCHAR), "
        "root STRUCT(run STRUCT(runId VARCHAR)), tags STRUCT(key VARCHAR, value VARCHAR)[], message VARCHAR")},
    "job": {"namespace": "JSON", "name": "JSON", "facets": _MAP(_FACET)},
    "inputs": [{"namespace": "JSON", "name": "JSON", "facets": _MAP(f"{_FACET}, datasetVersion VARCHAR"),
                "inputFacets": _MAP(_FACET)}],
    "outputs": [{"namespace": "JSON", "name": "JSON", "facets": _MAP(
        f"{_FACET}, datasetVersion VARCHAR, "
        'assertions STRUCT(assertion VARCHAR, "column" VARCHAR, success VARCHAR, severity VARCHAR, '
        "expected VARCHAR, actual VARCHAR)[], "
        f"fields MAP(VARCHAR, STRUCT(inputFields {_INPUT_FIELDS})), dataset {_INPUT_FIELDS}"),
        "outputFacets": _MAP(f"{_FACET}, rowCount VARCHAR, size VARCHAR")}],
})
KEY_PATHS = "['$', '$.run', '$.job']"  # k[1]: top-level keys, k[2]: run's, k[3]: job's

_STR = "coalesce(starts_with({}, '\"'), false)".format  # a JSON-typed field holds a string
_DUPLICATE_KEYS = "coalesce(list_unique(map_keys({0})) < cardinality({0}), false)".format


def _bad_facets(facets: str) -> str:
    return (f"coalesce(list_bool_or(list_transform(map_values({facets}), lambda f: f IS NULL OR NOT "
            f"{_STR('f._producer')} OR NOT {_STR('f._schemaURL')})), false) OR {_DUPLICATE_KEYS(facets)}")


def _bad_datasets(datasets: str, group: str, also: str = "false") -> str:
    return (f"coalesce(list_bool_or(list_transform({datasets}, lambda d: d IS NULL OR NOT {_STR('d.namespace')} "
            f"OR NOT {_STR('d.name')} OR {_bad_facets('d.facets')} OR {_bad_facets(f'd.{group}')} OR {also})), false)")


# True for every line STRUCTURAL_PROBLEM finds a problem in (and, rarely, for a fine one: duplicate
# keys in a facets object): a superset, decided exactly line by line. Evaluated over `e` and `k`.
UNREADABLE_FACETS = "a facets object (or columnLineage.fields) could not be read: duplicate keys?"
SUSPECT = f"""(
  e IS NULL OR k IS NULL
  OR NOT list_has_all({_ALLOWED}, k[1])
  OR NOT coalesce(list_contains({_TYPES}, e.eventType), false)
  OR NOT coalesce(regexp_matches(e.eventTime, '{_TIME_RE}'), false)
  OR TRY_CAST(e.eventTime AS TIMESTAMPTZ) IS NULL
  OR NOT {_STR("e.producer")} OR NOT {_STR("e.schemaURL")}
  OR TRY_CAST(e.run.runId AS UUID) IS NULL
  OR NOT {_STR("e.job.namespace")} OR NOT {_STR("e.job.name")} OR e.job.name = '""'
  OR (list_contains(k[1], 'inputs') AND e.inputs IS NULL)
  OR (list_contains(k[1], 'outputs') AND e.outputs IS NULL)
  OR (list_contains(k[2], 'facets') AND e.run.facets IS NULL)
  OR (list_contains(k[3], 'facets') AND e.job.facets IS NULL)
  OR {_bad_facets("e.run.facets")} OR {_bad_facets("e.job.facets")}
  OR {_bad_datasets("e.inputs", "inputFacets")}
  OR {_bad_datasets("e.outputs", "outputFacets", _DUPLICATE_KEYS("d.facets['columnLineage'].fields"))}
)"""


class IngestError(ValueError):
    """A batch that was refused as a whole: the store is unchanged."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__("; ".join(problems[:5]) + more)


@dataclass(frozen=True)
class IngestResult:
    read: int  # events read in this batch
    added: int  # events new to the store
    duplicates: int

    def __str__(self) -> str:
        return f"{self.read} event(s) read, {self.added} added, {self.duplicates} already stored"


ROW_GROUP_ROWS = 16_384  # see LineageStore.connect
_lock = threading.Lock()  # one writer per process (the receiver's threads)


class LineageStore:
    def __init__(self, settings: Settings | None = None, path: Path | None = None, validate: str = "auto"):
        """validate: which checks a batch gets besides the built-in structural one (always on):
        'auto' (default): the official OpenLineage JSON schema (the spec files shipped in the package)
          for events received one by one (`ingest_payloads`: the HTTP receiver, ~1 ms an event),
          the structural check only for the JSONL log (`ingest_file`: events our own producer wrote);
        'full': the official schema for both (~0.7 ms an event in Python: ~70 s for 100k events);
        'structural': the built-in check only."""
        if validate not in ("auto", "full", "structural"):
            raise ValueError(f"validate must be 'auto', 'full' or 'structural', not {validate!r}")
        self.settings = settings or get_settings()
        self.path = Path(path) if path else self.settings.lineage_store_path
        self.validate = validate

    @contextmanager
    def connect(self, read_only: bool = False, timeout_s: float = 10.0) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection; waits (bounded) while another process (e.g. the receiver) holds the file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The file is attached with row groups smaller than DuckDB's default (122,880 rows): a batch of
        # at least ROW_GROUP_ROWS events is then written to the file, compressed, as it is inserted, and
        # the commit only records it. With the default a 100k-event batch is less than one row group: it
        # went through the WAL (485 MB, uncompressed) and was written a second time by the checkpoint
        # when the connection closed (~3.5 s of ~4.5 s for the payload). The named in-memory database
        # is shared by the connections of this process, as `duckdb.connect(path)` shares its instance.
        instance = ":memory:provline-store-" + hashlib.sha1(str(self.path.resolve()).encode()).hexdigest()[:16]
        attach = f"ATTACH IF NOT EXISTS {path_literal(self.path)} AS lineage (ROW_GROUP_SIZE {ROW_GROUP_ROWS})"
        with open_duckdb(instance, attach, "USE lineage", "SET TimeZone = 'UTC'", DDL, wait_s=timeout_s) as con:
            yield con

    # ---- ingest -----------------------------------------------------------------------------

    def ingest_file(self, path: Path | None = None) -> IngestResult:
        """Ingest what was appended to a JSONL log since the last call (only complete lines)."""
        path = Path(path or self.settings.lineage_dir / "events.jsonl").resolve()
        if not path.exists():
            return IngestResult(0, 0, 0)
        with _lock, self.connect() as con:
            rows = con.execute("SELECT byte_offset, head, line_count FROM ingest_offsets WHERE path = ?",
                               [str(path)]).fetchall()
            row = rows[0] if rows else None
            with open(path, "rb") as handle:
                head = handle.read(256).hex()
                offset, lines_done = (row[0], row[2] or 0) if row else (0, 0)
                size = os.fstat(handle.fileno()).st_size
                if row and (size < offset or not head.startswith(row[1] or "")):
                    offset, lines_done = 0, 0  # replaced or truncated: read again (dedupe)
                handle.seek(offset)
                data = handle.read(max(size - offset, 0))  # one read (what is appended later: next time)
            end = data.rfind(b"\n") + 1  # a last line without its newline is still being written
            batch, n_lines = _lines_batch(data, end, lines_done)
            result = self._ingest(con, batch, str(path),
                                  offsets=(str(path), offset + end, head[:512], lines_done + n_lines))
        return result

    def ingest_payloads(self, payloads: Sequence[bytes | str], source: str = "http") -> IngestResult:
        """Ingest events given as JSON texts (one event each); all of them or none."""
        raw = [p.encode() if isinstance(p, str) else bytes(p) for p in payloads]
        batch = pa.table({"line_no": pa.array(range(1, len(raw) + 1), pa.int64()),
                          "raw": pa.array(raw, pa.binary())})
        with _lock, self.connect() as con:
            return self._ingest(con, batch, source, offsets=None)

    def _ingest(self, con: duckdb.DuckDBPyConnection, batch: pa.Table, source: str,
                offsets: tuple[str, int, str, int] | None) -> IngestResult:
        """batch: line_no (int64) and raw (binary or large_binary: one event each, maybe with its newline)."""
        if batch.num_rows == 0:
            if offsets:
                self._save_offset(con, offsets)
            return IngestResult(0, 0, 0)
        raw = batch.column("raw").combine_chunks()
        try:  # the same buffers as text, no copy; ASCII is UTF-8, else the full validation checks it
            text = pa.Array.from_buffers(
                pa.large_string() if pa.types.is_large_binary(raw.type) else pa.string(),
                len(raw), raw.buffers(), raw.null_count, raw.offset)
            if not _is_ascii(raw):
                text.validate(full=True)
        except pa.ArrowInvalid:
            line_nos = batch.column("line_no").to_pylist()
            bad = next(n for n, line in zip(line_nos, raw.to_pylist(), strict=True) if not _is_utf8(line))
            raise IngestError([f"{source}:{bad}: not UTF-8 text"]) from None
        # registered as JSON (Arrow's json extension type): DuckDB takes the text as is, without the
        # validating cast into the payload column; every line is parsed by _parse before it is stored
        raw_json = pa.ExtensionArray.from_storage(pa.json_(text.type), text)
        con.register("incoming_batch", pa.table({"line_no": batch.column("line_no"), "raw": raw_json}))
        try:
            self._parse(con)
            suspects = [n for (n,) in con.execute(
                "SELECT line_no FROM parsed WHERE suspect ORDER BY line_no").fetchall()]
            if suspects:
                self._diagnose(con, source, suspects)
            full_check = self.validate == "full" or (self.validate == "auto" and offsets is None)
            if full_check:
                full = []
                for n, line in zip(batch.column("line_no").to_pylist(), raw.to_pylist(), strict=True):
                    full.extend(f"{source}:{n}: {p}" for p in official_schema().problems(json.loads(line))[:3])
                    if len(full) >= 20:
                        break
                if full:
                    raise IngestError(full)
            return self._write(con, source, offsets)
        finally:
            con.unregister("incoming_batch")
            con.execute("DROP TABLE IF EXISTS parsed")

    @staticmethod
    def _parse(con: duckdb.DuckDBPyConnection) -> None:
        """`parsed`: per line, whether it is SUSPECT and the flat columns and lists the tables take."""
        sql = f"""CREATE OR REPLACE TEMP TABLE parsed AS
            SELECT line_no, {SUSPECT} AS suspect,
                   e.run.runId AS run_id, e.eventType AS event_type,
                   TRY_CAST(e.eventTime AS TIMESTAMPTZ) AS event_time,
                   e.job.namespace->>'$' AS job_namespace, e.job.name->>'$' AS job_name,
                   e.producer->>'$' AS producer,
                   e.run.facets['parent'] AS parent, e.run.facets['tags'].tags AS tags,
                   e.run.facets['errorMessage'].message AS error_message,
                   list_transform(e.inputs, lambda d: {{
                       'ns': d.namespace->>'$', 'name': d.name->>'$',
                       'version': d.facets['version'].datasetVersion}}) AS inputs,
                   list_transform(e.outputs, lambda d: {{
                       'ns': d.namespace->>'$', 'name': d.name->>'$',
                       'version': d.facets['version'].datasetVersion,
                       'row_count': TRY_CAST(d.outputFacets['outputStatistics'].rowCount AS BIGINT),
                       'size': TRY_CAST(d.outputFacets['outputStatistics'].size AS BIGINT),
                       'assertions': d.facets['dataQualityAssertions'].assertions,
                       'has_lineage': d.facets['columnLineage'] IS NOT NULL,
                       'lineage': map_entries(d.facets['columnLineage'].fields),
                       'dataset_lineage': d.facets['columnLineage'].dataset
                   }}) AS outputs
            FROM (SELECT line_no, GUARD json_transform(raw, $structure) END_GUARD AS e,
                         GUARD json_keys(raw, {KEY_PATHS}) END_GUARD AS k
                  FROM incoming_batch)"""
        try:  # one parse each; a line that is not JSON fails the whole statement ...
            con.execute(sql.replace("END_GUARD", "").replace("GUARD", ""), {"structure": EVENT_STRUCTURE})
        except duckdb.Error as error:
            if "json" not in str(error).lower():
                raise
            # ... then such lines get NULLs (one more parse, only in a batch that has them)
            con.execute(sql.replace("END_GUARD", "END").replace("GUARD", "CASE WHEN json_valid(raw) THEN"),
                        {"structure": EVENT_STRUCTURE})

    @staticmethod
    def _diagnose(con: duckdb.DuckDBPyConnection, source: str, suspects: list[int]) -> None:
        """The exact reasons for the SUSPECT lines, in line order (up to 20 problems); raises if any."""
        problems: list[str] = []
        for i in range(0, len(suspects), 1000):
            rows = con.execute(f"""SELECT line_no, {STRUCTURAL_PROBLEM} AS problem FROM (
                    SELECT line_no, CASE WHEN json_valid(raw) THEN raw::JSON END AS j
                    FROM incoming_batch WHERE list_contains($lines, line_no))
                ORDER BY line_no""", {"lines": suspects[i:i + 1000]}).fetchall()
            # flagged, yet fine by the exact check: a facets object the one-pass read could not take
            # apart (duplicate keys); refused rather than stored with its facets lost
            problems.extend(f"{source}:{n}: {p or UNREADABLE_FACETS}" for n, p in rows)
            if len(problems) >= 20:
                break
        if problems:
            raise IngestError(problems[:20])

    def _write(self, con: duckdb.DuckDBPyConnection, source: str,
               offsets: tuple[str, int, str, int] | None) -> IngestResult:
        received_at = datetime.now(UTC)
        try:
            with transaction(con):
                read = con.execute("SELECT count(*) FROM parsed").fetchone()[0]
                base = con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
                con.execute("""CREATE OR REPLACE TEMP TABLE fresh AS
                    WITH keyed AS (
                        SELECT line_no, run_id, event_type, event_time FROM parsed
                        QUALIFY row_number() OVER (PARTITION BY run_id, event_type, event_time ORDER BY line_no) = 1)
                    SELECT $base + row_number() OVER (ORDER BY line_no) AS seq, line_no FROM keyed k
                    ANTI JOIN events e USING (run_id, event_type, event_time)""", {"base": base})
                added = con.execute("SELECT count(*) FROM fresh").fetchone()[0]
                new = "fresh JOIN parsed USING (line_no)"
                con.execute(f"""INSERT INTO events SELECT
                        seq, run_id, event_type, event_time, job_namespace, job_name, producer,
                        parent.run.runId, parent.job.namespace || '/' || parent.job.name, parent.root.run.runId,
                        list_filter(tags, lambda t: t.key = 'partition')[1].value,
                        list_filter(tags, lambda t: t.key = 'code_version')[1].value,
                        list_filter(tags, lambda t: t.key = 'dagster_run_id')[1].value,
                        error_message, $source, $received_at, b.raw
                    FROM {new} JOIN incoming_batch b USING (line_no)""",
                            {"source": source, "received_at": received_at})
                con.execute(f"""INSERT INTO inputs SELECT seq, run_id, event_type, event_time, d.ns, d.name, d.version
                    FROM (SELECT seq, run_id, event_type, event_time, unnest(inputs) AS d FROM {new})""")
                con.execute(f"""CREATE OR REPLACE TEMP TABLE fresh_outputs AS
                    SELECT seq, run_id, event_type, event_time, unnest(outputs) AS d FROM {new}""")
                con.execute("""INSERT INTO outputs
                    SELECT seq, run_id, event_type, event_time, d.ns, d.name, d.version, d.row_count, d.size,
                           d.has_lineage
                    FROM fresh_outputs""")
                con.execute("""INSERT INTO assertions
                    SELECT seq, run_id, event_type, event_time, ns, name, a.assertion, a.column,
                           TRY_CAST(a.success AS BOOLEAN), lower(a.severity), a.expected, a.actual
                    FROM (SELECT seq, run_id, event_type, event_time, d.ns, d.name, unnest(d.assertions) AS a
                          FROM fresh_outputs)""")
                # one row per transformation of an input field; none given: DIRECT (INDIRECT for the whole dataset),
                # subtype unknown
                con.execute("""INSERT INTO column_lineage
                    SELECT seq, run_id, event_time, ns, name, field, i.namespace, i.name, i.field,
                           coalesce(upper(t.type), CASE WHEN field IS NULL THEN 'INDIRECT' ELSE 'DIRECT' END),
                           upper(t.subtype)
                    FROM (SELECT *, unnest(CASE WHEN len(i.transformations) > 0 THEN i.transformations
                                                ELSE [NULL] END) AS t
                          FROM (SELECT seq, run_id, event_time, ns, name, c.key AS field,
                                       unnest(c.value.inputFields) AS i
                                FROM (SELECT seq, run_id, event_time, d.ns, d.name, unnest(d.lineage) AS c
                                      FROM fresh_outputs)
                                UNION ALL
                                SELECT seq, run_id, event_time, d.ns, d.name, NULL, unnest(d.dataset_lineage)
                                FROM fresh_outputs))""")
                if offsets:
                    self._save_offset(con, offsets)
        finally:
            con.execute("DROP TABLE IF EXISTS fresh")
            con.execute("DROP TABLE IF EXISTS fresh_outputs")
        return IngestResult(read, added, read - added)

    @staticmethod
    def _save_offset(con: duckdb.DuckDBPyConnection, offsets: tuple[str, int, str, int]) -> None:
        con.execute(
            """INSERT INTO ingest_offsets (path, byte_offset, head, line_count, updated_at) VALUES (?, ?, ?, ?, now())
               ON CONFLICT (path) DO UPDATE SET byte_offset = excluded.byte_offset, head = excluded.head,
                                                line_count = excluded.line_count, updated_at = excluded.updated_at""",
            list(offsets),
        )

    # ---- small reads ------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        with self.connect() as con:
            return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
                    for t in ("events", "inputs", "outputs", "column_lineage", "assertions")}


def _lines_batch(data: bytes, end: int, lines_done: int) -> tuple[pa.Table, int]:
    """The complete lines of data[:end] as a batch (line_no, raw: each line with its newline), without
    copying them; blank lines are left out but counted. Returns (batch, number of lines)."""
    starts = array("q", [0])
    find, pos = data.find, 0
    while pos < end:
        pos = find(b"\n", pos, end) + 1
        starts.append(pos)
    n = len(starts) - 1
    raw = pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(starts), pa.py_buffer(data)])
    line_no = pa.array(range(lines_done + 1, lines_done + n + 1), pa.int64())
    # a blank line is short or starts with whitespace (a JSON line starts with '{'): few to look at
    blank = [i for i in range(n) if (starts[i + 1] - starts[i] < 3 or data[starts[i]] in b" \t\r\n")
             and not data[starts[i]:starts[i + 1]].strip()]
    batch = pa.table({"line_no": line_no, "raw": raw})
    if blank:
        keep = [True] * n
        for i in blank:
            keep[i] = False
        batch = batch.filter(pa.array(keep))
    return batch, n


def _is_ascii(raw: pa.Array) -> bool:
    """Whether the bytes of a (large_)binary array's values are all ASCII: one vectorized pass, no copy."""
    if len(raw) == 0:
        return True
    kind = "q" if pa.types.is_large_binary(raw.type) else "i"
    bounds = memoryview(raw.buffers()[1]).cast(kind)
    first, last = bounds[raw.offset], bounds[raw.offset + len(raw)]
    data = raw.buffers()[2]
    if data is None or last == first:
        return True
    as_bytes = pa.Array.from_buffers(pa.uint8(), last - first, [None, data.slice(first, last - first)])
    return pc.max(as_bytes).as_py() < 128


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
