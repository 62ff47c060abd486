"""A backfill launched the way the Dagster UI launches it: one run for a contiguous range of days."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus
from dagster_graphql.test.utils import define_out_of_process_context, execute_dagster_graphql

from pipelines.definitions import catalog

from .conftest import REPO, materialize, query

pytestmark = pytest.mark.slow
DAYS = ["2013-03-04", "2013-03-05", "2013-03-06"]
# the mutation the UI's "Materialize selected" -> "Backfill" dialog sends
LAUNCH = """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""


def test_a_ui_backfill_of_a_range_is_one_run_with_per_partition_versions(home: Path, tmp_path: Path, monkeypatch):
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    assert materialize("reference").success
    instance = dg.DagsterInstance.get()
    flights = [spec for spec in catalog if spec.group == "flights"]
    with define_out_of_process_context(str(REPO / "workspace.yaml"), None, instance) as context:
        result = execute_dagster_graphql(context, LAUNCH, {"p": {
            "assetSelection": [{"path": spec.key.path} for spec in flights], "partitionNames": DAYS}})
    backfill_id = result.data["launchPartitionBackfill"]["backfillId"]
    daemon_bin = str(Path(sys.executable).with_name("dagster-daemon"))  # this venv's, activated or not
    daemon = subprocess.Popen([daemon_bin, "run", "-w", "workspace.yaml"], cwd=REPO, env=os.environ.copy(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while instance.get_backfill(backfill_id).status == BulkActionStatus.REQUESTED:
            assert time.monotonic() < deadline, "the backfill did not finish in 10 minutes"
            time.sleep(2)
    finally:
        daemon.send_signal(signal.SIGINT)  # the daemon stops its threads on an interrupt
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    assert instance.get_backfill(backfill_id).status == BulkActionStatus.COMPLETED_SUCCESS
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
    assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS
    assert (runs[0].tags["dagster/asset_partition_range_start"], runs[0].tags["dagster/asset_partition_range_end"]) \
        == (DAYS[0], DAYS[-1])
    written = query(home, "SELECT asset, list_sort(list(partition)) FROM provline.version_log WHERE partition <> '' "
                          "GROUP BY asset")
    assert dict(written) == {spec.table: DAYS for spec in flights}
    for spec in flights:
        assert instance.get_materialized_partitions(spec.key) == set(DAYS)
