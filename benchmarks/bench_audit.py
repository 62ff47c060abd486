"""Benchmark of issue 5: lineage store ingest and an upstream query at 100k events.

A deterministic generator writes events shaped like provline's own (seeded; same bytes every run): per
day, the Dagster run (START/COMPLETE) and 13 assets (5 raw, 5 staging, 3 marts; reference tables
re-run daily for simplicity), each with START and COMPLETE; COMPLETE carries input datasetVersions,
schema (with descriptions), datasetVersion, outputStatistics, columnLineage, dataQualityAssertions
(with severity; some warn failures) and dataQualityMetrics, the run's parent/tags/nominalTime facets
and the job's jobType/sql facets. 28 events a day; 100k events = 3,572 days.

Timed (median of --repeat runs, each into a fresh store):
  ingest structural   `LineageStore(validate="structural").ingest_file` of the whole file
  ingest full         the same with the official-schema check (jsonschema), on --full-sample events
                      (it is per event in Python; the figure is extrapolated to 100k)
  upstream            `queries.upstream` of marts.carrier_daily_performance, the latest version, full depth,
                      and the same `--as-of` the middle of the history

    python benchmarks/bench_audit.py --events 100000 --repeat 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipelines.audit import queries  # noqa: E402
from pipelines.audit.schema import official_schema  # noqa: E402
from pipelines.audit.store import LineageStore  # noqa: E402

PRODUCER = "https://github.com/provline/provline/tree/0.1.0"
FACETS = "https://openlineage.io/spec/facets"
NS, JOB_NS = "duckdb://warehouse", "provline"
RUN_NS = uuid.UUID("8b4c0c52-7f4e-4d43-9a43-7c1a5e0b8c11")
# table -> (inputs, number of columns); sources read a file
ASSETS = {
    "raw.airlines": (["file:airlines.csv"], 2), "raw.airports": (["file:airports.csv"], 8),
    "raw.planes": (["file:planes.csv"], 9), "raw.flights": (["file:flights.csv"], 19),
    "raw.weather": (["file:weather.csv"], 15),
    "staging.airlines": (["raw.airlines"], 2), "staging.airports": (["raw.airports"], 8),
    "staging.planes": (["raw.planes"], 9), "staging.flights": (["raw.flights"], 20),
    "staging.weather": (["raw.weather"], 14),
    "marts.flight_facts": (["staging.flights", "staging.weather", "staging.airlines", "staging.planes",
                            "staging.airports"], 26),
    "marts.carrier_daily_performance": (["marts.flight_facts"], 8),
    "marts.route_daily": (["marts.flight_facts"], 9),
}


def _facet(name: str, version: str, **body) -> dict:
    return {"_producer": PRODUCER, "_schemaURL": f"{FACETS}/{version}/{name}.json#/$defs/{name}", **body}


def _hash(*parts) -> str:
    return hashlib.md5("|".join(map(str, parts)).encode()).hexdigest()


def generate(path: Path, n_events: int, seed: int = 5) -> int:
    rng = random.Random(seed)
    start = datetime(2013, 1, 1, 6, tzinfo=UTC)
    written = 0
    latest: dict[str, str] = {}
    with open(path, "w") as out:
        day = 0
        while written < n_events:
            when = start + timedelta(days=day)
            partition = (date(2013, 1, 1) + timedelta(days=day)).isoformat()
            dagster_run = str(uuid.uuid5(RUN_NS, f"dagster/{day}"))
            parent_id = str(uuid.uuid5(RUN_NS, f"parent/{day}"))
            t = when
            events = []

            def event(kind, run, job, inputs=(), outputs=(), job_facets=None, t_=None):
                return {"eventTime": t_.isoformat(), "eventType": kind, "producer": PRODUCER,
                        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
                        "run": run, "job": {"namespace": JOB_NS, "name": job, "facets": job_facets or {}},
                        "inputs": list(inputs), "outputs": list(outputs)}

            events.append(event("START", {"runId": parent_id, "facets": {}}, "flights_daily", t_=t))
            for table, (inputs, n_cols) in ASSETS.items():
                run_id = str(uuid.uuid5(RUN_NS, f"{dagster_run}/{table}"))
                code = _hash("code", table)[:16]
                run = {"runId": run_id, "facets": {
                    "parent": _facet("ParentRunFacet", "1-2-0",
                                     run={"runId": parent_id}, job={"namespace": JOB_NS, "name": "flights_daily"},
                                     root={"run": {"runId": parent_id},
                                           "job": {"namespace": JOB_NS, "name": "flights_daily"}}),
                    "nominalTime": _facet("NominalTimeRunFacet", "1-0-1", nominalStartTime=when.isoformat()),
                    "tags": _facet("TagsRunFacet", "1-0-0", tags=[
                        {"key": "dagster_run_id", "value": dagster_run, "source": "DAGSTER"},
                        {"key": "partition", "value": partition, "source": "DAGSTER"},
                        {"key": "attempt", "value": "1", "source": "DAGSTER"},
                        {"key": "code_version", "value": code, "source": "DAGSTER"}]),
                }}
                job_facets = {"jobType": _facet("JobTypeJobFacet", "2-0-4", processingType="BATCH",
                                                integration="DAGSTER", jobType="ASSET")}
                if table.startswith("marts."):
                    job_facets["sql"] = _facet("SQLJobFacet", "1-1-0", dialect="duckdb",
                                               query=f"SELECT * FROM {inputs[0]} WHERE flight_date = $partition_date")
                ins = []
                for name in inputs:
                    if name.startswith("file:"):
                        ins.append({"namespace": "file", "name": f"/data/{name[5:]}", "facets": {}})
                    else:
                        ins.append({"namespace": NS, "name": name, "facets": {
                            "version": _facet("DatasetVersionDatasetFacet", "1-0-1", datasetVersion=latest[name])}})
                t += timedelta(seconds=1)
                events.append(event("START", run, table, ins, [{"namespace": NS, "name": table}], job_facets, t))
                columns = [f"col_{i}" for i in range(n_cols)]
                version = _hash(table, partition, rng.random())
                latest[table] = version
                rows = rng.randint(10, 1000)
                src = [i for i in inputs if not i.startswith("file:")]
                facets = {
                    "schema": _facet("SchemaDatasetFacet", "1-2-0", fields=[
                        {"name": c, "type": "VARCHAR", "description": f"The {c} of each row, as delivered."}
                        for c in columns]),
                    "version": _facet("DatasetVersionDatasetFacet", "1-0-1", datasetVersion=version),
                    "dataQualityAssertions": _facet("DataQualityAssertionsDatasetFacet", "1-1-0", assertions=[
                        {"assertion": f"{c}_not_null", "name": f"{c}_not_null", "column": c,
                         "success": not (i == 1 and rng.random() < 0.1), "severity": "warn" if i == 1 else "error",
                         "expected": f"{c} is never null.", "actual": f"0 of {rows} rows fail"}
                        for i, c in enumerate(columns)]),
                    "dataQualityMetrics": _facet(
                        "DataQualityMetricsDatasetFacet", "1-0-2", rowCount=rows,
                        columnMetrics={c: {"nullCount": 0, "distinctCount": rng.randint(1, rows)} for c in columns}),
                }
                if src:
                    facets["columnLineage"] = _facet("ColumnLineageDatasetFacet", "1-2-0", fields={
                        c: {"inputFields": [{"namespace": NS, "name": src[i % len(src)], "field": c}]}
                        for i, c in enumerate(columns)})
                output = {"namespace": NS, "name": table, "facets": facets, "outputFacets": {
                    "outputStatistics": _facet("OutputStatisticsOutputDatasetFacet", "1-0-2", rowCount=rows,
                                               size=rows * 100)}}
                t += timedelta(seconds=1)
                events.append(event("COMPLETE", run, table, ins, [output], job_facets, t))
            t += timedelta(seconds=1)
            events.append(event("COMPLETE", {"runId": parent_id, "facets": {}}, "flights_daily", t_=t))
            for e in events[: n_events - written]:
                out.write(json.dumps(e) + "\n")
            written += min(len(events), n_events - written)
            day += 1
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--full-sample", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        tmp = Path(tmp)
        log = tmp / "events.jsonl"
        n = generate(log, args.events)
        size_mb = log.stat().st_size / 1e6
        print(f"generated {n} events, {size_mb:.0f} MB ({log.stat().st_size / n / 1000:.1f} kB/event)")
        ingest = []
        for i in range(args.repeat):
            store = LineageStore(path=tmp / f"store{i}.duckdb", validate="structural")
            t0 = time.perf_counter()
            result = store.ingest_file(log)
            ingest.append(time.perf_counter() - t0)
            assert result.added == n, result
        print(f"ingest {n} events (structural check): median {statistics.median(ingest):.2f} s  "
              f"({', '.join(f'{s:.2f}' for s in ingest)})")
        again = time.perf_counter()
        assert store.ingest_file(log).read == 0
        print(f"re-ingest (nothing new): {time.perf_counter() - again:.3f} s")
        full_per_event = None
        if official_schema() is not None:
            sample = tmp / "sample.jsonl"
            sample.write_text("".join(log.open().readline() for _ in range(args.full_sample)))
            official_schema()  # compile the schemas outside the timing
            full = LineageStore(path=tmp / "full.duckdb", validate="full")
            t0 = time.perf_counter()
            full.ingest_file(sample)
            full_per_event = (time.perf_counter() - t0) / args.full_sample
            print(f"ingest with the official-schema check: {full_per_event * 1e3:.2f} ms/event "
                  f"(-> {full_per_event * n:.0f} s for {n})")
        with store.connect() as con:
            history = queries.versions(con, "marts.carrier_daily_performance")
            middle = queries.parse_time(history[len(history) // 2]["event_time"])
            for label, as_of in (("latest", None), ("as of the middle", middle)):
                times = []
                for _ in range(max(args.repeat, 5)):
                    t0 = time.perf_counter()
                    tree = queries.upstream(con, "marts.carrier_daily_performance", as_of=as_of)
                    times.append(time.perf_counter() - t0)
                nodes = _count(tree)
                print(f"upstream marts.carrier_daily_performance ({label}, {nodes} nodes): "
                      f"median {statistics.median(times) * 1e3:.0f} ms")
    return 0


def _count(node: dict) -> int:
    return 1 + sum(_count(child) for child in node.get("inputs", []))


if __name__ == "__main__":
    sys.exit(main())
