"""The Dagster instance of deploy/dagster.yaml on a real PostgreSQL server: runs land in its run storage (also
through PgBouncer, as deploy/README.md recommends), its daemon launches sensor runs through the queue, and run
monitoring fails a killed run, whose terminal OpenLineage event the provline lineage sensors then emit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipelines.lineage.naming import dagster_run_id
from tests.conftest import REPO, materialize
from tests.test_ranges import range_tags

from .conftest import Lake, require_pgbouncer
from .pgcluster import PgCluster, pgbouncer

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture
def dagster_home(postgres_server: PgCluster, lake: Lake, tmp_path: Path, monkeypatch) -> Iterator[Path]:
    """DAGSTER_HOME holding deploy/dagster.yaml (polling every second for the tests) on its own database."""
    database = "dagster_" + uuid.uuid4().hex[:8]
    postgres_server.create_database(database, owner="provline")
    config = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    config["run_monitoring"]["poll_interval_seconds"] = 1
    config["run_coordinator"]["config"]["dequeue_interval_seconds"] = 1
    home = tmp_path / "dagster-home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    env = {"DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(postgres_server.port),
           "DAGSTER_PG_DB": database, "DAGSTER_PG_USER": "provline", "DAGSTER_PG_PASSWORD": ""}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield home


def runs(pg: PgCluster, database: str) -> list[tuple[str, str]]:
    return [tuple(line.split("|")) for line in pg.psql(
        "SELECT run_id, status FROM runs ORDER BY create_timestamp", db=database).split()]


def test_dagsters_documented_postgres_db_config_without_a_scheme_works(postgres_server: PgCluster, home: Path,
                                                                      tmp_path: Path):
    """Dagster's docs configure `postgres_db` without `scheme`: SQLAlchemy then picks its default PostgreSQL driver,
    which must be the one dagster-postgres is written for (psycopg2; pyproject.toml pins SQLAlchemy 2.0)."""
    database = "dagster_" + uuid.uuid4().hex[:8]
    postgres_server.create_database(database, owner="provline")
    (tmp_path / "dagster.yaml").write_text(
        "storage:\n  postgres:\n    postgres_db:\n      username: provline\n      password: ''\n"
        f"      hostname: 127.0.0.1\n      db_name: {database}\n      port: {postgres_server.port}\n")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        result = materialize("reference", instance=instance)
    assert result.success
    assert runs(postgres_server, database) == [(result.run_id, "SUCCESS")]


@pytest.mark.slow
def test_a_run_lands_in_the_postgres_run_storage(dagster_home: Path, postgres_server: PgCluster):
    with dg.DagsterInstance.get() as instance:
        result = materialize("reference", instance=instance)
    assert result.success
    database = os.environ["DAGSTER_PG_DB"]
    assert (result.run_id, "SUCCESS") in runs(postgres_server, database)
    materialized = postgres_server.psql(
        f"SELECT count(*) FROM event_logs WHERE run_id = '{result.run_id}' "
        "AND dagster_event_type = 'ASSET_MATERIALIZATION'", db=database)
    assert int(materialized) == 6  # the six unpartitioned tables, written to the DuckLake


@pytest.fixture
def through_pgbouncer(dagster_home: Path, postgres_server: PgCluster, monkeypatch) -> Iterator[int]:
    """The same instance reached through PgBouncer (session pooling), as deploy/README.md recommends; yields
    PgBouncer's port."""
    require_pgbouncer()
    with pgbouncer(postgres_server, ("provline",)) as port:
        monkeypatch.setenv("DAGSTER_PG_PORT", str(port))
        yield port


@pytest.mark.slow
def test_a_range_run_through_pgbouncer_records_each_partition_and_its_checks(
        through_pgbouncer: int, postgres_server: PgCluster):
    days = ["2013-01-14", "2013-01-15", "2013-01-16"]
    with dg.DagsterInstance.get() as instance:
        assert materialize("reference", instance=instance).success
        result = materialize("flights", instance=instance, tags=range_tags(days[0], days[-1]))
        assert result.success
        materialized = instance.get_materialized_partitions(dg.AssetKey(["marts", "flight_facts"]))
    assert materialized == set(days)
    database = os.environ["DAGSTER_PG_DB"]
    rows = postgres_server.psql(  # straight from PostgreSQL: what the bouncer passed on was stored
        "SELECT partition, execution_status FROM asset_check_executions "
        "WHERE asset_key = '[\"marts\", \"flight_facts\"]' AND check_name = 'contract' ORDER BY partition",
        db=database).split()
    assert rows == [f"{day}|SUCCEEDED" for day in days]


def lineage_events(home: Path) -> list[dict]:
    path = home / "lineage" / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(what: str, check, timeout: float, daemon: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        assert daemon.poll() is None, f"the daemon exited while waiting for {what}"
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


KILLED_RUN = textwrap.dedent("""
    import os, signal
    import dagster as dg
    from pipelines.definitions import defs
    from pipelines.warehouse import base

    def insert_rows(con, target, columns, rows):  # the process dies inside its first write
        os.kill(os.getpid(), signal.SIGKILL)

    base.insert_rows = insert_rows
    with dg.DagsterInstance.get() as instance:
        dg.materialize(list(defs.assets), selection=dg.AssetSelection.groups("reference"), instance=instance,
                       resources=defs.resources, tags={"dagster/max_runtime_seconds": "3"})
""")


@pytest.mark.slow
def test_the_daemon_launches_a_sensor_run_and_a_killed_run_gets_its_terminal_lineage_event(
        dagster_home: Path, home: Path, tmp_path: Path):
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": {
        "module_name": "tests.backends.daemon_defs", "working_directory": str(REPO)}}]}))
    daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
                              cwd=REPO, env=os.environ.copy(), start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "daemon.log", "w"))  # noqa: SIM115
    try:
        with dg.DagsterInstance.get() as instance:
            def sensor_run():
                found = instance.get_runs(dg.RunsFilter(tags={"dagster/sensor_name": "reference_once"}))
                return found[0] if found and found[0].status == dg.DagsterRunStatus.SUCCESS else None

            launched = wait_for("the sensor's run to succeed", sensor_run, 240, daemon)
            assert launched.job_name == "reference_tables"

            def terminal(run_id: str, state: str):
                return lambda: [e for e in lineage_events(home)
                                if e["run"]["runId"] == dagster_run_id(run_id) and e["eventType"] == state]

            wait_for("COMPLETE of the sensor's run", terminal(launched.run_id, "COMPLETE"), 90, daemon)

            killed = subprocess.run([sys.executable, "-c", KILLED_RUN], cwd=REPO, env=os.environ.copy(),
                                    capture_output=True, text=True)
            assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
            (run,) = [r for r in instance.get_runs() if r.job_name == "__ephemeral_asset_job__"]
            assert run.status == dg.DagsterRunStatus.STARTED  # nobody saw it die
            failed = wait_for("run monitoring to fail the killed run", lambda: instance.get_run_by_id(
                run.run_id).status == dg.DagsterRunStatus.FAILURE, 90, daemon)
            assert failed
            (event,) = wait_for("FAIL of the killed run", terminal(run.run_id, "FAIL"), 90, daemon)
            assert event["run"]["facets"]["errorMessage"]["message"]  # why, as Dagster put it
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
