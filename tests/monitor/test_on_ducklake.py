"""The monitors on the production backend: DuckLake with its catalog in a real PostgreSQL server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.backends.conftest import Lake, lake, postgres_server  # noqa: F401 - the backends' fixtures
from tests.conftest import REPO

from .conftest import flights_source
from .test_anomaly import CUT, DAYS, run_raw_flights, volume_anomalous, volume_evaluations


@pytest.mark.slow
def test_a_cut_day_is_flagged_and_shown_in_health_on_ducklake(lake: Lake, tmp_path: Path,  # noqa: F811
                                                              monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PROVLINE_SOURCE_DIR", str(flights_source(tmp_path / "sources", DAYS, keep={CUT: 0.1})))
    result = run_raw_flights(DAYS[0], DAYS[-1])
    assert result.success
    evaluation = volume_evaluations(result)[CUT]
    assert not evaluation.passed and volume_anomalous(evaluation)
    assert (evaluation.metadata["expected_low"].value, evaluation.metadata["expected_high"].value) == \
        (pytest.approx(783.45), pytest.approx(957.55))  # as on the DuckDB file
    health = json.loads(subprocess.run([sys.executable, "-m", "pipelines.cli", "health", "--json"], cwd=REPO,
                                       env=os.environ.copy(), capture_output=True, text=True, check=True).stdout)
    flights = next(a for a in health["assets"] if a["asset"] == "raw.flights")
    assert flights["latest_partition"] == CUT
    assert [(a["partition"], a["check"]) for a in flights["open_anomalies"]] == [(CUT, "anomaly_mean"),
                                                                                (CUT, "anomaly_volume")]
