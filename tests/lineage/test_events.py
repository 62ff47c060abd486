"""What the emitter writes: spec-valid events with the right ids, parents and facets."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from lineage_support import INPUTS, asset_run, output, read_jsonl, validate

from pipelines.lineage import LineageEmitter, naming
from pipelines.lineage.facets import strip_credentials
from pipelines.lineage.model import IDENTITY, ColumnSource, IndirectSource, SourceFile, Transformation
from pipelines.settings import get_settings


def events_file(home: Path) -> Path:
    return home / "lineage" / "events.jsonl"


def emit_everything(emitter: LineageEmitter) -> None:
    run = asset_run()
    emitter.run_started(run.dagster_run_id, run.dagster_job_name)
    emitter.asset_started(run, INPUTS)
    emitter.asset_completed(run, INPUTS, output())
    failed = asset_run(asset_key="marts.carrier_daily_performance", attempt=1)
    emitter.asset_started(failed, INPUTS)
    emitter.asset_failed(failed, INPUTS, "check row_count_min failed", output(ok=False), "Traceback: ...")
    aborted = asset_run(asset_key="marts.route_stats")
    emitter.asset_started(aborted, INPUTS)
    emitter.asset_aborted(aborted, INPUTS)
    raw = asset_run(asset_key="raw.flights", sql=None)
    emitter.asset_started(raw, [SourceFile("/data/flights.csv")])
    emitter.asset_completed(raw, [SourceFile("/data/flights.csv")], output())
    emitter.run_finished(run.dagster_run_id, run.dagster_job_name, "FAIL", "1 step failed")


def test_default_file_transport_events_are_spec_valid(home: Path) -> None:
    emit_everything(LineageEmitter())
    events = read_jsonl(events_file(home))
    assert [e["eventType"] for e in events] == [
        "START", "START", "COMPLETE", "START", "FAIL", "START", "ABORT", "START", "COMPLETE", "FAIL",
    ]  # fmt: skip
    validate(events_file(home))


def test_each_asset_run_has_one_start_and_one_terminal_with_parent(home: Path) -> None:
    emit_everything(LineageEmitter())
    events = read_jsonl(events_file(home))
    run = asset_run()
    parent_id = naming.dagster_run_id(run.dagster_run_id)
    dagster_events = [e for e in events if e["run"]["runId"] == parent_id]
    assert [e["eventType"] for e in dagster_events] == ["START", "FAIL"]
    job = dagster_events[0]["job"]
    assert (job["namespace"], job["name"], list(job["facets"])) == ("provline", "daily_flights", ["jobType"])
    job_type = job["facets"]["jobType"]
    assert (job_type["integration"], job_type["jobType"], job_type["processingType"]) == ("DAGSTER", "JOB", "BATCH")
    by_run: dict[str, list[str]] = {}
    for e in events:
        if e["run"]["runId"] != parent_id:
            by_run.setdefault(e["run"]["runId"], []).append(e["eventType"])
            parent = e["run"]["facets"]["parent"]
            assert parent["run"]["runId"] == parent_id
            assert parent["root"]["run"]["runId"] == parent_id
            assert parent["job"] == {"namespace": "provline", "name": "daily_flights", "facets": {}}
    assert len(by_run) == 4
    for types in by_run.values():
        assert types[0] == "START" and len(types) == 2 and types[1] in {"COMPLETE", "FAIL", "ABORT"}


def test_complete_event_carries_versions_schema_lineage_and_quality(home: Path) -> None:
    emit_everything(LineageEmitter())
    complete = read_jsonl(events_file(home))[2]
    assert complete["job"]["name"] == "marts.flight_facts"
    assert set(complete["job"]["facets"]) >= {"jobType", "sql", "documentation", "ownership", "tags"}
    assert complete["job"]["facets"]["jobType"]["integration"] == "DAGSTER"
    assert set(complete["run"]["facets"]) >= {"parent", "nominalTime", "processing_engine"}
    tags = {t["key"]: t["value"] for t in complete["run"]["facets"]["tags"]["tags"]}
    assert tags["dagster_run_id"] == asset_run().dagster_run_id
    assert (tags["partition"], tags["attempt"], tags["code_version"]) == ("2013-01-01", "1", "v1")
    assert "openlineage_client_version" in tags  # the client's own tags are merged, not replaced
    assert complete["run"]["facets"]["nominalTime"]["nominalStartTime"].startswith("2013-01-01T00:00:00")
    assert [(i["namespace"], i["name"], i["facets"]["version"]["datasetVersion"]) for i in complete["inputs"]] == [
        ("duckdb://warehouse", "staging.flights", "sha256:aaa"),
        ("duckdb://warehouse", "staging.airlines", "sha256:bbb"),
    ]
    (out,) = complete["outputs"]
    assert (out["namespace"], out["name"]) == ("duckdb://warehouse", "marts.flight_facts")
    assert out["facets"]["version"]["datasetVersion"] == "sha256:ccc"
    assert out["facets"]["schema"]["fields"][1]["description"] == "Carrier's full name."
    assert out["outputFacets"]["outputStatistics"]["rowCount"] == 842
    assert "size" not in out["outputFacets"]["outputStatistics"]  # no honest byte size is known: none is sent
    assert out["facets"]["columnLineage"]["fields"]["carrier_name"]["inputFields"][0] == {
        "namespace": "duckdb://warehouse",
        "name": "staging.airlines",
        "field": "name",
        "transformations": [],
    }
    checks = out["facets"]["dataQualityAssertions"]["assertions"]
    assert {(a["assertion"], a["success"], a["severity"], a.get("expected")) for a in checks} == {
        ("not_null", True, "error", "0"),
        ("row_count_min", True, "error", ">= 1"),
    }
    metrics = out["facets"]["dataQualityMetrics"]
    assert metrics["rowCount"] == 842
    assert metrics["columnMetrics"]["carrier_name"]["nullCount"] == 3


def test_column_lineage_carries_direct_and_indirect_transformations(home: Path) -> None:
    typed = output()
    typed.column_lineage = {
        "carrier": [ColumnSource("staging.flights", "carrier", IDENTITY)],
        "carrier_name": [
            ("staging.airlines", "name"),  # a plain pair still works: no transformations
            ColumnSource("staging.airlines", "name", Transformation("INDIRECT", "CONDITIONAL")),
        ],
    }
    typed.indirect_lineage = [
        IndirectSource("staging.airlines", "carrier", "JOIN"),
        IndirectSource("staging.flights", "carrier", "JOIN"),
        ("staging.flights", "flight_date", "FILTER"),  # plain triples too
        IndirectSource("staging.flights", "flight_date", "GROUP_BY"),
    ]
    emitter = LineageEmitter()
    emitter.asset_completed(asset_run(), INPUTS, typed)
    (event,) = read_jsonl(events_file(home))
    facet = event["outputs"][0]["facets"]["columnLineage"]
    assert facet["_schemaURL"].endswith("/1-2-0/ColumnLineageDatasetFacet.json#/$defs/ColumnLineageDatasetFacet")
    assert facet["fields"]["carrier"]["inputFields"] == [
        {"namespace": "duckdb://warehouse", "name": "staging.flights", "field": "carrier",
         "transformations": [{"type": "DIRECT", "subtype": "IDENTITY"}]},
    ]  # fmt: skip
    # one InputField per input column, its transformations merged
    (name,) = facet["fields"]["carrier_name"]["inputFields"]
    assert name["transformations"] == [{"type": "INDIRECT", "subtype": "CONDITIONAL"}]
    assert [(f["name"], f["field"], f["transformations"]) for f in facet["dataset"]] == [
        ("staging.airlines", "carrier", [{"type": "INDIRECT", "subtype": "JOIN"}]),
        ("staging.flights", "carrier", [{"type": "INDIRECT", "subtype": "JOIN"}]),
        ("staging.flights", "flight_date",
         [{"type": "INDIRECT", "subtype": "FILTER"}, {"type": "INDIRECT", "subtype": "GROUP_BY"}]),
    ]  # fmt: skip
    validate(events_file(home))


def test_fail_event_carries_error_and_failed_assertions_but_no_new_version(home: Path) -> None:
    emit_everything(LineageEmitter())
    fail = read_jsonl(events_file(home))[4]
    assert fail["eventType"] == "FAIL"
    error = fail["run"]["facets"]["errorMessage"]
    assert (error["message"], error["programmingLanguage"], error["stackTrace"]) == (
        "check row_count_min failed",
        "python",
        "Traceback: ...",
    )
    (out,) = fail["outputs"]
    failed = [a for a in out["facets"]["dataQualityAssertions"]["assertions"] if not a["success"]]
    assert [(a["assertion"], a["actual"]) for a in failed] == [("row_count_min", "0")]
    assert "version" not in out["facets"] and "outputStatistics" not in out.get("outputFacets", {})


def test_source_files_follow_the_file_naming_spec(home: Path) -> None:
    emit_everything(LineageEmitter())
    raw_complete = read_jsonl(events_file(home))[8]
    assert raw_complete["inputs"][0]["namespace"] == "file"
    assert raw_complete["inputs"][0]["name"] == "/data/flights.csv"


def test_run_ids_are_deterministic_per_attempt() -> None:
    first = naming.asset_run_id("r1", "marts.flight_facts", "2013-01-01", 1)
    assert first == naming.asset_run_id("r1", "marts/flight_facts", "2013-01-01", 1)
    assert uuid.UUID(first).version == 5
    assert first != naming.asset_run_id("r1", "marts.flight_facts", "2013-01-01", 2)
    assert first != naming.asset_run_id("r1", "marts.flight_facts", "2013-01-02", 1)
    assert first != naming.asset_run_id("r2", "marts.flight_facts", "2013-01-01", 1)
    parent = naming.dagster_run_id("r1")
    assert uuid.UUID(parent).version == 5
    assert parent not in (naming.dagster_run_id("r2"), first)
    # the same ids from another interpreter (another hash seed, nothing shared in memory)
    code = (
        "from pipelines.lineage import naming; "
        "print(naming.dagster_run_id('r1'), naming.asset_run_id('r1', 'marts.flight_facts', '2013-01-01', 1))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.split() == [parent, first]


def test_two_emitters_describe_one_materialization_identically(home: Path) -> None:
    """Independently built emitters give the same event but for its time; another attempt, another run."""
    LineageEmitter().asset_completed(asset_run(), INPUTS, output())
    LineageEmitter().asset_completed(asset_run(), INPUTS, output())
    LineageEmitter().asset_completed(asset_run(attempt=2), INPUTS, output())
    first, second, retried = read_jsonl(events_file(home))
    timeless = [{k: v for k, v in e.items() if k != "eventTime"} for e in (first, second, retried)]
    assert timeless[0] == timeless[1]
    assert retried["run"]["runId"] != first["run"]["runId"]
    assert (retried["job"], retried["outputs"]) == (first["job"], first["outputs"])


def test_same_materialization_emitted_twice_has_the_same_run_id(home: Path) -> None:
    emitter = LineageEmitter()
    emitter.asset_started(asset_run(), INPUTS)
    emitter.asset_started(asset_run(), INPUTS)
    emitter.asset_started(asset_run(attempt=2), INPUTS)
    ids = [e["run"]["runId"] for e in read_jsonl(events_file(home))]
    assert ids[0] == ids[1] != ids[2]


def _start_from_a_step(_: int) -> None:
    LineageEmitter().run_started("multi-step-run", "daily_flights")


def test_run_started_is_emitted_once_across_step_processes(home: Path) -> None:
    # spawned, not forked: this process has threads (lineage and alert senders, DuckDB's) whose locks a fork
    # could copy held, leaving a child to wait forever
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        pool.map(_start_from_a_step, range(8))
    emitter = LineageEmitter()
    emitter.run_finished("multi-step-run", "daily_flights", "COMPLETE")
    emitter.run_finished("multi-step-run", "daily_flights", "COMPLETE")
    types = [e["eventType"] for e in read_jsonl(events_file(home))]
    assert types == ["START", "COMPLETE"]


def test_namespace_and_warehouse_come_from_settings(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVLINE_LINEAGE_NAMESPACE", "acme-data")
    monkeypatch.setenv("PROVLINE_WAREHOUSE_NAME", "prod")
    LineageEmitter().asset_started(asset_run(), INPUTS)
    (event,) = read_jsonl(get_settings().lineage_dir / "events.jsonl")
    assert event["job"]["namespace"] == "acme-data"
    assert event["inputs"][0]["namespace"] == "duckdb://prod"


def test_emitter_never_raises_on_a_broken_config(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "no.such.Transport")
    emitter = LineageEmitter()
    emitter.asset_started(asset_run(), INPUTS)  # queued until the config is fixed
    assert len(list((home / "outbox" / "default").glob("*.json"))) == 1


def test_remote_url_credentials_are_stripped() -> None:
    assert strip_credentials("https://bot:ghp_secret@github.com/acme/provline.git") == (
        "https://github.com/acme/provline.git"
    )
    assert strip_credentials("git@github.com:acme/provline.git") == "git@github.com:acme/provline.git"
