"""The lineage store: a DuckDB database of OpenLineage RunEvents, normalized for audits.

Events arrive from the JSONL file log (`ingest_file`, incremental: the byte offset reached in each
file is remembered) or one by one over HTTP (`ingest_payloads`, used by the receiver). Either way a
batch is validated as a whole (schema.py), then written in one transaction: all of it or nothing.
Events are deduplicated by (runId, eventType, eventTime): ingesting the same file twice, or receiving
an event the outbox re-sent, adds nothing.

JSON is parsed and normalized by DuckDB itself (json_extract / unnest), not in Python: that is what
makes a 100k-event ingest take seconds. Tables (every row carries the event's seq, run_id and
event_time, so any query can be asked "as of" a time):

    events          one row per event: run/job columns, parent, code_version, partition, raw payload
    inputs          event x input dataset, with its datasetVersion
    outputs         event x output dataset, with datasetVersion and outputStatistics
    column_lineage  event x output column x input column (columnLineage facet)
    assertions      event x output x dataQualityAssertions entry (with severity)
    ingest_offsets  file path -> bytes ingested
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from pipelines.audit.schema import EVENT_TYPES, TOP_LEVEL_FIELDS, official_schema
from pipelines.settings import Settings, get_settings

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
    namespace VARCHAR, name VARCHAR, version VARCHAR, row_count BIGINT, size_bytes BIGINT
);
CREATE TABLE IF NOT EXISTS column_lineage (
    seq BIGINT, run_id VARCHAR, event_time TIMESTAMPTZ,
    namespace VARCHAR, name VARCHAR, field VARCHAR,
    input_namespace VARCHAR, input_name VARCHAR, input_field VARCHAR
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
"""

# One row per batch line: NULL when structurally fine, else what is wrong. Evaluated over `parsed`.
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


_lock = threading.Lock()  # one writer per process (the receiver's threads)


