"""OpenLineage from real Dagster runs: every event spec-valid, complete pairs, parents, inputs with
versions, column lineage from the marts' SQL, and delivery when the HTTP backend fails or hangs."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from lineage_support import Backend, read_jsonl, validate

from pipelines.lineage import naming, replay
from pipelines.settings import get_settings

DAY = "2013-01-15"
pytestmark = pytest.mark.filterwarnings("ignore")


def _run_day() -> list[dg.ExecuteInProcessResult]:
    from pipelines.lineage.sensors import finish_run
    from tests.conftest import materialize

    results = []
    for group, partition in (("reference", None), ("flights", DAY)):
        result = materialize(group, partition)
        finish_run(result.dagster_run)
        results.append(result)
    return results


def _versions(home: Path) -> dict[str, tuple[str, int]]:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT asset, content_hash, row_count FROM provline.version_log").fetchall()
    return {asset: (content_hash, row_count) for asset, content_hash, row_count in rows}


@pytest.fixture(scope="module")
def day_events(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("lineage_day") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROVLINE_HOME", str(home))
        for key in ("OPENLINEAGE__TRANSPORT__TYPE", "OPENLINEAGE_URL", "PROVLINE_SOURCE_DIR"):
            mp.delenv(key, raising=False)
        results = _run_day()
        assert all(r.success for r in results)
        yield home, results, read_jsonl(home / "lineage" / "events.jsonl")


def test_every_event_is_spec_valid(day_events):
    home, _, events = day_events
    assert len(events) == 2 * 13 + 2 * 2  # 13 assets and 2 Dagster runs, START + COMPLETE each
    validate(home / "lineage" / "events.jsonl")


def test_start_and_one_terminal_per_run_with_parents(day_events):
    _, results, events = day_events
    by_run = defaultdict(list)
    for event in events:
        by_run[event["run"]["runId"]].append(event["eventType"])
    assert all(types == ["START", "COMPLETE"] for types in by_run.values()), by_run
    dagster_runs = {naming.dagster_run_id(r.run_id) for r in results}
    assets = [e for e in events if e["job"]["name"].count(".") == 1 and e["eventType"] == "START"]
    assert len(assets) == 13
    for event in assets:
        parent = event["run"]["facets"]["parent"]
        assert parent["run"]["runId"] in dagster_runs
        assert parent["root"]["run"]["runId"] == parent["run"]["runId"]
    named = {"materialize:group:reference", "materialize:group:flights"}  # what each run materialized
    assert {e["run"]["runId"] for e in events if e["job"]["name"] in named} == dagster_runs


def test_inputs_carry_the_versions_read(day_events):
    home, _, events = day_events
    versions = _versions(home)
    completes = {e["job"]["name"]: e for e in events if e["eventType"] == "COMPLETE"}
    for name, event in completes.items():
        if not name.startswith(("staging.", "marts.")):
            continue
        assert event["inputs"], f"{name} has no inputs"
        for dataset in event["inputs"]:
            assert dataset["facets"]["version"]["datasetVersion"] == versions[dataset["name"]][0]
        output = event["outputs"][0]
        assert output["facets"]["version"]["datasetVersion"] == versions[name][0]
        assert output["outputFacets"]["outputStatistics"]["rowCount"] == versions[name][1]
    raw = completes["raw.flights"]["inputs"]
    assert raw[0]["namespace"] == "file" and raw[0]["name"].endswith("flights.csv.zip")


def test_marts_column_lineage_names_the_source_columns(day_events):
    _, _, events = day_events
    completes = {e["job"]["name"]: e for e in events if e["eventType"] == "COMPLETE"}

    def sources(table: str, column: str) -> set[tuple[str, str]]:
        fields = completes[table]["outputs"][0]["facets"]["columnLineage"]["fields"]
        return {(f["name"], f["field"]) for f in fields[column]["inputFields"]}

    assert sources("marts.flight_facts", "airline_name") == {("staging.airlines", "name")}
    assert sources("marts.flight_facts", "plane_year") == {("staging.planes", "year")}
    assert sources("marts.flight_facts", "dest_name") == {("staging.airports", "name")}
    assert ("staging.weather", "temp") in sources("marts.flight_facts", "temp")
    assert sources("marts.carrier_daily_performance", "mean_arr_delay") == {("marts.flight_facts", "arr_delay")}
    assert ("marts.flight_facts", "arr_delay") in sources("marts.carrier_daily_performance", "on_time_rate")
    assert ("raw.flights", "dep_time") in sources("staging.flights", "cancelled")
    facts = completes["marts.flight_facts"]
    assert "SELECT" in facts["job"]["facets"]["sql"]["query"]
    assert facts["job"]["facets"]["jobType"] == {**facts["job"]["facets"]["jobType"], "integration": "DAGSTER",
                                                 "processingType": "BATCH", "jobType": "ASSET"}
    assertions = facts["outputs"][0]["facets"]["dataQualityAssertions"]["assertions"]
    coverage = next(a for a in assertions if a["assertion"] == "weather_coverage")
    assert coverage["severity"] == "warn"


def test_join_keys_and_filters_are_indirect_column_lineage(day_events):
    _, _, events = day_events
    completes = {e["job"]["name"]: e for e in events if e["eventType"] == "COMPLETE"}

    def indirect(table: str) -> set[tuple[str, str, str]]:
        facet = completes[table]["outputs"][0]["facets"]["columnLineage"]
        return {(f["name"], f["field"], t["subtype"]) for f in facet["dataset"] for t in f["transformations"]
                if t["type"] == "INDIRECT"}

    facts = indirect("marts.flight_facts")
    for table, column in [("staging.planes", "tailnum"), ("staging.airlines", "carrier"), ("staging.airports", "faa"),
                          ("staging.weather", "origin"), ("staging.weather", "time_hour")]:
        assert (table, column, "JOIN") in facts
    assert ("staging.flights", "flight_date", "FILTER") in facts
    assert {("marts.flight_facts", "carrier", "GROUP_BY"), ("marts.flight_facts", "flight_date", "GROUP_BY"),
            ("marts.flight_facts", "flight_date", "FILTER")} <= indirect("marts.carrier_daily_performance")
    fields = completes["marts.carrier_daily_performance"]["outputs"][0]["facets"]["columnLineage"]["fields"]
    (mean,) = fields["mean_arr_delay"]["inputFields"]
    assert mean["transformations"] == [{"type": "DIRECT", "subtype": "AGGREGATION"}]
    # pandas assets: DIRECT/TRANSFORMATION, declared or copied by name (raw.planes.tailnum -> staging.planes.tailnum)
    planes = completes["staging.planes"]["outputs"][0]["facets"]["columnLineage"]["fields"]
    assert planes["tailnum"]["inputFields"] == [{"namespace": "duckdb://warehouse", "name": "raw.planes",
                                                 "field": "tailnum",
                                                 "transformations": [{"type": "DIRECT", "subtype": "TRANSFORMATION"}]}]


@pytest.mark.slow
def test_http_backend_failing_then_replayed_exactly_once(http_env: Backend, home: Path):
    http_env.mode = "error"
    assert all(r.success for r in _run_day())  # emission never fails an asset
    outbox = list((home / "outbox").rglob("*.json"))
    assert len(outbox) == 30 and http_env.accepted == []
    http_env.mode = "ok"
    result = replay(get_settings())
    assert (result.sent, result.remaining) == (30, 0)
    keys = Counter((e["run"]["runId"], e["eventType"], e["eventTime"]) for e in http_env.accepted)
    assert len(keys) == 30 and max(keys.values()) == 1
    assert replay(get_settings()).sent == 0  # nothing left to resend


def test_hanging_backend_stalls_each_step_a_bounded_time(http_env: Backend, home: Path):
    from tests.conftest import materialize

    http_env.mode = "hang"
    started = time.monotonic()
    result = materialize("reference")
    elapsed = time.monotonic() - started
    assert result.success
    queued = [json.loads(p.read_text()) for p in (home / "outbox").rglob("*.json")]
    assert len(queued) == 2 * 6 + 1  # 6 assets START+COMPLETE, the run START (its end is not emitted here)
    # 13 events behind a backend that never answers: at most PROVLINE_LINEAGE_TIMEOUT_S each (emission now
    # only writes the outbox), plus 10 s for the run itself (~4 s on 2 busy cores)
    assert elapsed < get_settings().lineage_timeout_s * len(queued) + 10
