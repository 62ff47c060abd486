"""The lineage store's ingest (idempotent, all-or-nothing) and the HTTP receiver, with real events."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import dataset_version_dataset, nominal_time_run
from openlineage.client.serde import Serde
from openlineage.client.transport.http import HttpConfig, HttpTransport

from pipelines.audit.receiver import LINEAGE_PATH, LineageReceiver
from pipelines.audit.store import IngestError, LineageStore

from .conftest import Audited

PRODUCER = "https://example.com/test-producer"


@pytest.fixture
def events_file(audited: Audited, tmp_path: Path) -> Path:
    copy = tmp_path / "events.jsonl"
    copy.write_bytes((audited.home / "lineage" / "events.jsonl").read_bytes())
    return copy


@pytest.fixture
def empty_store(tmp_path: Path) -> LineageStore:
    return LineageStore(path=tmp_path / "lineage.duckdb")


def test_ingesting_the_same_file_twice_adds_nothing(empty_store: LineageStore, events_file: Path):
    lines = events_file.read_bytes().count(b"\n")
    first = empty_store.ingest_file(events_file)
    assert first.added == lines and first.duplicates == 0
    counts = empty_store.counts()
    assert empty_store.ingest_file(events_file).read == 0  # offsets: nothing new
    assert empty_store.counts() == counts
    # the same events again from another file (or re-sent): deduplicated by (runId, eventType, eventTime)
    again = events_file.with_name("again.jsonl")
    again.write_bytes(events_file.read_bytes())
    assert empty_store.ingest_file(again).added == 0
    assert empty_store.counts() == counts
    # appended events are picked up, a half-written last line waits for its newline
    event = json.loads(events_file.read_text().splitlines()[0])
    event["eventTime"] = datetime.now(UTC).isoformat()
    text = json.dumps(event)
    with open(events_file, "a") as handle:
        handle.write(text[:40])
    assert empty_store.ingest_file(events_file).read == 0
    with open(events_file, "a") as handle:
        handle.write(text[40:] + "\n")
    assert empty_store.ingest_file(events_file).added == 1


@pytest.mark.parametrize("mutate, message", [
    (lambda e: e.update(eventTime="yesterday at noon"), "eventTime"),
    (lambda e: e.update(eventTime="2013-01-14T06:00:00"), "UTC offset"),
    (lambda e: e.update(eventType="DONE"), "eventType"),
    (lambda e: e.update(surprise=1), r"unknown field\(s\) surprise"),
    (lambda e: e["run"].update(runId="not-a-uuid"), "runId"),
    (lambda e: e.pop("job"), "job"),
    (lambda e: e["outputs"].append({"namespace": "x"}), "namespace and name"),
    (lambda e: e["run"]["facets"].update(bad={"no": "producer"}), "_producer"),
])
def test_a_bad_event_leaves_the_store_unchanged(empty_store: LineageStore, events_file: Path, mutate, message):
    lines = events_file.read_text().splitlines()
    good = lines[:5]
    bad = json.loads(lines[5])
    mutate(bad)
    events_file.write_text("\n".join([*good, json.dumps(bad)]) + "\n")
    before = empty_store.counts()
    with pytest.raises(IngestError, match=message) as error:
        empty_store.ingest_file(events_file)
    assert f"{events_file}:6:" in str(error.value)  # names the file and line
    assert empty_store.counts() == before  # not even the five good events: all or nothing
    with pytest.raises(IngestError):
        empty_store.ingest_payloads(["{not json"])
    assert empty_store.counts() == before


def test_full_schema_validation_catches_what_the_structural_check_cannot(empty_store: LineageStore, events_file):
    event = json.loads(events_file.read_text().splitlines()[0])
    event["run"]["facets"]["nominalTime"] = {
        "_producer": PRODUCER,
        "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/NominalTimeRunFacet.json#/$defs/NominalTimeRunFacet",
    }  # nominalStartTime is required by the facet's schema
    with pytest.raises(IngestError, match="nominalStartTime"):
        empty_store.ingest_payloads([json.dumps(event)])
    assert LineageStore(path=empty_store.path, validate="structural").ingest_payloads([json.dumps(event)]).added == 1


@pytest.fixture
def receiver(empty_store: LineageStore) -> Iterator[LineageReceiver]:
    server = LineageReceiver(empty_store, "127.0.0.1", 0, max_bytes=64 * 1024)
    server.start()
    yield server
    server.stop()


def _event(state: RunState, run_id: str) -> RunEvent:
    return RunEvent(
        eventType=state, eventTime=datetime.now(UTC).isoformat(), producer=PRODUCER,
        run=Run(runId=run_id, facets={"nominalTime": nominal_time_run.NominalTimeRunFacet(
            nominalStartTime="2013-01-14T00:00:00+00:00")}),
        job=Job(namespace="spark", name="nightly.load"),
        inputs=[InputDataset(namespace="s3://bucket", name="in/data", facets={
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion="v1")})],
        outputs=[OutputDataset(namespace="s3://bucket", name="out/data", facets={
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion="v2")})],
    )


@pytest.mark.e2e
def test_receiver_accepts_openlineage_pythons_own_http_transport(receiver: LineageReceiver):
    client = OpenLineageClient(transport=HttpTransport(HttpConfig(url=receiver.url)))
    run_id = str(uuid.uuid4())
    start, complete = _event(RunState.START, run_id), _event(RunState.COMPLETE, run_id)
    client.emit(start)
    client.emit(complete)
    client.emit(complete)  # a re-send is accepted and stored once
    counts = receiver.store.counts()
    assert counts["events"] == 2 and counts["inputs"] == 2
    from pipelines.audit import queries

    with receiver.store.connect() as con:
        tree = queries.upstream(con, "out/data")
    assert tree["version"] == "v2" and tree["inputs"][0]["version"] == "v1"


@pytest.mark.e2e
def test_receiver_rejects_malformed_events_with_4xx_and_keeps_going(receiver: LineageReceiver, events_file: Path):
    url = receiver.url + LINEAGE_PATH
    bad_json = requests.post(url, data=b"{nope", headers={"Content-Type": "application/json"}, timeout=5)
    assert bad_json.status_code == 400 and "malformed JSON" in bad_json.json()["error"]
    event = json.loads(events_file.read_text().splitlines()[0])
    event["eventTime"] = "not a time"
    invalid = requests.post(url, json=event, timeout=5)
    assert invalid.status_code == 400 and "eventTime" in " ".join(invalid.json()["problems"])
    big = requests.post(url, data=b"x" * (65 * 1024), timeout=5)
    assert big.status_code == 413
    assert requests.post(receiver.url + "/api/v1/other", json={}, timeout=5).status_code == 404
    assert requests.get(url, timeout=5).status_code == 405
    assert receiver.store.counts()["events"] == 0
    event["eventTime"] = datetime.now(UTC).isoformat()
    ok = requests.post(url, json=event, timeout=5)  # still serving
    assert ok.status_code == 201 and receiver.store.counts()["events"] == 1


@pytest.mark.e2e
def test_receiver_answers_500_when_the_store_fails_and_keeps_serving(receiver: LineageReceiver, monkeypatch):
    url = receiver.url + LINEAGE_PATH
    body = Serde.to_json(_event(RunState.START, str(uuid.uuid4())))

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(receiver.store, "ingest_payloads", broken)
    failed = requests.post(url, data=body, timeout=5)
    assert failed.status_code == 500 and failed.json() == {"error": "internal error", "detail": "disk full"}
    monkeypatch.undo()
    assert requests.post(url, data=body, timeout=5).status_code == 201
    assert receiver.received == 1


@pytest.mark.e2e
def test_receiver_needs_a_content_length_and_serves_clients_side_by_side(receiver: LineageReceiver):
    url = receiver.url + LINEAGE_PATH
    chunked = requests.post(url, data=iter([b'{"eventType": "START"}']), timeout=5)  # Transfer-Encoding: chunked
    assert chunked.status_code == 411 and "Content-Length" in chunked.json()["error"]
    host, port = receiver.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as stalled:  # a client stuck mid-body holds no one up
        stalled.sendall(b"POST /api/v1/lineage HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        bodies = [Serde.to_json(_event(RunState.START, str(uuid.uuid4()))) for _ in range(8)]
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda body: requests.post(url, data=body, timeout=5).status_code, bodies))
        assert codes == [201] * 8 and receiver.received == 8 and receiver.store.counts()["events"] == 8
        receiver.stop()  # nor does it hold up a stop (raises if the server is still running)


def test_one_pass_ingest_finds_the_first_bad_line_and_its_reason(empty_store: LineageStore, events_file: Path):
    """The vectorized check flags lines; the exact check names the reason, in line order, with blank lines
    counted, a line that is not JSON among good ones, and duplicate facet names refused."""
    lines = events_file.read_text().splitlines()[:6]
    not_an_object = json.dumps([1, 2])
    no_run_facets = json.loads(lines[0])
    no_run_facets["run"]["facets"] = 5
    events_file.write_text("\n".join([lines[0], "", "{oops", lines[1], not_an_object,
                                      json.dumps(no_run_facets)]) + "\n")
    with pytest.raises(IngestError) as error:
        empty_store.ingest_file(events_file)
    assert error.value.problems == [f"{events_file}:3: not valid JSON", f"{events_file}:5: not a JSON object",
                                    f"{events_file}:6: facets must be objects"]
    assert empty_store.counts()["events"] == 0
    # duplicate facet names cannot be taken apart in one pass: refused with a reason, not stored half
    text = json.loads(lines[2])
    text["run"]["facets"] = {"a": {"_producer": "p", "_schemaURL": "s"}}
    raw = json.dumps(text).replace('"a": {', '"a": {"_producer": "p", "_schemaURL": "s"}, "a": {', 1)
    with pytest.raises(IngestError, match="duplicate keys"):
        empty_store.ingest_payloads([raw])
    # blank lines are skipped but counted; a good file still ingests in full
    events_file.write_text("\n".join([lines[0], "", "  ", *lines[1:]]) + "\n")
    assert empty_store.ingest_file(events_file).added == len(lines)
    with empty_store.connect() as con:
        stored = con.execute("SELECT payload FROM events ORDER BY seq LIMIT 1").fetchone()[0]
    assert json.loads(stored) == json.loads(lines[0])


@pytest.mark.parametrize("where", ["job", "inputs", "outputs", "columnLineage"])
def test_duplicate_keys_anywhere_in_the_facets_refuse_the_batch(empty_store: LineageStore, where: str):
    """DuckDB 1.5 builds a MAP with duplicate keys without complaint: the store must look for them."""
    facet = {"_producer": PRODUCER, "_schemaURL": "https://example.com/f.json"}
    event = {"eventTime": "2013-01-14T06:00:00+00:00", "eventType": "COMPLETE", "producer": PRODUCER,
             "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
             "run": {"runId": str(uuid.uuid4())}, "job": {"namespace": "ns", "name": "j", "facets": {}},
             "inputs": [{"namespace": "db", "name": "a", "facets": {}}],
             "outputs": [{"namespace": "db", "name": "b", "outputFacets": {}, "facets": {"columnLineage": {
                 **facet, "fields": {"x": {"inputFields": [{"namespace": "db", "name": "a", "field": "y"}]}}}}}]}
    group = {"job": event["job"]["facets"], "inputs": event["inputs"][0]["facets"],
             "outputs": event["outputs"][0]["outputFacets"]}.get(where)
    if group is not None:
        group["dup"] = facet
    key = '"x": {' if where == "columnLineage" else '"dup": {'
    raw = json.dumps(event)
    with pytest.raises(IngestError, match="duplicate keys"):
        empty_store.ingest_payloads([raw.replace(key, f'{key}"_producer": "p", "_schemaURL": "s"}}, {key}', 1)])
    assert empty_store.counts()["events"] == 0
    assert empty_store.ingest_payloads([raw]).added == 1  # the same event without the duplicate


def test_one_pass_ingest_fills_the_tables_as_the_event_says(empty_store: LineageStore):
    run_id, parent = str(uuid.uuid4()), str(uuid.uuid4())
    facet = {"_producer": PRODUCER, "_schemaURL": "https://example.com/f.json"}
    event = {
        "eventTime": "2013-01-14T06:00:00+00:00", "eventType": "COMPLETE", "producer": PRODUCER,
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": run_id, "facets": {
            "parent": {**facet, "run": {"runId": parent}, "job": {"namespace": "ns", "name": "daily"},
                       "root": {"run": {"runId": parent}, "job": {"namespace": "ns", "name": "daily"}}},
            "tags": {**facet, "tags": [{"key": "partition", "value": "2013-01-14"},
                                       {"key": "code_version", "value": "abc"}]},
            "errorMessage": {**facet, "message": "boom", "programmingLanguage": "python"}}},
        "job": {"namespace": "ns", "name": "job\u00e9", "facets": {"jobType": {**facet, "jobType": "ASSET"}}},
        "inputs": [{"namespace": "db", "name": "raw.a", "facets": {"version": {**facet, "datasetVersion": "v1"}}}],
        "outputs": [{"namespace": "db", "name": "marts.b", "facets": {
            "version": {**facet, "datasetVersion": "v2"},
            "schema": {**facet, "fields": [{"name": "x", "type": "INT"}]},
            "dataQualityAssertions": {**facet, "assertions": [
                {"assertion": "not_null", "column": "x", "success": False, "severity": "WARN"}]},
            "columnLineage": {**facet, "fields": {"x": {"inputFields": [
                {"namespace": "db", "name": "raw.a", "field": "y"}]}}}},
            "outputFacets": {"outputStatistics": {**facet, "rowCount": 7, "size": 70}}}],
    }
    assert empty_store.ingest_payloads([json.dumps(event)]).added == 1
    with empty_store.connect() as con:
        row = con.execute("""SELECT job_name, parent_run_id, parent_job, root_run_id, partition, code_version,
                                    error_message FROM events""").fetchone()
        assert row == ("job\u00e9", parent, "ns/daily", parent, "2013-01-14", "abc", "boom")
        assert con.execute("SELECT name, version FROM inputs").fetchall() == [("raw.a", "v1")]
        assert con.execute("SELECT name, version, row_count, size_bytes FROM outputs").fetchall() == [
            ("marts.b", "v2", 7, 70)]
        assert con.execute("SELECT assertion, column_name, success, severity FROM assertions").fetchall() == [
            ("not_null", "x", False, "warn")]
        assert con.execute("SELECT field, input_name, input_field FROM column_lineage").fetchall() == [
            ("x", "raw.a", "y")]


def test_by_default_the_official_schema_checks_http_events_not_the_log(tmp_path: Path, events_file: Path):
    event = json.loads(events_file.read_text().splitlines()[0])
    event["run"]["facets"]["nominalTime"] = {
        "_producer": PRODUCER,
        "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/NominalTimeRunFacet.json#/$defs/NominalTimeRunFacet",
    }
    log = tmp_path / "one.jsonl"
    log.write_text(json.dumps(event) + "\n")
    with pytest.raises(IngestError, match="nominalStartTime"):
        LineageStore(path=tmp_path / "full.duckdb", validate="full").ingest_file(log)
    assert LineageStore(path=tmp_path / "auto.duckdb").ingest_file(log).added == 1
    with pytest.raises(ValueError, match="validate"):
        LineageStore(path=tmp_path / "x.duckdb", validate="everything")


def _lineage_event(job: str, inputs: list[str], output: str, lineage: dict | None, time: str) -> str:
    facet = {"_producer": PRODUCER, "_schemaURL": "https://example.com/f.json"}
    facets = {"version": {**facet, "datasetVersion": f"{output}@{time}"}}
    if lineage is not None:
        facets["columnLineage"] = {**facet, **lineage}
    return json.dumps({
        "eventTime": time, "eventType": "COMPLETE", "producer": PRODUCER,
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": str(uuid.uuid4())}, "job": {"namespace": "ns", "name": job},
        "inputs": [{"namespace": "db", "name": n} for n in inputs],
        "outputs": [{"namespace": "db", "name": output, "facets": facets}]})


def _field(name: str, field: str, *transformations: tuple[str, str]) -> dict:
    return {"namespace": "db", "name": name, "field": field,
            "transformations": [{"type": t, "subtype": s} for t, s in transformations]}


def test_column_lineage_transformations_and_dataset_edges_drive_downstream(empty_store: LineageStore):
    from pipelines.audit import queries

    t0, t1 = "2013-01-14T06:00:00+00:00", "2013-01-14T07:00:00+00:00"
    joined = {"fields": {"k": {"inputFields": [_field("a", "k")]},  # no transformations: DIRECT
                         "v": {"inputFields": [_field("b", "v", ("DIRECT", "TRANSFORMATION"))]}},
              "dataset": [_field("a", "k", ("INDIRECT", "JOIN")), _field("b", "k", ("INDIRECT", "JOIN"))]}
    events = [
        _lineage_event("j", ["a", "b"], "j", joined, t0),
        # an older event of `s` said every column of it came from j.v; the latest (kept) one: only s.x
        _lineage_event("s", ["j"], "s", {"fields": {"x": {"inputFields": [_field("j", "v")]},
                                                    "y": {"inputFields": [_field("j", "v")]}}}, t0),
        _lineage_event("s", ["j"], "s",
                       {"fields": {"x": {"inputFields": [_field("j", "v", ("DIRECT", "IDENTITY"))]}}}, t1),
        _lineage_event("legacy", ["j"], "u", None, t0),  # no columnLineage facet: reached from any column of j
        _lineage_event("other", ["b"], "w", {"fields": {"z": {"inputFields": [_field("b", "z")]}}}, t0),
    ]
    assert empty_store.ingest_payloads(events).added == len(events)
    with empty_store.connect() as con:
        assert con.execute("""SELECT field, input_name, input_field, transformation_type, transformation_subtype
                              FROM column_lineage WHERE name = 'j' ORDER BY ALL""").fetchall() == [
            ("k", "a", "k", "DIRECT", None), ("v", "b", "v", "DIRECT", "TRANSFORMATION"),
            (None, "a", "k", "INDIRECT", "JOIN"), (None, "b", "k", "INDIRECT", "JOIN")]
        assert dict(con.execute("SELECT name, has_column_lineage FROM outputs").fetchall())["u"] is False
        by_key = queries.downstream(con, "b.k")["edges"]
        by_value = queries.downstream(con, "b.v")["edges"]
        by_z = queries.downstream(con, "b.z")["edges"]
        old = queries.downstream(con, "j.v", as_of=datetime(2013, 1, 14, 6, 30, tzinfo=UTC))["edges"]
    # the join key reaches all of j, then what derives from any column of j
    assert [(e["depth"], e["from"], e["to"], e["label"]) for e in by_key] == [
        (1, "b.k", "j", "indirect: JOIN"),
        (2, "j", "s.x", "direct: IDENTITY"),
        (2, "j", "u", "indirect: reads the dataset (no column lineage)")]
    assert by_key[1]["via"] == "v"
    # a plain value column: its column only (and the reader without column lineage)
    assert [(e["from"], e["to"], e["indirect"]) for e in by_value] == [
        ("b.v", "j.v", False), ("j.v", "s.x", False), ("j.v", "u", True)]
    # b is read by j, but j's lineage says nothing of b.z: no over-reporting
    assert [e["to"] for e in by_z] == ["w.z"]
    assert {e["to"] for e in old} == {"s.x", "s.y", "u"}  # as of t0: the older event of s