class LineageStore:
    def __init__(self, settings: Settings | None = None, path: Path | None = None, validate: str = "full"):
        """validate: 'full' = official schema when available + structural; 'structural' = built-in only."""
        self.settings = settings or get_settings()
        self.path = Path(path) if path else self.settings.lineage_store_path
        self.validate = validate

    @contextmanager
    def connect(self, read_only: bool = False, timeout_s: float = 10.0) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection; waits (bounded) while another process (e.g. the receiver) holds the file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                con = duckdb.connect(str(self.path))
                break
            except duckdb.IOException as error:
                if "lock" not in str(error).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        try:
            con.execute("SET TimeZone = 'UTC'")
            con.execute(DDL)
            yield con
        finally:
            con.close()

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
                size = path.stat().st_size
                if row and (size < offset or not head.startswith(row[1] or "")):
                    offset, lines_done = 0, 0  # replaced or truncated: read again (dedupe)
                handle.seek(offset)
                data = handle.read()
            end = data.rfind(b"\n") + 1  # a last line without its newline is still being written
            data = data[:end]
            lines = data.split(b"\n")[:-1] if data else []
            numbered = [(lines_done + 1 + i, line) for i, line in enumerate(lines) if line.strip()]
            result = self._ingest(con, numbered, str(path),
                                  offsets=(str(path), offset + end, head[:512], lines_done + len(lines)))
        return result

    def ingest_payloads(self, payloads: Sequence[bytes | str], source: str = "http") -> IngestResult:
        """Ingest events given as JSON texts (one event each); all of them or none."""
        numbered = [(i + 1, p.encode() if isinstance(p, str) else p) for i, p in enumerate(payloads)]
        with _lock, self.connect() as con:
            return self._ingest(con, numbered, source, offsets=None)

    def _ingest(self, con: duckdb.DuckDBPyConnection, numbered: list[tuple[int, bytes]], source: str,
                offsets: tuple[str, int, str, int] | None) -> IngestResult:
        if not numbered:
            if offsets:
                self._save_offset(con, offsets)
            return IngestResult(0, 0, 0)
        try:
            raw = pa.array([line for _, line in numbered], pa.binary()).cast(pa.large_string())
        except pa.ArrowInvalid:
            bad = next(n for n, line in numbered if not _is_utf8(line))
            raise IngestError([f"{source}:{bad}: not UTF-8 text"]) from None
        batch = pa.table({"line_no": pa.array([n for n, _ in numbered], pa.int64()), "raw": raw})
        con.register("incoming_batch", batch)
        try:
            con.execute("""CREATE OR REPLACE TEMP TABLE parsed AS
                SELECT line_no, raw, CASE WHEN json_valid(raw) THEN raw::JSON END AS j FROM incoming_batch""")
            problems = con.execute(f"""SELECT line_no, problem FROM (
                    SELECT line_no, {STRUCTURAL_PROBLEM} AS problem FROM parsed)
                WHERE problem IS NOT NULL ORDER BY line_no LIMIT 20""").fetchall()
            if problems:
                raise IngestError([f"{source}:{n}: {p}" for n, p in problems])
            if self.validate == "full" and (schema := official_schema()) is not None:
                full = []
                for n, line in numbered:
                    full.extend(f"{source}:{n}: {p}" for p in schema.problems(json.loads(line))[:3])
                    if len(full) >= 20:
                        break
                if full:
                    raise IngestError(full)
            return self._write(con, source, offsets)
        finally:
            con.unregister("incoming_batch")
            con.execute("DROP TABLE IF EXISTS parsed")

    def _write(self, con: duckdb.DuckDBPyConnection, source: str,
               offsets: tuple[str, int, str, int] | None) -> IngestResult:
        received_at = datetime.now(UTC)
        con.execute("BEGIN TRANSACTION")
        try:
            read = con.execute("SELECT count(*) FROM parsed").fetchone()[0]
            base = con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
            con.execute("""CREATE OR REPLACE TEMP TABLE fresh AS
                WITH keyed AS (
                    SELECT line_no, j, j->>'$.run.runId' AS run_id, j->>'$.eventType' AS event_type,
                           CAST(j->>'$.eventTime' AS TIMESTAMPTZ) AS event_time,
                           from_json(j->'$.run.facets.tags.tags', '[{"key": "VARCHAR", "value": "VARCHAR"}]') AS tags
                    FROM parsed
                    QUALIFY row_number() OVER (PARTITION BY run_id, event_type, event_time ORDER BY line_no) = 1)
                SELECT $base + row_number() OVER (ORDER BY line_no) AS seq, k.* FROM keyed k
                ANTI JOIN events e USING (run_id, event_type, event_time)""", {"base": base})
            added = con.execute("SELECT count(*) FROM fresh").fetchone()[0]
            con.execute("""INSERT INTO events SELECT
                    seq, run_id, event_type, event_time, j->>'$.job.namespace', j->>'$.job.name', j->>'$.producer',
                    j->>'$.run.facets.parent.run.runId',
                    (j->>'$.run.facets.parent.job.namespace') || '/' || (j->>'$.run.facets.parent.job.name'),
                    j->>'$.run.facets.parent.root.run.runId',
                    list_filter(tags, lambda t: t.key = 'partition')[1].value,
                    list_filter(tags, lambda t: t.key = 'code_version')[1].value,
                    list_filter(tags, lambda t: t.key = 'dagster_run_id')[1].value,
                    j->>'$.run.facets.errorMessage.message',
                    $source, $received_at, j
                FROM fresh""", {"source": source, "received_at": received_at})
            con.execute("""INSERT INTO inputs
                SELECT seq, run_id, event_type, event_time, d->>'$.namespace', d->>'$.name',
                       d->>'$.facets.version.datasetVersion'
                FROM (SELECT seq, run_id, event_type, event_time, unnest(json_extract(j, '$.inputs[*]')) AS d
                      FROM fresh)""")
            con.execute("""CREATE OR REPLACE TEMP TABLE fresh_outputs AS
                SELECT seq, run_id, event_type, event_time, unnest(json_extract(j, '$.outputs[*]')) AS d FROM fresh""")
            con.execute("""INSERT INTO outputs
                SELECT seq, run_id, event_type, event_time, d->>'$.namespace', d->>'$.name',
                       d->>'$.facets.version.datasetVersion',
                       TRY_CAST(d->>'$.outputFacets.outputStatistics.rowCount' AS BIGINT),
                       TRY_CAST(d->>'$.outputFacets.outputStatistics.size' AS BIGINT)
                FROM fresh_outputs""")
            con.execute("""INSERT INTO assertions
                SELECT seq, run_id, event_type, event_time, ns, name, a->>'$.assertion', a->>'$.column',
                       TRY_CAST(a->>'$.success' AS BOOLEAN), lower(a->>'$.severity'), a->>'$.expected',
                       a->>'$.actual'
                FROM (SELECT seq, run_id, event_type, event_time, d->>'$.namespace' AS ns, d->>'$.name' AS name,
                             unnest(json_extract(d, '$.facets.dataQualityAssertions.assertions[*]')) AS a
                      FROM fresh_outputs)""")
            con.execute("""INSERT INTO column_lineage
                WITH f AS (
                    SELECT seq, run_id, event_time, d->>'$.namespace' AS ns, d->>'$.name' AS name,
                           d->'$.facets.columnLineage.fields' AS fields
                    FROM fresh_outputs WHERE json_type(d, '$.facets.columnLineage.fields') = 'OBJECT'),
                k AS (SELECT *, unnest(json_keys(fields)) AS field FROM f),
                i AS (SELECT seq, run_id, event_time, ns, name, field,
                             unnest(json_extract(
                                 json_extract(fields, '/' || replace(replace(field, '~', '~0'), '/', '~1')),
                                 '$.inputFields[*]')) AS inp FROM k)
                SELECT seq, run_id, event_time, ns, name, field, inp->>'$.namespace', inp->>'$.name',
                       inp->>'$.field'
                FROM i""")
            if offsets:
                self._save_offset(con, offsets)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
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


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
